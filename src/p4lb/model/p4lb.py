"""p4lb's ingress: versioned round-robin over eligible backends, a keyed flow table that never evicts an open flow.

Services: the switch serves up to 256, each a VIP:port whose `vip` entry gives its id (lb_select(service, version)).
A P4lbState is one service's slice of the switch (its version, groups, rr_next, lb_drops and backend_flows: the
P4 keys or indexes each of them by the service) beside the state every service shares: the flow table, whose keys
are service ++ client address ++ client port (model.packet.flow_key), and backend_open, indexed by
service * 256 + backend. A packet's `service` is its VIP's.

Tables (written by the controller): `vip` (lb_select(service, version): the one atomic commit point of a service),
`rr_group` (set_group(size) per service and version), `rr_member` (set_member(backend) per service, version and
position), `backend` (set_backend(mac, ip, port) per service and backend). Registers (written by the data plane):
`rr_next` (per service and version), `flow_state`, `flow_key`, `flow_backend`, `flow_last_seen` (per flow place),
`backend_open` (per service and backend: how many flow places hold it in state OPEN, kept by `_put`). Counters:
`lb_drops` (per service and DropReason), `backend_flows` (new flows per service and backend). No loop over N: a
packet reads one group size, one member, and its flow's candidate places (cfg.shape: one crc16 place, or ways x
bucket crc32 places; model.flowtable).
"""
from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

from p4lb.model.config import LbConfig
from p4lb.model.errors import PlanError
from p4lb.model.flowtable import at, candidates, choose, first
from p4lb.model.ops import Target, Write
from p4lb.model.packet import DropReason, FlagClass, Outcome, Packet, dropped, key_service, to_backend
from p4lb.model.pool import Pool, in_place

TCP = 6
INDEX_MOD = 256  # rr_next and rr_member positions are bit<8>
OPEN_PER_SERVICE = 256  # backend_open and backend_flows: one cell per (service, 8-bit backend id)


class SlotState(enum.IntEnum):
    """flow_state values."""

    FREE = 0
    OPEN = 1
    CLOSING = 2  # FIN/RST seen: still forwarded so the close handshake completes, but no longer protected


@dataclass(frozen=True)
class FlowEntry:
    """One flow slot: flow_state, flow_key, flow_backend, flow_last_seen."""

    state: SlotState = SlotState.FREE
    key: int = 0
    backend: int = 0
    last_seen: int = 0


FREE = FlowEntry()


def is_open(e: FlowEntry, now: int, idle_timeout_us: int) -> bool:
    """An OPEN slot idle for no longer than the timeout: a flow the balancer still pins and protects."""
    return (e.state == SlotState.OPEN) & (now - e.last_seen <= idle_timeout_us)  # `&`: one symbolic decision, not two


@dataclass(frozen=True)
class Variant:
    """Deliberate bugs (mutants); all False is p4lb. Each one is meant to break the property in its doc."""

    eligible_ignores_health: bool = False  # P1: the planner lists failed backends
    eligible_ignores_active: bool = False  # P2: the planner lists inactive backends
    no_pointer_wrap: bool = False  # P3: rr_next runs past the group size into empty positions
    resyn_redispatch: bool = False  # P4: a retransmitted SYN of an open flow is dispatched again
    midflow_pickup: bool = False  # P4b: a non-SYN packet of no live flow is dispatched round-robin instead of dropped
    advance_on_refuse: bool = False  # P5: a refused SYN still advances rr_next
    ignores_weights: bool = False  # P5: the planner lists every eligible backend once, whatever its weight
    evict_on_collision: bool = False  # P6: a new SYN takes the slot of another open flow
    in_place_updates: bool = False  # P7: the controller rewrites the live version instead of staging
    refuse_uncounted: bool = False  # P8: a SYN refused for a full slot is dropped without being counted
    uncounted_drops: bool = False  # P3/P4b/P8 (tests): every drop keeps its reason but lb_drops never goes up
    refuse_stale: bool = False  # P3/P8 (tests): a SYN is refused if its slot holds any other flow, even a closing or expired one
    no_eligible_as_unknown: bool = False  # P3 (tests): a SYN with no backend eligible is counted as an unknown flow, not no_eligible
    reclaim_keeps_open: bool = False  # backend_open (tests): a new flow written over an OPEN entry (expired, or its key re-admitted) leaves that entry's backend counted

    def name(self) -> str:
        """The mutant's name, or p4lb."""
        on = [f.name for f in fields(self) if getattr(self, f.name)]
        return "+".join(on) if on else "p4lb"


P4LB = Variant()


@dataclass(frozen=True)
class P4lbState:
    """Everything the ingress reads or writes."""

    version: int = 0  # the committed version: the vip entry's lb_select(version)
    rr_group: tuple[int, int] = (0, 0)
    rr_member: dict[tuple[int, int], int] = field(default_factory=dict)
    rr_next: tuple[int, int] = (0, 0)
    flows: dict[int, FlowEntry] = field(default_factory=dict)
    lb_drops: tuple[int, ...] = (0,) * 8
    backend_flows: dict[int, int] = field(default_factory=dict)
    backend_open: dict[int, int] = field(default_factory=dict)  # cell (service * 256 + backend: open_cell) -> flow places OPEN holding it (open or idle, not yet reclaimed); shared by every service, as the flow table is
    now: int = 0

    def members(self, version: int) -> tuple[int, ...]:
        """The round-robin group of a version."""
        return tuple(self.rr_member.get((version, i), 0) for i in range(self.rr_group[version]))


def flow_places(cfg: LbConfig, pkt: Packet) -> tuple[int, ...]:
    """The places the packet's flow may sit in (model.flowtable: crc16 for the one-way table, crc32 per way)."""
    return candidates(cfg.shape, pkt.src_ip, cfg.vip, pkt.src_port, cfg.vip_port)


def flow_slot(cfg: LbConfig, pkt: Packet) -> int:
    """The flow's first candidate place (its only one in the one-way table)."""
    return flow_places(cfg, pkt)[0]


def entries_at(st: P4lbState, places: Sequence[int]) -> list[FlowEntry]:
    """The flow registers at each of the places (FREE where never written)."""
    return [st.flows.get(p, FREE) for p in places]


def find(entries: Sequence[FlowEntry], key: int) -> int:
    """The candidate holding `key` (any state but FREE), len(entries) if none: a flow is written only where none holds it, so at most one does."""
    return first([(e.state != SlotState.FREE) & (e.key == key) for e in entries])


def held(e: FlowEntry, now: int, idle_timeout_us: int, var: Variant) -> bool:
    """A place a new flow may not take: an open flow's (the refuse_stale mutant: any flow's)."""
    if var.refuse_stale:
        return e.state != SlotState.FREE
    return is_open(e, now, idle_timeout_us)


def _count_drop(st: P4lbState, reason: DropReason) -> P4lbState:
    """lb_drops[reason] += 1 (for the reasons that are counted)."""
    if not reason.counted:
        return st
    drops = list(st.lb_drops)
    drops[reason] += 1
    return replace(st, lb_drops=tuple(drops))


def _set(pair: tuple[int, int], index: int, value: int) -> tuple[int, int]:
    return (value, pair[1]) if index == 0 else (pair[0], value)


def _advance(var: Variant, st: P4lbState) -> tuple[P4lbState, int, int]:
    """Read the group of the committed version and advance its rr_next: (state, position, backend)."""
    v, n = st.version, st.rr_group[st.version]
    i = st.rr_next[v]
    if i >= n and not var.no_pointer_wrap:
        i = 0
    nxt = (i + 1) % INDEX_MOD
    if nxt >= n and not var.no_pointer_wrap:
        nxt = 0
    return replace(st, rr_next=_set(st.rr_next, v, nxt)), i, st.rr_member.get((v, i), 0)


def _send(cfg: LbConfig, st: P4lbState, backend: int, admitted: bool = False) -> tuple[P4lbState, Outcome]:
    """Apply the `backend` table (entries 1..N): a miss is dropped and counted as NO_BACKEND_ENTRY, never sent to port 0."""
    if 1 <= backend <= cfg.n:
        return st, to_backend(backend, admitted)
    return _count_drop(st, DropReason.NO_BACKEND_ENTRY), dropped(DropReason.NO_BACKEND_ENTRY)


def p4lb_packet(cfg: LbConfig, var: Variant, st: P4lbState, pkt: Packet) -> tuple[P4lbState, Outcome]:
    """One TCP packet to the VIP."""
    after, out = _ingress(cfg, var, st, pkt)
    if var.uncounted_drops:  # the mutant never applies the lb_drops counter
        after = replace(after, lb_drops=st.lb_drops)
    return after, out


def _ingress(cfg: LbConfig, var: Variant, st: P4lbState, pkt: Packet) -> tuple[P4lbState, Outcome]:
    """One TCP packet to the VIP, before the uncounted_drops mutant's change."""
    t = max(pkt.time_us, st.now)
    st = replace(st, now=t)
    cls = pkt.flag_class
    if cls is FlagClass.MALFORMED:
        return _count_drop(st, DropReason.MALFORMED), dropped(DropReason.MALFORMED)
    places = flow_places(cfg, pkt)
    entries = entries_at(st, places)
    c = find(entries, pkt.key)
    if c == len(entries):
        return _unmatched(cfg, var, st, pkt, places, entries)
    slot, e = at(places, c), at(entries, c)
    live = t - e.last_seen <= cfg.idle_timeout_us
    if live and e.state == SlotState.OPEN and not (var.resyn_redispatch and cls is FlagClass.SYN):
        state = SlotState.CLOSING if cls is FlagClass.CLOSE else SlotState.OPEN
        return _send(cfg, _put(var, st, slot, replace(e, state=state, last_seen=t)), e.backend)
    if cls is FlagClass.SYN:
        return _new_flow(cfg, var, st, pkt, slot, False)
    if live and e.state == SlotState.CLOSING:
        return _send(cfg, _put(var, st, slot, replace(e, last_seen=t)), e.backend)
    return _stray(cfg, var, st)


def _unmatched(cfg: LbConfig, var: Variant, st: P4lbState, pkt: Packet, places: tuple[int, ...], entries: list[FlowEntry]) -> tuple[P4lbState, Outcome]:
    """A packet of a key no candidate holds: a SYN takes a place (cfg.shape's choice) or is refused; the rest are strays."""
    if pkt.flag_class is not FlagClass.SYN:
        return _stray(cfg, var, st)
    c = choose(cfg.shape, [held(e, st.now, cfg.idle_timeout_us, var) for e in entries])
    if c == len(entries):
        return _new_flow(cfg, var, st, pkt, places[0], not var.evict_on_collision)
    return _new_flow(cfg, var, st, pkt, at(places, c), False)


def _stray(cfg: LbConfig, var: Variant, st: P4lbState) -> tuple[P4lbState, Outcome]:
    """A non-SYN packet of no live flow: dropped and counted (the midflow_pickup mutant dispatches it)."""
    if var.midflow_pickup and st.rr_group[st.version]:
        st, _, b = _advance(var, st)
        return _send(cfg, st, b)
    return _count_drop(st, DropReason.UNKNOWN_FLOW), dropped(DropReason.UNKNOWN_FLOW)


def _new_flow(cfg: LbConfig, var: Variant, st: P4lbState, pkt: Packet, slot: int, occupied: bool) -> tuple[P4lbState, Outcome]:
    """A SYN of no open flow: refuse if `occupied` (every candidate holds another open flow), else dispatch round-robin and pin at `slot`."""
    if occupied and not var.evict_on_collision:
        if var.advance_on_refuse and st.rr_group[st.version]:
            st = _advance(var, st)[0]
        reason = DropReason.UNCOUNTED if var.refuse_uncounted else DropReason.FLOW_TABLE_FULL
        return _count_drop(st, reason), dropped(reason)
    if st.rr_group[st.version] == 0:
        none = DropReason.UNKNOWN_FLOW if var.no_eligible_as_unknown else DropReason.NO_ELIGIBLE
        return _count_drop(st, none), dropped(none)
    st, _, b = _advance(var, st)
    st = replace(st, backend_flows=st.backend_flows | {b: st.backend_flows.get(b, 0) + 1})
    return _send(cfg, _put(var, st, slot, FlowEntry(SlotState.OPEN, pkt.key, b, st.now), admitted=True), b, admitted=True)


def _put(var: Variant, st: P4lbState, slot: int, e: FlowEntry, admitted: bool = False) -> P4lbState:
    """Write the four flow registers of one slot, and move backend_open with the place: -1 for the backend of the
    OPEN entry it held (a close turning it CLOSING, a new flow reclaiming it), +1 for the backend of the OPEN entry
    it gets (a new flow). A packet of an open flow keeps it OPEN on its backend: -1 and +1 cancel (the P4 program
    writes nothing). So backend_open[b] is always the number of places OPEN with backend b: a decrement only ever
    gives back a count an OPEN place added, never below 0, never above the places (2^20 < 2^32: bit<32> never wraps)."""
    old = st.flows.get(slot, FREE)
    count = st.backend_open
    if old.state == SlotState.OPEN and not (admitted and var.reclaim_keeps_open):
        count = count | {open_cell(old): count.get(open_cell(old), 0) - 1}
    if e.state == SlotState.OPEN:
        count = count | {open_cell(e): count.get(open_cell(e), 0) + 1}
    return replace(st, flows=st.flows | {slot: e}, backend_open=count)


def open_cell(e: FlowEntry) -> int:
    """backend_open's cell of an entry: its key's service * 256 + its backend (an expired entry a new flow reclaims
    may be another service's: its own service's count goes down)."""
    return key_service(e.key) << 8 | e.backend  # = service * OPEN_PER_SERVICE + backend (backend < 256)


def p4lb_write(st: P4lbState, w: Write) -> P4lbState:
    """Apply one control-plane write."""
    if w.target == "vip":
        return replace(st, version=w.value & 1)
    if w.target == "rr_group":
        return replace(st, rr_group=_set(st.rr_group, w.index[0], w.value))
    if w.target == "rr_next":
        return replace(st, rr_next=_set(st.rr_next, w.index[0], w.value % INDEX_MOD))
    if w.target == "rr_member":
        return replace(st, rr_member=st.rr_member | {(w.index[0], w.index[1]): w.value})
    raise PlanError(f"p4lb has no control-plane target {w.target!r}")


def planned_counts(var: Variant, pool: Pool) -> dict[int, int]:
    """How often the planner lists each backend: the eligible ones weight times (the mutants list the wrong set or count)."""
    listed = pool.eligible
    if var.eligible_ignores_health:
        listed = pool.active - pool.draining
    if var.eligible_ignores_active:
        listed = pool.healthy - pool.draining
    return {b: 1 if var.ignores_weights else pool.weight(b) for b in listed}


def planned_members(var: Variant, pool: Pool, live: tuple[int, ...] = ()) -> tuple[int, ...]:
    """The group the planner lists for a pool, keeping the live group's members in place (pool.in_place)."""
    return in_place(live, planned_counts(var, pool))


def p4lb_plan(var: Variant, st: P4lbState, after: Pool) -> list[Write]:
    """Stage the new group under the unused version, then commit it with one write to `vip` (Reitblatt et al.).

    The new group keeps the live group's members where they are (a failure of k backends moves about k), and the
    staged version still holds an older group: only the positions (and the size) that differ from the new group are
    written, so a plan costs what changed since that group, not the group's length. rr_next is always reset, as a
    controller that read the switch quickly does not know it."""
    live = st.members(st.version)
    members = planned_members(var, after, live)
    if members == live:
        return []
    s = st.version if var.in_place_updates else 1 - st.version
    writes = [Write(Target.RR_MEMBER, (s, i), b) for i, b in enumerate(members) if st.rr_member.get((s, i)) != b]
    if st.rr_group[s] != len(members) or not members:
        writes.append(Write(Target.RR_GROUP, (s,), len(members)))
    return writes + [Write(Target.RR_NEXT, (s,), 0), Write(Target.VIP, (), s)]


def check_plan(st: P4lbState, plan: list[Write], after: Pool) -> None:
    """Raise PlanError unless `plan` only stages the unused version, commits last, and lists `after`'s eligible set by weight."""
    if not plan:
        if Counter(st.members(st.version)) != {b: after.weight(b) for b in after.eligible}:
            raise PlanError(f"an empty plan leaves group {st.members(st.version)} but eligible is {sorted(after.eligible)}")
        return
    staged = 1 - st.version
    *stage, commit = plan
    for w in stage:
        if w.target not in ("rr_member", "rr_group", "rr_next") or w.index[0] != staged:
            raise PlanError(f"write {w} touches the live version {st.version}; stage under version {staged}")
    if commit != Write(Target.VIP, (), staged):
        raise PlanError(f"the last write must be the commit vip[] := {staged}, not {commit}")
    end = st
    for w in plan:
        end = p4lb_write(end, w)
    group = end.members(staged)
    if Counter(group) != {b: after.weight(b) for b in after.eligible} or end.rr_next[staged] != 0:
        raise PlanError(f"staged group {group} (rr_next {end.rr_next[staged]}) does not list eligible {sorted(after.eligible)} as often as their weights")
