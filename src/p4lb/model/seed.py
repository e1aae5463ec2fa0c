"""The seed's ingress (basic16.p4 + cmd.txt), modelled faithfully: widths, check order and its quirks included.

Reading of the seed: the parser resets meta myselect=0, max=4, server1..4=0 on every packet; `forward` runs
read_flowlet_select for the VIP; `set_max` (hit for the VIP) resets the myselect register whenever the max
differs from the mymax register; a SYN (`flags & 2`) runs set_ecmp_select (3-bit myselect+1, wraps 7->0)
then resets myselect when it equals max; then set_status1..4 are applied *one after another*, each block
seeing only the failed bits of the tables applied before it; `_drop()` only sets egress_spec, which
ecmp_nhop overwrites for selectors 1..4; selectors 0,5,6,7 hit no ecmp_nhop entry, so egress_spec stays 0
and BMv2 sends the packet to port 0, where nothing is attached: the packet is silently lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from p4lb.model.config import SEED_BACKENDS, LbConfig
from p4lb.model.crc import flow_index
from p4lb.model.errors import PlanError
from p4lb.model.ops import Target, Write
from p4lb.model.packet import SYN, DropReason, Fate, Outcome, Packet, dropped, to_backend
from p4lb.model.pool import Pool

SEED_INDEX_BITS = 13  # flowlet_select has 8192 cells, indexed by crc16 % 8192
WIDTH = 3  # myselect, max, flowlet_select are bit<3>
TCP = 6

# For block k (server k failed and chosen), the seed's fallbacks in order: (server to test, myselect, flowlet_select)
FALLBACKS = {
    1: ((2, 2, 2), (3, 3, 3), (4, 0, 4)),
    2: ((3, 3, 3), (4, 0, 4), (1, 1, 1)),
    3: ((4, 0, 4), (1, 1, 1), (2, 2, 2)),
    4: ((1, 1, 1), (2, 2, 2), (3, 3, 3)),
}


@dataclass(frozen=True)
class SeedState:
    """Registers and the control-plane parameters the seed's ingress reads."""

    flowlet_select: dict[int, int] = field(default_factory=dict)  # register<bit<3>>(8192)
    myselect: int = 0  # register<bit<3>>(1)
    mymax: int = 0  # register<bit<3>>(1)
    set_max: int = SEED_BACKENDS  # _max(max) parameter of the set_max entry for the VIP
    set_status: tuple[int, int, int, int] = (0, 0, 0, 0)  # _failK(fail) parameters of set_status1..4

    def record(self, key_index: int) -> int:
        """What decides a flow's non-SYN packets: its flowlet_select cell."""
        return self.flowlet_select.get(key_index, 0)


def seed_index(cfg: LbConfig, pkt: Packet) -> int:
    """crc16 of the 5-tuple into the 13-bit flowlet_select index."""
    return flow_index(pkt.src_ip, cfg.vip, TCP, pkt.src_port, cfg.vip_port, SEED_INDEX_BITS)


@dataclass
class _Meta:
    """The per-packet metadata the seed's parser initialises."""

    myselect: int = 0
    max: int = SEED_BACKENDS
    flowlet: int = 0
    server: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0])
    dropped: bool = False


def seed_packet(cfg: LbConfig, st: SeedState, pkt: Packet) -> tuple[SeedState, Outcome]:
    """One TCP packet to the VIP through the seed's ingress."""
    idx = seed_index(cfg, pkt)
    regs = st.flowlet_select
    myselect_reg, mymax_reg = st.myselect, st.mymax
    m = _Meta()
    m.flowlet = regs.get(idx, 0)  # forward: read_flowlet_select
    m.max = st.set_max  # set_max hit
    if mymax_reg != m.max:
        m.myselect = 0
        myselect_reg = 0
        mymax_reg = m.max
    syn = pkt.flags & SYN != 0
    if syn:  # ecmp_group: set_ecmp_select
        m.myselect = (myselect_reg + 1) % (1 << WIDTH)
        m.flowlet = m.myselect
        myselect_reg = m.myselect
        regs = regs | {idx: m.flowlet}
        if m.myselect == m.max:
            m.myselect = 0
            myselect_reg = 0
    for k in range(1, 5):
        m.server[k] = st.set_status[k - 1]  # set_statusK applied: only now is server k's bit known
        if syn and m.server[k] == 1 and m.flowlet == k:
            m.flowlet = regs.get(idx, 0)
            m.myselect = myselect_reg
            for other, sel, flowlet in FALLBACKS[k]:
                if m.server[other] != 1:
                    m.myselect, m.flowlet = sel, flowlet
                    myselect_reg = sel
                    regs = regs | {idx: flowlet}
                    break
            else:
                m.dropped = True  # mark_to_drop: egress_spec = 511, overwritten below for selectors 1..4
    new = replace(st, flowlet_select=regs, myselect=myselect_reg, mymax=mymax_reg)
    if 1 <= m.flowlet <= SEED_BACKENDS:  # ecmp_nhop entries 1..4 set egress_spec
        return new, to_backend(m.flowlet)
    if m.dropped:
        return new, dropped(DropReason.UNCOUNTED)
    return new, Outcome(Fate.LOST, m.flowlet)


def seed_plan(st: SeedState, before: Pool, after: Pool) -> list[Write]:
    """The seed controller's writes: one table_modify per changed parameter (cmd.txt / check_server.sh)."""
    writes: list[Write] = []
    k = len(after.active)
    if after.active != frozenset(range(1, k + 1)):
        raise PlanError(f"the seed can only make backends 1..max active, not {sorted(after.active)}")
    if after.draining:
        raise PlanError("the seed has no drain")
    if k != st.set_max:
        writes.append(Write(Target.SET_MAX, (), k))
    for b in range(1, SEED_BACKENDS + 1):
        fail = 0 if b in after.healthy else 1
        if fail != st.set_status[b - 1]:
            writes.append(Write(Target(f"set_status{b}"), (), fail))
    return writes


def seed_write(st: SeedState, w: Write) -> SeedState:
    """Apply one control-plane write."""
    if w.target == "set_max":
        return replace(st, set_max=w.value % (1 << WIDTH))
    if w.target.startswith("set_status"):
        k = int(w.target.removeprefix("set_status"))
        status = list(st.set_status)
        status[k - 1] = w.value & 1
        return replace(st, set_status=tuple(status))  # type: ignore[arg-type]
    raise PlanError(f"the seed has no table or register {w.target!r}")
