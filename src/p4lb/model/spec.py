"""The contract (P1..P8 and P4b) as an executable checker over one run: the spec's ghost state and its per-step checks."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from fractions import Fraction

from p4lb.model.crc import ip_str
from p4lb.model.packet import DropReason, Fate, FlagClass, Outcome, Packet, key_packet, key_service
from p4lb.model.pool import Pool


class Prop(enum.Enum):
    """The properties of PROPERTIES.md."""

    P1 = "no new flow to a failed backend"
    P2 = "no new flow to an inactive backend"
    P3 = "no black hole"
    P4 = "pinning"
    P4b = "no misrouting"
    P5 = "fairness"
    P6 = "isolation"
    P7 = "safe updates"
    P8 = "bounded state"

    @classmethod
    def parse(cls, text: str) -> Prop:
        """'P3', 'p3' or 'P4b' to the property; KeyError if there is none."""
        wanted = text.strip().upper()
        for p in cls:
            if p.name.upper() == wanted:
                return p
        raise KeyError(text)


@dataclass(frozen=True)
class OpenFlow:
    """A flow the spec considers admitted and not closed; it is open while now - last <= idle timeout."""

    backend: int
    last: int


@dataclass(frozen=True)
class SpecState:
    """Ghost state: the operator's sets, the admitted flows, and the new flows dispatched since the eligible set last changed."""

    pool: Pool
    flows: dict[int, OpenFlow] = field(default_factory=dict)
    admitted: dict[int, int] = field(default_factory=dict)  # every flow key ever admitted -> its latest backend (P4b)
    run: tuple[int, ...] = ()  # backends given to new flows since the eligible set last changed
    writes_seen: int = 0  # controller writes so far (P7 speaks of states reached through them)


def key_str(key: int, service: int = 0) -> str:
    """A flow key as the client's address:port, with its service when it is not `service`."""
    pkt, svc = key_packet(key), key_service(key)
    return f"{ip_str(pkt.src_ip)}:{pkt.src_port}" + (f" (service {svc})" if svc != service else "")


def is_open(spec: SpecState, key: int, t: int, timeout: int) -> bool:
    """Is the flow open at time t."""
    f = spec.flows.get(key)
    return f is not None and t - f.last <= timeout


def spec_packet(spec: SpecState, pkt: Packet, t: int, timeout: int, outcome: Outcome) -> SpecState:
    """The spec's view after the switch handled `pkt` at time t."""
    cls = pkt.flag_class
    flows = dict(spec.flows)
    run = spec.run
    if is_open(spec, pkt.key, t, timeout):
        if cls is FlagClass.CLOSE:
            del flows[pkt.key]
        elif cls is not FlagClass.MALFORMED:
            flows[pkt.key] = replace(flows[pkt.key], last=t)
    elif cls is FlagClass.SYN and outcome.fate is Fate.BACKEND:
        flows[pkt.key] = OpenFlow(outcome.backend, t)
        run = run + (outcome.backend,)
        return replace(spec, flows=flows, run=run, admitted=spec.admitted | {pkt.key: outcome.backend})
    return replace(spec, flows=flows, run=run)


def shares(pool: Pool) -> dict[int, int]:
    """The eligible backends and their weights: what P5 spreads new flows by."""
    return {b: pool.weight(b) for b in pool.eligible}


def spec_pool(spec: SpecState, pool: Pool) -> SpecState:
    """The operator's sets changed (at an operation's commit): a new fairness run starts if the eligible set or a weight in it changed."""
    run = spec.run if shares(pool) == shares(spec.pool) else ()
    return replace(spec, pool=pool, run=run)


@dataclass(frozen=True)
class StepView:
    """What the checker needs about one packet step, from the design under test."""

    pkt: Packet
    t: int
    outcome: Outcome
    occupants: tuple[int | None, ...] | None  # key stored in each of the packet's places before the step (None: free), if the design stores keys
    records_changed: frozenset[int]  # open flows (other than the packet's) whose per-flow record the step changed
    counted: bool = False  # the switch's lb_drops counter at the outcome's reason went up by one (a named counter, not a label)


def fair(run: tuple[int, ...], weights: dict[int, int]) -> bool:
    """Every window ending at the last dispatch gives eligible backends counts whose count/weight are within 1 of each other."""
    counts = dict.fromkeys(weights, 0)
    for b in reversed(run):
        if b in counts:
            counts[b] += 1
        norm = [Fraction(counts[a], weights[a]) for a in counts]
        if norm and max(norm) - min(norm) > 1:
            return False
    return True


def violations(spec: SpecState, view: StepView, timeout: int) -> list[tuple[Prop, str]]:
    """The properties (other than P7) this packet step breaks, with a sentence each."""
    pkt, out, pool = view.pkt, view.outcome, spec.pool
    found: list[tuple[Prop, str]] = []
    key_open = is_open(spec, pkt.key, view.t, timeout)
    new_syn = pkt.flag_class is FlagClass.SYN and not key_open
    if new_syn and out.fate is Fate.BACKEND:
        if out.backend not in pool.healthy:
            found.append((Prop.P1, f"new flow sent to failed backend {out.backend}"))
        if out.backend not in pool.active or out.backend in pool.draining:
            found.append((Prop.P2, f"new flow sent to inactive or draining backend {out.backend}"))
    occupied = view.occupants is not None and all(o is not None and o != pkt.key and is_open(spec, o, view.t, timeout) for o in view.occupants)
    refused = out.fate is Fate.DROP and out.reason is DropReason.FLOW_TABLE_FULL
    if new_syn and not (occupied and refused and view.counted):
        found += _p3(pool, out, view.counted)
    if out.fate is Fate.LOST:
        found.append((Prop.P3, f"sent where no backend is: {out}"))
    if key_open and pkt.flag_class is not FlagClass.MALFORMED:
        want = spec.flows[pkt.key].backend
        if out.fate is not Fate.BACKEND or out.backend != want:
            found.append((Prop.P4, f"packet of an open flow pinned to {want} went to: {out}"))
    if pkt.key in spec.admitted and not new_syn:
        found += _p4b(spec.admitted[pkt.key], out, view.counted)
    if new_syn and out.fate is Fate.BACKEND and pool.eligible and not fair(spec.run + (out.backend,), shares(pool)):
        found.append((Prop.P5, f"unfair spread over eligible {shares(pool)} (backend: weight): {spec.run + (out.backend,)}"))
    changed = ", ".join(key_str(k) for k in sorted(view.records_changed))
    if changed:
        found.append((Prop.P6, f"a packet of another flow changed the state of open flow(s) {changed}"))
    if new_syn and occupied and not (out.fate is Fate.DROP and view.counted):
        found.append((Prop.P8, f"SYN whose every place holds another open flow was not refused and counted: {out}"))
    if new_syn and changed:
        found.append((Prop.P8, f"a new SYN took the place of open flow(s) {changed}: {out}"))
    if new_syn and refused and not occupied:
        found.append((Prop.P8, "SYN refused although one of its places holds no other open flow"))
    if new_syn and refused and not view.counted:
        found.append((Prop.P8, "SYN refused without lb_drops[flow_table_full] going up"))
    return found


def _p3(pool: Pool, out: Outcome, counted: bool) -> list[tuple[Prop, str]]:
    """P3 for a new flow's SYN that P8 does not excuse."""
    if pool.eligible and not (out.fate is Fate.BACKEND and out.backend in pool.eligible):
        return [(Prop.P3, f"new flow not dispatched to an eligible backend although {sorted(pool.eligible)} eligible: {out}")]
    if not pool.eligible and not (out.fate is Fate.DROP and out.reason is DropReason.NO_ELIGIBLE and counted):
        return [(Prop.P3, f"no backend eligible, but the SYN was not dropped and counted: {out}")]
    return []


def _p4b(backend: int, out: Outcome, counted: bool) -> list[tuple[Prop, str]]:
    """P4b for a packet of a flow admitted at some time (open, closing or expired) that is not a new flow's SYN."""
    if out.fate is Fate.BACKEND and out.backend == backend or out.fate is Fate.DROP and counted:
        return []
    return [(Prop.P4b, f"packet of a flow admitted to backend {backend} went to: {out}")]


SAFE_UPDATE_PROPS = (Prop.P1, Prop.P2, Prop.P3, Prop.P4, Prop.P4b, Prop.P6)
