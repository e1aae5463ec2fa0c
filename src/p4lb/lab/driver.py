"""Run the model's steps (packets, operations, single writes) on BMv2 and on the executable model side by side.

A `Packet` step becomes a real TCP frame from the client; its fate is observed on the switch's ports (and, for
p4lb, the `lb_drops` counter says why a drop happened). An operation becomes exactly the writes the model plans,
written through P4Runtime in order. Each switch outcome is compared with the model's, and the frame that left the
switch with the headers the model's tables say it must carry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from p4lb.controller.p4rt import P4rt
from p4lb.lab.lab import SWITCH_MAC, Lab, Seen, mac
from p4lb.model.config import SEED_BACKENDS, LbConfig
from p4lb.model.crc import ip_str
from p4lb.model.design import Design, make_design
from p4lb.model.ops import Write
from p4lb.model.p4lb import FREE, FlowEntry, P4lbState, SlotState, flow_slot, p4lb_plan
from p4lb.model.packet import DropReason, Fate, Outcome, Packet, flow_key
from p4lb.model.pool import Pool
from p4lb.model.seed import SeedState, seed_plan
from p4lb.model.trace import OpStep, Run, Step, Trace

CLIENT_TTL = 64
GUARD_US = 80_000  # a packet is not sent within this long before its slot's expiry edge (see run_clocked)

Match = dict[str, int | tuple[int, int]]  # a table entry's match, as P4rt.upsert takes it (LPM: (value, prefix_len))


def _tcp_frame(cfg: LbConfig, pkt: Packet, eth_dst: str, ip_dst: str, ttl: int, pktlen: int) -> bytes:
    """ptf's simple_tcp_packet with the model packet's 5-tuple and flags, as bytes."""
    import ptf.testutils as tu  # noqa: PLC0415

    return bytes(
        tu.simple_tcp_packet(
            pktlen=pktlen, eth_dst=eth_dst, eth_src=mac(cfg.client_mac), ip_src=ip_str(pkt.src_ip), ip_dst=ip_dst, ip_ttl=ttl,
            tcp_sport=pkt.src_port, tcp_dport=cfg.vip_port, tcp_flags=pkt.flags, ip_id=1,
        )
    )


def tcp_frame(cfg: LbConfig, pkt: Packet, pktlen: int = 64) -> bytes:
    """The packet as the client sends it: TCP to vip:vip_port (ptf.testutils, padded to pktlen)."""
    return _tcp_frame(cfg, pkt, mac(SWITCH_MAC), ip_str(cfg.vip), CLIENT_TTL, pktlen)


def expected_frame(design: Design, pkt: Packet, backend: int, pktlen: int = 64) -> bytes:
    """The frame the model says leaves towards `backend`: MAC and address rewritten (TTL-1 in the seed), checksums right."""
    b = design.cfg.backend(backend)
    ttl = CLIENT_TTL - 1 if design.is_seed else CLIENT_TTL
    return _tcp_frame(design.cfg, pkt, mac(b.mac), ip_str(b.ip), ttl, pktlen)


@dataclass(frozen=True)
class Observed:
    """A packet's fate on the switch, and the frame that left (if any)."""

    outcome: Outcome
    frame: bytes = b""


class SwitchDriver:
    """One design on one lab: deploy, writes, packets."""

    def __init__(self, lab: Lab, design: Design) -> None:
        self.lab, self.design, self.cfg = lab, design, lab.cfg
        if design.cfg.backends != lab.cfg.backends:
            raise ValueError("the lab and the design must have the same backends")

    # ---- control plane -------------------------------------------------------------------------------------
    def deploy(self, pool: Pool) -> None:
        """Static entries, then the initial group / parameters exactly as the model deploys them."""
        if self.design.is_seed:
            install_seed(self.lab, pool)
            return
        self.lab.switch.install_backends(self.design.cfg)  # the design's idle timeout (same backends as the lab's)
        for w in p4lb_plan(self.design.variant, P4lbState(), pool):
            self.write(w)

    def write(self, w: Write) -> None:
        """One controller write, under the model's name."""
        if w.target == "noop":
            return
        if self.design.is_seed:
            seed_write_switch(self.lab, w)
        else:
            self.lab.switch.write(w)

    # ---- data plane ----------------------------------------------------------------------------------------
    def packet(self, pkt: Packet) -> Observed:
        """Send the packet and see what the switch did with it."""
        before = self._drops()
        seen = self.lab.send(tcp_frame(self.cfg, pkt))
        reason = DropReason.UNCOUNTED if seen else self._drop_reason(before)
        if not seen and reason is DropReason.UNCOUNTED:
            seen = self.lab.late()  # late on its egress port, or dropped with no counter (the seed's only kind)
        if len(seen) > 1:
            raise AssertionError(f"one packet left the switch {len(seen)} times: {[s.port for s in seen]}")
        if not seen:
            return Observed(Outcome(Fate.DROP, 0, reason))
        s: Seen = seen[0]
        b = self.lab.backend_at(s.port)
        if b == 0:
            return Observed(Outcome(Fate.LOST, 0), s.frame)
        return Observed(Outcome(Fate.BACKEND, b), s.frame)

    def _drops(self) -> dict[int, int]:
        return {} if self.design.is_seed else self.lab.rt.counter_read("lb_drops")

    def _drop_reason(self, before: dict[int, int]) -> DropReason:
        if self.design.is_seed:
            return DropReason.UNCOUNTED
        after = self._drops()
        moved = [i for i, c in after.items() if c != before.get(i, 0)]
        return DropReason(moved[0]) if len(moved) == 1 else DropReason.UNCOUNTED


def same(model: Outcome, switch: Outcome) -> bool:
    """Do the model's and the switch's outcomes agree (a lost packet's selector is not visible on the switch)?"""
    if model.fate is not switch.fate:
        return False
    if model.fate is Fate.BACKEND:
        return model.backend == switch.backend
    if model.fate is Fate.DROP:
        return model.reason == switch.reason
    return True


def frame_problems(design: Design, pkt: Packet, backend: int, frame: bytes) -> list[str]:
    """Differences between the frame that left and the model's expected frame (ptf Mask, every byte cared for)."""
    from ptf.mask import Mask  # noqa: PLC0415
    from scapy.layers.l2 import Ether  # noqa: PLC0415

    want = expected_frame(design, pkt, backend)
    if Mask(Ether(want)).pkt_match(frame):
        return []
    exp, got = expected_headers(design, pkt, backend), frame_headers(frame)
    diffs = [f"{k}: switch {got[k]!r}, expected {v!r}" for k, v in exp.items() if got[k] != v]
    diffs += [k for k in ("ip_checksum_ok", "tcp_checksum_ok") if not got[k]]
    return diffs or [f"frame differs: switch {frame.hex()}, expected {want.hex()}"]


def expected_headers(design: Design, pkt: Packet, backend: int) -> dict[str, object]:
    """The header fields the frame to `backend` must carry (the `backend` / `ecmp_nhop` action's rewrite)."""
    b = design.cfg.backend(backend)
    return {
        "dst_mac": mac(b.mac),
        "dst_ip": ip_str(b.ip),
        "src_ip": ip_str(pkt.src_ip),
        "sport": pkt.src_port,
        "dport": design.cfg.vip_port,
        "flags": pkt.flags,
        "ttl": CLIENT_TTL - 1 if design.is_seed else CLIENT_TTL,  # the seed decrements TTL, p4lb does not
    }


def frame_headers(frame: bytes) -> dict[str, object]:
    """The same fields read from a frame, plus whether both checksums are right."""
    from scapy.layers.inet import IP, TCP  # noqa: PLC0415
    from scapy.layers.l2 import Ether  # noqa: PLC0415

    e = Ether(frame)
    ip4, tcp = e[IP], e[TCP]
    fresh = Ether(bytes(e))
    del fresh[IP].chksum, fresh[TCP].chksum
    fresh = Ether(bytes(fresh))
    return {
        "dst_mac": e.dst,
        "dst_ip": ip4.dst,
        "src_ip": ip4.src,
        "sport": tcp.sport,
        "dport": tcp.dport,
        "flags": int(tcp.flags),
        "ttl": ip4.ttl,
        "ip_checksum_ok": ip4.chksum == fresh[IP].chksum,
        "tcp_checksum_ok": tcp.chksum == fresh[TCP].chksum,
    }


@dataclass
class StepCompare:
    """One step on both: the model's outcome, the switch's, and any header mismatch."""

    index: int
    step: Step
    model: Outcome | None
    switch: Outcome | None
    header_problems: list[str]
    state_problems: list[str] = field(default_factory=list)  # registers read back after the step (run_clocked)

    @property
    def agree(self) -> bool:
        """Same fate, backend or drop reason, right headers, same registers."""
        if self.state_problems:
            return False
        if self.model is None:
            return True
        return self.switch is not None and same(self.model, self.switch) and not self.header_problems


def assert_agree(cmp: list[StepCompare]) -> None:
    """Fail, listing every step where the switch did not do what the model did."""
    bad = [c for c in cmp if not c.agree]
    assert not bad, "\n".join(f"step {c.index} {c.step}: model {c.model}, switch {c.switch} {c.header_problems + c.state_problems}" for c in bad)


def run_both(lab: Lab, design: Design, pool: Pool, steps: list[Step]) -> tuple[Run, list[StepCompare]]:
    """Deploy `pool`, then run `steps` on the model and on the switch; compare every packet."""
    drv = SwitchDriver(lab, design)
    run = Run.start(design, pool)
    drv.deploy(pool)
    out = []
    for i, step in enumerate(steps):
        res = run.step(step)
        if isinstance(step, Packet):
            obs = drv.packet(step)
            problems = []
            if obs.outcome.fate is Fate.BACKEND and res.outcome is not None and res.outcome.fate is Fate.BACKEND:
                problems = frame_problems(design, step, obs.outcome.backend, obs.frame)
            out.append(StepCompare(i, step, res.outcome, obs.outcome, problems))
        else:
            for w in res.writes if isinstance(step, OpStep) else [step.write]:
                drv.write(w)
            out.append(StepCompare(i, step, None, None, []))
    return run, out


def replay_trace(lab: Lab, trace: Trace) -> tuple[Run, list[StepCompare]]:
    """A counterexample from the prover, on the switch."""
    return run_both(lab, trace.make_design(), trace.pool, trace.steps)


# ---- time: the model runs on the switch's clock ------------------------------------------------------------


@dataclass(frozen=True)
class Wait:
    """Idle time between steps: `us` microseconds of real sleep (the switch's clock runs on meanwhile)."""

    us: int


ClockedStep = Step | Wait


@dataclass(frozen=True)
class Clocked:
    """A packet as it was run: stamped with the switch's ingress time, the model's slot entry before it, and how
    long the driver waited so that it would not arrive within GUARD_US before that entry's expiry edge."""

    pkt: Packet
    before: FlowEntry
    guarded_us: int


def _edge(e: FlowEntry, timeout_us: int) -> int | None:
    """The last switch time at which the entry is still live (None for a free slot)."""
    return None if e.state == SlotState.FREE else e.last_seen + timeout_us


def _clear_edge(lab: Lab, slot: int, e: FlowEntry, timeout_us: int) -> tuple[dict[str, int], int]:
    """Read the slot (and the switch clock); if the entry's expiry edge is less than GUARD_US ahead, sleep past it."""
    regs, waited, edge = lab.read_slot(slot), 0, _edge(e, timeout_us)
    for _ in range(8):
        if edge is None or not regs["now"] <= edge < regs["now"] + GUARD_US:
            return regs, waited
        pause = edge - regs["now"] + 1_000
        time.sleep(pause / 1e6)
        waited += pause
        regs = lab.read_slot(slot)
    raise RuntimeError(f"the switch clock does not move past {edge} (now {regs['now']})")


def _stamp(run: Run, pkt: Packet, seen: Outcome, before: dict[str, int], after: dict[str, int], e: FlowEntry) -> int:
    """The packet's ingress time: the flow_last_seen it wrote, else the clock read just before it was sent. If it
    wrote nothing and its slot's expiry edge fell between the reads around it (only if it took over GUARD_US), the
    switch saw one side of the edge: the model takes the side that explains what the switch did."""
    t = after["flow_last_seen"] if after["flow_last_seen"] != before["flow_last_seen"] else before["now"]
    if not before["now"] <= t <= after["now"]:
        raise RuntimeError(f"flow_last_seen {t} outside the clock reads around the packet ({before['now']}..{after['now']})")
    edge = _edge(e, run.design.cfg.idle_timeout_us)
    if t != before["now"] or edge is None or not before["now"] <= edge < after["now"]:
        return t
    late = replace(pkt, time_us=edge + 1)
    return late.time_us if same(run.design.packet(run.state, late)[1], seen) else t


def slot_problems(run: Run, slot: int, regs: dict[str, int]) -> list[str]:
    """Differences between the model's slot entry, rr_next and idle timeout and the registers read from the switch."""
    e = run.state.flows.get(slot, FREE)
    want = {"flow_state": int(e.state), "flow_key": e.key, "flow_backend": e.backend, "flow_last_seen": e.last_seen,
            "rr_next0": run.state.rr_next[0], "rr_next1": run.state.rr_next[1], "idle_timeout": run.design.cfg.idle_timeout_us}
    return [f"{k}[{slot}]: switch {regs[k]}, model {v}" for k, v in want.items() if regs[k] != v]


def _clocked_packet(drv: SwitchDriver, run: Run, pkt: Packet, index: int) -> tuple[Clocked, StepCompare]:
    """One packet on both, the model fed the switch's ingress time; its slot's registers compared after it."""
    cfg, timeout = drv.design.cfg, drv.design.cfg.idle_timeout_us
    slot = flow_slot(cfg, pkt)
    e = run.state.flows.get(slot, FREE)
    before, waited = _clear_edge(drv.lab, slot, e, timeout)
    obs = drv.packet(pkt)
    after = drv.lab.read_slot(slot)
    timed = replace(pkt, time_us=_stamp(run, pkt, obs.outcome, before, after, e))
    res = run.step(timed)
    problems = []
    if obs.outcome.fate is Fate.BACKEND and res.outcome is not None and res.outcome.fate is Fate.BACKEND:
        problems = frame_problems(drv.design, timed, obs.outcome.backend, obs.frame)
    cmp = StepCompare(index, timed, res.outcome, obs.outcome, problems, slot_problems(run, slot, after))
    return Clocked(timed, e, waited), cmp


def run_clocked(lab: Lab, design: Design, pool: Pool, steps: list[ClockedStep], wait_budget_us: int = 2_000_000) -> tuple[Run, list[StepCompare], list[Clocked]]:
    """p4lb on both with time: every packet is stamped with the switch's ingress time (BMv2's
    ingress_global_timestamp, read through the CPU port) and the model is stepped at that time; after each packet
    its slot's registers and rr_next are compared too. `Wait`s sleep (at most wait_budget_us in all)."""
    if design.is_seed:
        raise ValueError("run_clocked is for p4lb (the seed keeps no time)")
    drv, run = SwitchDriver(lab, design), Run.start(design, pool)
    drv.deploy(pool)
    out: list[StepCompare] = []
    clocked: list[Clocked] = []
    for i, step in enumerate(steps):
        if isinstance(step, Wait):
            pause = min(step.us, wait_budget_us)
            wait_budget_us -= pause
            time.sleep(pause / 1e6)
        elif isinstance(step, Packet):
            c, cmp = _clocked_packet(drv, run, step, i)
            clocked.append(c)
            out.append(cmp)
        else:
            res = run.step(step)
            for w in res.writes if isinstance(step, OpStep) else [step.write]:
                drv.write(w)
            out.append(StepCompare(i, step, None, None, []))
    return run, out, clocked


def collision_keys(cfg: LbConfig, sizes: tuple[int, ...], clients: tuple[int, ...]) -> list[list[int]]:
    """Groups of flow keys (clients x ports from 1024) sharing a flow slot, one group of each size, each group in a
    slot of its own (crc16 of the 5-tuple, as the switch hashes it). crc16 is linear and maps one client's 16-bit
    ports one-to-one onto the slots, so a group of k keys needs k clients."""
    by_slot: dict[int, list[int]] = {}
    groups: list[list[int]] = []
    for port in range(1024, 65536):
        for src in clients:
            keys = by_slot.setdefault(flow_slot(cfg, Packet(src, port, 0)), [])
            keys.append(flow_key(src, port))
            if len(keys) == sizes[len(groups)] and all(keys[0] != g[0] for g in groups):
                groups.append(list(keys))
                if len(groups) == len(sizes):
                    return groups
    raise ValueError(f"no {sizes} colliding keys among ports 1024..65535 of {len(clients)} clients")


def p4lb_design(cfg: LbConfig) -> Design:
    """p4lb on the lab's backends."""
    return make_design("p4lb", cfg.n)


# ---- the seed's control plane (its cmd.txt and check_server.sh writes, through P4Runtime) --------------------


def install_seed(lab: Lab, pool: Pool) -> None:
    """The seed's static entries and `pool`'s writes, on the lab's switch."""
    install_seed_rt(lab.rt, lab.cfg, pool)


def seed_write_switch(lab: Lab, w: Write) -> None:
    """One of the seed controller's table_modify commands, on the lab's switch."""
    seed_write_rt(lab.rt, lab.cfg, w)


def install_seed_rt(rt: P4rt, cfg: LbConfig, pool: Pool) -> None:
    """The seed's static entries: VIP -> flowlet read and round-robin, selectors 1..4 -> servers, return path."""
    vip: Match = {"hdr.ipv4.dstAddr": (cfg.vip, 32)}
    rt.upsert("forward", vip, "read_flowlet_select")
    rt.upsert("forward", {"hdr.ipv4.dstAddr": (cfg.client_net, cfg.client_prefix)}, "set_nhop", {"dmac": cfg.client_mac, "port": cfg.client_port})
    rt.upsert("ecmp_group", vip, "set_ecmp_select")
    for b in cfg.backends[:SEED_BACKENDS]:
        rt.upsert("forward", {"hdr.ipv4.dstAddr": (b.ip, 32)}, "set_nhop", {"dmac": b.mac, "port": b.port})
        rt.upsert("ecmp_nhop", {"meta.sel.flowlet": b.id}, "set_ecmp_nhop", {"nhop_mac": b.mac, "nhop_ipv4": b.ip, "port": b.port})
    rt.upsert("send_frame", {"std.egress_port": cfg.client_port}, "rewrite_sip", {"sip": cfg.vip})
    st = SeedState()
    rt.upsert("set_max", vip, "_max", {"max": st.set_max})
    for k in range(1, SEED_BACKENDS + 1):
        rt.upsert(f"set_status{k}", vip, f"_fail{k}", {"fail": 0})
    for w in seed_plan(st, Pool.initial(SEED_BACKENDS), pool):
        seed_write_rt(rt, cfg, w)


def seed_write_rt(rt: P4rt, cfg: LbConfig, w: Write) -> None:
    """One of the seed controller's table_modify commands."""
    vip: Match = {"hdr.ipv4.dstAddr": (cfg.vip, 32)}
    if w.target == "set_max":
        rt.upsert("set_max", vip, "_max", {"max": w.value % 8})
    elif w.target.startswith("set_status"):
        k = int(w.target.removeprefix("set_status"))
        rt.upsert(w.target, vip, f"_fail{k}", {"fail": w.value & 1})
    else:
        raise ValueError(f"the seed has no table {w.target!r}")
