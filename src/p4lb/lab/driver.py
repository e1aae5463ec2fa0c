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
from p4lb.controller.switch import DROP_REASONS
from p4lb.lab.lab import SWITCH_MAC, Lab, Seen, mac
from p4lb.model.config import SEED_BACKENDS, LbConfig
from p4lb.model.crc import ip_str
from p4lb.model.design import Design
from p4lb.model.ops import Write
from p4lb.model.p4lb import FREE, FlowEntry, P4lbState, SlotState, entries_at, find, flow_places, p4lb_plan
from p4lb.model.packet import SYN, DropReason, Fate, FlagClass, Outcome, Packet, flow_key, key_packet
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
        if not design.is_seed and design.cfg.shape != lab.cfg.shape:
            raise ValueError(f"the design's flow table ({design.cfg.shape}) is not the lab's ({lab.cfg.shape}): the model would place flows where the switch does not")

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

    def packets(self, pkts: list[Packet]) -> list[Observed]:
        """Send packets of distinct flows back to back (no probe or counter read between them) and see what the
        switch did with each: its frame is known by its source address and port; the drops share the lb_drops
        increments (a reason each when all were counted for one reason, else UNCOUNTED)."""
        keys = [p.key for p in pkts]
        if len(set(keys)) != len(keys):
            raise ValueError("the packets sent back to back must be of distinct flows")
        before = self._drops()
        seen = self.lab.send_all([tcp_frame(self.cfg, p) for p in pkts])
        by_key: dict[int, list[Seen]] = {}

        def sort(frames: list[Seen]) -> list[int]:
            for f in frames:
                by_key.setdefault(flow_key(self.cfg.service, int.from_bytes(f.frame[26:30], "big"), int.from_bytes(f.frame[34:36], "big")), []).append(f)
            if set(by_key) - set(keys):
                raise AssertionError(f"frames of no packet sent left the switch: {sorted(set(by_key) - set(keys))}")
            return [k for k in keys if k not in by_key]

        dropped = sort(seen)
        after = self._drops() if dropped else before
        moved = {i: c - before.get(i, 0) for i, c in after.items() if c != before.get(i, 0)}
        if len(dropped) > sum(moved.values()):  # late on their egress ports (see Lab.late)
            dropped = sort(self.lab.late())
        reason = DropReason(next(iter(moved))) if len(moved) == 1 and sum(moved.values()) == len(dropped) else DropReason.UNCOUNTED
        out = []
        for k in keys:
            got = by_key.get(k, [])
            if len(got) > 1:
                raise AssertionError(f"one packet left the switch {len(got)} times: {[s.port for s in got]}")
            if not got:
                out.append(Observed(Outcome(Fate.DROP, 0, reason)))
                continue
            b = self.lab.backend_at(got[0].port)
            out.append(Observed(Outcome(Fate.BACKEND, b), got[0].frame) if b else Observed(Outcome(Fate.LOST, 0), got[0].frame))
        return out

    def _drops(self) -> dict[int, int]:
        """The service's lb_drops cells by reason (cells service*8 + reason)."""
        if self.design.is_seed:
            return {}
        base = self.cfg.service * DROP_REASONS
        return {i - base: c for i, c in self.lab.rt.counter_cells("lb_drops", range(base, base + DROP_REASONS)).items()}

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


@dataclass(frozen=True)
class Burst:
    """Packets sent back to back (SwitchDriver.packets: fast enough to open a table's worth of flows within a short
    idle timeout), then each stamped with the flow_last_seen it wrote (one that wrote none, e.g. a refused SYN: with
    the time of the packet before it) and stepped on the model in order. No two of them may write one place."""

    pkts: tuple[Packet, ...]


ClockedStep = Step | Wait | Burst


@dataclass(frozen=True)
class Clocked:
    """A packet as it was run: stamped with the switch's ingress time, the place its step used (`step_place`), the
    model's entry there and at each of its candidates before it, and how long the driver waited so that it would
    not arrive within GUARD_US before the expiry edge of an entry its fate depends on."""

    pkt: Packet
    before: FlowEntry
    guarded_us: int
    place: int = 0
    candidates: tuple[FlowEntry, ...] = ()


def place_of(cfg: LbConfig, st: P4lbState, key: int) -> int | None:
    """The candidate place holding the flow `key` in a p4lb state (model.p4lb.find), None if none does."""
    places = flow_places(cfg, key_packet(key))
    c = find(entries_at(st, places), key)
    return None if c == len(places) else places[c]


def step_place(cfg: LbConfig, before: P4lbState, after: P4lbState, pkt: Packet) -> int:
    """The place a p4lb step used: the candidate it wrote, else the one holding the packet's key, else (a refused
    SYN, a stray) the flow's first candidate."""
    places = flow_places(cfg, pkt)
    wrote = [p for p in places if after.flows.get(p, FREE) != before.flows.get(p, FREE)]
    if wrote:
        return wrote[0]
    held = place_of(cfg, before, pkt.key)
    return places[0] if held is None else held


def deciding(cfg: LbConfig, st: P4lbState, pkt: Packet) -> list[FlowEntry]:
    """The entries whose liveness the packet's fate depends on: the one holding its key, else (a SYN) every
    candidate, which a new flow may take only if it is not held by an open flow."""
    entries = entries_at(st, flow_places(cfg, pkt))
    c = find(entries, pkt.key)
    if c < len(entries):
        return [entries[c]]
    return entries if pkt.flag_class is FlagClass.SYN else []


def _edge(e: FlowEntry, timeout_us: int) -> int | None:
    """The last switch time at which the entry is still live (None for a free slot)."""
    return None if e.state == SlotState.FREE else e.last_seen + timeout_us


def _clear_edges(lab: Lab, slot: int, entries: list[FlowEntry], timeout_us: int, window_us: int = GUARD_US) -> tuple[dict[str, int], int]:
    """Read the slot (and the switch clock); while an entry's expiry edge is less than window_us ahead, sleep past
    every such edge."""
    edges = sorted({x for e in entries if (x := _edge(e, timeout_us)) is not None})
    regs, waited = lab.read_slot(slot), 0
    for _ in range(len(edges) + 8):
        near = [x for x in edges if regs["now"] <= x < regs["now"] + window_us]
        if not near:
            return regs, waited
        pause = near[-1] - regs["now"] + 1_000
        time.sleep(pause / 1e6)
        waited += pause
        regs = lab.read_slot(slot)
    raise RuntimeError(f"the switch clock does not move past {edges} (now {regs['now']})")


def _stamp(run: Run, pkt: Packet, seen: Outcome, before: dict[str, int], after: dict[str, int], entries: list[FlowEntry]) -> int:
    """The packet's ingress time: the flow_last_seen it wrote, else the clock read just before it was sent. If it
    wrote nothing and the expiry edge of an entry its fate depends on fell between the reads around it (only if it
    took over GUARD_US), the switch saw one side of the edge: the model takes the side that explains what the
    switch did."""
    t = after["flow_last_seen"] if after["flow_last_seen"] != before["flow_last_seen"] else before["now"]
    if not before["now"] <= t <= after["now"]:
        raise RuntimeError(f"flow_last_seen {t} outside the clock reads around the packet ({before['now']}..{after['now']})")
    if t != before["now"]:
        return t
    timeout = run.design.cfg.idle_timeout_us
    for edge in sorted({x for e in entries if (x := _edge(e, timeout)) is not None and before["now"] <= x < after["now"]}):
        late = replace(pkt, time_us=edge + 1)
        if same(run.design.packet(run.state, late)[1], seen):
            return late.time_us
    return t


def slot_problems(run: Run, slot: int, regs: dict[str, int], flow_only: bool = False) -> list[str]:
    """Differences between the model's slot entry, rr_next and idle timeout (unless flow_only) and the registers
    read from the switch."""
    e = run.state.flows.get(slot, FREE)
    want = {"flow_state": int(e.state), "flow_key": e.key, "flow_backend": e.backend, "flow_last_seen": e.last_seen}
    if not flow_only:
        want |= {"rr_next0": run.state.rr_next[0], "rr_next1": run.state.rr_next[1], "idle_timeout": run.design.cfg.idle_timeout_us}
    return [f"{k}[{slot}]: switch {regs[k]}, model {v}" for k, v in want.items() if regs[k] != v]


def _predicted_place(run: Run, pkt: Packet, now: int) -> int:
    """The place the model's step would use at switch time `now`."""
    after, _ = run.design.packet(run.state, replace(pkt, time_us=now))
    return step_place(run.design.cfg, run.state, after, pkt)


def _step_timed(drv: SwitchDriver, run: Run, pkt: Packet, obs: Observed, place: int, before: dict[str, int], after: dict[str, int], index: int, entries: list[FlowEntry], waited: int, flow_only: bool = False) -> tuple[Clocked, StepCompare]:
    """Step the model at the packet's stamped time; compare its outcome, frame and the registers at the place read
    (and at the place the model's step used, if that is another; flow_only: not rr_next, read after later packets)."""
    cfg = drv.design.cfg
    timed = replace(pkt, time_us=_stamp(run, pkt, obs.outcome, before, after, entries))
    st = run.state
    res = run.step(timed)
    used = step_place(cfg, st, run.state, timed)
    problems = []
    if obs.outcome.fate is Fate.BACKEND and res.outcome is not None and res.outcome.fate is Fate.BACKEND:
        problems = frame_problems(drv.design, timed, obs.outcome.backend, obs.frame)
    state = slot_problems(run, place, after, flow_only)
    if used != place:
        state += slot_problems(run, used, drv.lab.read_slot(used), flow_only)
    cands = tuple(entries_at(st, flow_places(cfg, pkt)))
    return Clocked(timed, st.flows.get(used, FREE), waited, used, cands), StepCompare(index, timed, res.outcome, obs.outcome, problems, state)


def _clocked_packet(drv: SwitchDriver, run: Run, pkt: Packet, index: int) -> tuple[Clocked, StepCompare]:
    """One packet on both, the model fed the switch's ingress time; the registers of the place its step used compared after it."""
    cfg = drv.design.cfg
    entries = deciding(cfg, run.state, pkt)
    held = place_of(cfg, run.state, pkt.key)
    read_at = flow_places(cfg, pkt)[0] if held is None else held
    first, waited = _clear_edges(drv.lab, read_at, entries, cfg.idle_timeout_us)
    place = _predicted_place(run, pkt, first["now"])
    before = first if place == read_at else drv.lab.read_slot(place)
    obs = drv.packet(pkt)
    after = drv.lab.read_slot(place)
    return _step_timed(drv, run, pkt, obs, place, before, after, index, entries, waited)


def _clocked_burst(drv: SwitchDriver, run: Run, burst: Burst, index: int) -> list[tuple[Clocked, StepCompare]]:
    """A burst's packets sent back to back, then stamped and stepped one by one (see Burst)."""
    cfg, pkts = drv.design.cfg, burst.pkts
    entries = [e for p in pkts for e in deciding(cfg, run.state, p)]
    regs, waited = _clear_edges(drv.lab, flow_places(cfg, pkts[0])[0], entries, cfg.idle_timeout_us, GUARD_US * (1 + len(pkts)))
    places, writes, st = [], [], run.state
    for p in pkts:  # where each will go: the model at the clock read (no expiry edge near)
        after, _ = run.design.packet(st, replace(p, time_us=regs["now"]))
        places.append(step_place(cfg, st, after, p))
        writes.append(after.flows.get(places[-1], FREE) != st.flows.get(places[-1], FREE))
        st = after
    written = [place for place, w in zip(places, writes, strict=True) if w]
    if len(set(written)) != len(written):
        raise ValueError(f"a burst's packets must write places of their own (the model writes {written})")
    before = {place: drv.lab.read_slot(place) for place in places}
    t = max(r["now"] for r in before.values())  # the clock just before the first packet
    seen = drv.packets(list(pkts))
    out = []
    for i, (p, obs, place, w) in enumerate(zip(pkts, seen, places, writes, strict=True)):
        after = drv.lab.read_slot(place)
        pre = (before[place] if w else after) | {"now": t}  # one that writes nothing (a refusal) is stamped with the time before it
        last = i == len(pkts) - 1  # rr_next is read after the whole burst: compared at its last packet
        c, cmp = _step_timed(drv, run, p, obs, place, pre, after, index, deciding(cfg, run.state, p), waited if i == 0 else 0, flow_only=not last)
        out.append((c, cmp))
        t = c.pkt.time_us
    return out


def run_clocked(lab: Lab, design: Design, pool: Pool, steps: list[ClockedStep], wait_budget_us: int = 2_000_000) -> tuple[Run, list[StepCompare], list[Clocked]]:
    """p4lb on both with time: every packet is stamped with the switch's ingress time (BMv2's
    ingress_global_timestamp, read through the CPU port) and the model is stepped at that time; after each packet
    the registers of the place its step used and rr_next are compared too. `Wait`s sleep (at most wait_budget_us
    in all); a `Burst`'s packets go back to back."""
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
        elif isinstance(step, Burst):
            for c, cmp in _clocked_burst(drv, run, step, i):
                clocked.append(c)
                out.append(cmp)
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


def collision_keys(cfg: LbConfig, sizes: tuple[int, ...], clients: tuple[int, ...], ports: range = range(1024, 65536)) -> list[list[int]]:
    """Groups of flow keys (clients x ports) that share their candidate places (model.p4lb.flow_places, as the switch
    hashes them), one group of each size, each group's places disjoint from the others'. Found by search: a one-way
    table (crc16) or the small test build (every flow has all 32 places) has them, 4 ways of 2^20 places do not."""
    by_places: dict[frozenset[int], list[int]] = {}
    groups: list[list[int]] = []
    taken: set[int] = set()
    for port in ports:
        for src in clients:
            places = frozenset(flow_places(cfg, Packet(src, port, 0, service=cfg.service)))
            if places & taken:
                continue
            keys = by_places.setdefault(places, [])
            keys.append(flow_key(cfg.service, src, port))
            if len(keys) == sizes[len(groups)]:
                groups.append(list(keys))
                taken |= places
                if len(groups) == len(sizes):
                    return groups
    raise ValueError(f"no {sizes} keys sharing candidate places among ports {ports.start}..{ports.stop - 1} of {len(clients)} clients ({cfg.shape.label()} on 2^{cfg.flow_table_bits} places)")


def fillers(cfg: LbConfig, pkt: Packet, k: int, clients: tuple[int, ...] = (), ports: range = range(1024, 65536)) -> list[Packet]:
    """SYNs of k flows of other clients whose candidate places are all among pkt's (model.p4lb.flow_places), in
    search order: flows that compete with pkt's for its places, e.g. to hold every one of them."""
    want = set(flow_places(cfg, pkt))
    out = []
    for port in ports:
        for src in clients or tuple(pkt.src_ip + i for i in range(1, 5)):
            other = Packet(src, port, SYN, service=pkt.service)
            if src != pkt.src_ip and set(flow_places(cfg, other)) <= want:
                out.append(other)
                if len(out) == k:
                    return out
    raise ValueError(f"fewer than {k} flows share the candidate places of {pkt} ({cfg.shape.label()} on 2^{cfg.flow_table_bits} places)")


def p4lb_design(cfg: LbConfig) -> Design:
    """p4lb on the lab's configuration: its backends and its flow table."""
    return Design("p4lb", cfg)


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
