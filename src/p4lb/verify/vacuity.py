"""Non-vacuity: every proof's transition admits every kind of step, from the deployed state and under the invariant.

An empty or over-constrained transition makes any invariant inductive and any property 'proven'. So for each
mode of the proofs (atomic operations; single writes for P7) every kind of step (dispatch, pinned packet, close,
a packet of a closing flow, refusal, expiry, unknown flow, malformed, no eligible backend, commit, a change that
needs no write, a staged write) must (1) occur at the end of some run from the deployed state, found by bounded
search with up to REACH_BACKENDS backends, and (2) satisfy the induction query's premises (invariant before, transition, invariant after) at the proof's N.
A packet step is the same transition in both modes (proven each run), so the packet kinds' premises are checked once.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import z3

from p4lb.model.packet import DropReason
from p4lb.verify.encoding import B8, FATE_BACKEND, FATE_DROP, SERVICE, StepEnc, Sym, bv8, open_at, reason
from p4lb.verify.engine import Task, _solver, _Unroll, induction_premises
from p4lb.verify.invariants import Watched
from p4lb.verify.p4lb_enc import FREE, P4lbEncoding, service_of
from p4lb.verify.properties import Witness

KindPredicate = Callable[[Sym, StepEnc, int], z3.BoolRef]
MAX_DEPTH = 5
REACH_BACKENDS = 8  # runs from deployment are searched with at most this many backends (the premises use the proof's N); every kind occurs within 3 steps at 4, 8 and 16: 16 took 8.4 s, 8 takes 2


def _dropped(e: StepEnc, r: DropReason) -> z3.BoolRef:
    return z3.And(e.is_packet, e.out.fate == FATE_DROP, e.out.reason == reason(r))


def _open(s: Sym, e: StepEnc, timeout: int) -> z3.BoolRef:
    return open_at(s.spec, e.pkt.key, e.pkt.t, timeout)


PACKET_KINDS: dict[str, KindPredicate] = {
    "dispatch": lambda s, e, to: z3.And(e.is_packet, e.pkt.syn, z3.Not(_open(s, e, to)), e.out.fate == FATE_BACKEND),
    "pinned packet": lambda s, e, to: z3.And(e.is_packet, _open(s, e, to), z3.Not(e.pkt.close), e.out.fate == FATE_BACKEND),
    "close": lambda s, e, to: z3.And(e.is_packet, _open(s, e, to), e.pkt.close, e.out.fate == FATE_BACKEND),
    "closing flow": lambda s, e, to: z3.And(e.is_packet, s.spec["admitted"][e.pkt.key], z3.Not(_open(s, e, to)), z3.Not(e.pkt.syn), e.out.fate == FATE_BACKEND),
    "expiry": lambda s, e, to: z3.And(e.is_packet, s.spec["open"][e.pkt.key], e.pkt.t - s.spec["last"][e.pkt.key] > to),
    "refusal": lambda s, e, to: _dropped(e, DropReason.FLOW_TABLE_FULL),
    "unknown flow": lambda s, e, to: _dropped(e, DropReason.UNKNOWN_FLOW),
    "malformed": lambda s, e, to: _dropped(e, DropReason.MALFORMED),
    "no eligible": lambda s, e, to: _dropped(e, DropReason.NO_ELIGIBLE),
}
OP_KINDS = {"commit": 1, "sets only": 2, "staged write": 3, "other service": 4}  # other service: a packet of another service (the rely step)
SAME_AS_ATOMIC = "as atomic"  # a packet kind in the single-writes mode: the same packet transition (proven), checked once; resolve() takes the atomic report's result
ADMITTED = ("sat", f"sat {SAME_AS_ATOMIC}")  # premise results that admit the kind
MODE_NAMES = {True: "atomic operations", False: "operations as single writes"}
TAG = "v"  # the premise queries' step variables
HINT_TIMEOUT_MS = 10_000  # a hinted premise query not answered 'sat' in this time falls back to the next hint, then to none


def _takes_ours(s: Sym, e: StepEnc, timeout: int) -> z3.BoolRef:
    """Another service's packet writes a place holding this service's flow (closing or expired: never an open one)."""
    place = e.place if e.place is not None else z3.BitVecVal(0, 1)
    k = s.sw["flow_key"][place]
    return z3.And(e.inputs["kind"] == OP_KINDS["other service"], s.sw["flow_state"][place] != 0, service_of(k) == SERVICE, s.spec["admitted"][k])


OTHER_KINDS: dict[str, KindPredicate] = {"other service takes our closing or expired place": _takes_ours}


RELY_KINDS = ("other service", *OTHER_KINDS)  # the kinds of other services' packets


def kinds(atomic: bool) -> list[str]:
    """The kinds of step a mode's transition must admit."""
    return [*PACKET_KINDS, *(k for k in OP_KINDS if k != "staged write" or not atomic), *OTHER_KINDS]


def predicate(name: str, s: Sym, e: StepEnc, timeout: int) -> z3.BoolRef:
    """The step `e` from state `s` is of kind `name`."""
    if name in PACKET_KINDS:
        return PACKET_KINDS[name](s, e, timeout)
    if name in OTHER_KINDS:
        return OTHER_KINDS[name](s, e, timeout)
    return e.inputs["kind"] == OP_KINDS[name]


@dataclass
class VacuityReport:
    """For one mode: the depth at which each kind first occurs from deployment, and whether the proof premises admit it."""

    mode: str
    reached: dict[str, int | None] = field(default_factory=dict)
    reach_n: int = 0  # backends in the runs from deployment
    premises: dict[str, str] = field(default_factory=dict)  # kind -> sat / unsat / unknown
    seconds: float = 0.0

    def failures(self) -> list[str]:
        """Kinds a proof's transition does not admit."""
        bad = [f"{self.mode}: no '{k}' step within {MAX_DEPTH} steps of deployment" for k, d in self.reached.items() if d is None]
        unresolved = [f"{self.mode}: '{k}' steps are checked as in the atomic mode, but no atomic-mode report was resolved with this one" for k, r in self.premises.items() if r == SAME_AS_ATOMIC]
        return bad + unresolved + [f"{self.mode}: the induction premises exclude '{k}' steps ({r})" for k, r in self.premises.items() if r not in (*ADMITTED, SAME_AS_ATOMIC)]


def reach(task: Task) -> dict[str, int | None]:
    """The shortest run from the deployed state whose last step is of each kind (uninterpreted hash, N <= REACH_BACKENDS)."""
    u = _Unroll(task.searchable(REACH_BACKENDS), real_hash=False, others=True)
    todo = kinds(task.atomic)
    found: dict[str, int | None] = dict.fromkeys(todo)
    for depth in range(1, MAX_DEPTH + 1):
        u.extend()
        s, e = u.states[-2], u.steps[-1]
        for name in todo:
            if found[name] is not None:
                continue
            solver = _solver()  # fresh per query: z3's incremental mode skips the preprocessing these need
            solver.add(*u.solver.assertions(), predicate(name, s, e, u.enc.timeout))
            if solver.check() == z3.sat:  # the run may end in a step of other kinds too: a witness for each
                m = solver.model()
                found |= {k: depth for k in todo if found[k] is None and z3.is_true(m.eval(predicate(k, s, e, u.enc.timeout), model_completion=True))}
        if all(d is not None for d in found.values()):
            break
    return found


def premises(task: Task) -> dict[str, str]:
    """Is 'invariant /\\ transition /\\ invariant afterwards /\\ step of kind K' satisfiable, for each kind."""
    enc = task.encoding(real_hash=False)
    assert isinstance(enc, P4lbEncoding)  # the inductive invariant is p4lb's
    s0, s1 = enc.fresh("a"), enc.fresh("b")
    e = enc.step(s0, s1, TAG, task.atomic)
    w, watched = Witness.fresh(TAG), Watched.fresh(enc)
    # the most instances any proof assumes (P8's, and K0, which P9's query assumes): a step these admit is admitted
    # by every proof's premises
    base = induction_premises(enc, s0, s1, e, w, watched, occupants=True, rely=True)
    out: dict[str, str] = {} if task.atomic else _packet_kinds_as_atomic(enc, s0, s1, e)
    shared, commit = hints(enc, s0, s1, e)  # built once: the deployed pool's terms are most of a premise query's Python time
    for name in kinds(task.atomic):
        if name in out:
            continue
        out[name], m = _admitted(base, predicate(name, s0, e, enc.timeout), [*(commit if name == "commit" else []), *shared])
        if m is not None:  # the same state and step may show other kinds too: a model of the premises is a witness for each
            out |= {k: "sat" for k in kinds(task.atomic) if k not in out and z3.is_true(m.eval(predicate(k, s0, e, enc.timeout), model_completion=True))}
    return out


def hints(enc: P4lbEncoding, s0: Sym, s1: Sym, e: StepEnc) -> tuple[list[z3.BoolRef], list[z3.BoolRef]]:
    """Extra constraints, tried in turn before none: the deployed state; the deployed groups and pool with one place
    in use, the packet's first candidate (a flow's packet, or another service's, half the time of flows anywhere);
    the deployed groups and pool with flows anywhere. And, tried first for a commit, from the deployed state to a
    pool of backend 1 alone (a group of one is quick to check). A model of the premises and a hint is a model of the
    premises: the hints only make a witness quicker to find, never admit a step the premises exclude."""
    deployed = enc.init(s0)
    fresh = z3.And(enc.deployed_groups(s0), s0.sw["ghost_pc"] == z3.K(B8, z3.IntVal(0)), z3.Not(s0.spec["wrote"]))
    in_use = z3.BitVec(f"in_use_{TAG}", FREE.size())
    one_place = z3.And(fresh, s0.sw["flow_state"] == z3.Store(z3.K(enc.idx, FREE), enc.places.all(e.pkt.key)[0], in_use))
    alone = z3.And(deployed, *[s1.spec["active"][bv8(b)] == (b == 1) for b in range(1, enc.n + 1)])
    return [deployed, one_place, fresh], [alone]


def _admitted(base: list[z3.BoolRef], kind: z3.BoolRef, extra: list[z3.BoolRef]) -> tuple[str, z3.ModelRef | None]:
    """'sat' and a model if base /\\ kind holds with some hint (each tried for HINT_TIMEOUT_MS) or with none; else the last answer."""
    for hint in [*extra, None]:
        solver = _solver()  # a fresh solver per query: z3's incremental mode skips the preprocessing these need
        if hint is not None:
            solver.set("timeout", HINT_TIMEOUT_MS)
        solver.add(*base, kind, *([] if hint is None else [hint]))
        answer = solver.check()
        if answer == z3.sat:
            return "sat", solver.model()
    return str(answer), None


def _packet_kinds_as_atomic(enc: P4lbEncoding, s0: Sym, s1: Sym, e: StepEnc) -> dict[str, str]:
    """For single writes: a packet step, and another service's packet, is the same transition as with atomic
    operations (proven here), so the atomic mode's premise checks of those kinds (same invariant, same instances)
    stand for this mode's."""
    atomic = enc.step(s0, s1, TAG, atomic=True).trans
    out: dict[str, str] = {}
    for step, names in ((e.is_packet, list(PACKET_KINDS)), (e.inputs["kind"] == OP_KINDS["other service"], list(RELY_KINDS))):
        solver = _solver()
        solver.add(step, e.trans != atomic)
        if solver.check() == z3.unsat:
            out |= dict.fromkeys(names, SAME_AS_ATOMIC)
    return out


class Part(enum.Enum):
    """The two halves of a mode's check (each may run in a process of its own: joined())."""

    REACH = "runs from deployment"
    PREMISES = "induction premises"


def check_vacuity(task: Task, parts: tuple[Part, ...] = tuple(Part)) -> VacuityReport:
    """Both checks for the mode of `task` (or the `parts` asked for)."""
    start = time.monotonic()
    rep = VacuityReport(MODE_NAMES[task.atomic], reach(task) if Part.REACH in parts else {}, premises=premises(task) if Part.PREMISES in parts else {}, reach_n=min(task.n, REACH_BACKENDS))
    rep.seconds = time.monotonic() - start
    return rep


def joined(halves: list[VacuityReport]) -> VacuityReport:
    """One mode's report from its parts' reports (seconds: their sum)."""
    first = halves[0]
    return VacuityReport(first.mode, {k: v for h in halves for k, v in h.reached.items()}, max(h.reach_n for h in halves), {k: v for h in halves for k, v in h.premises.items()}, sum(h.seconds for h in halves))


def resolve(reports: list[VacuityReport]) -> list[VacuityReport]:
    """The reports with each single-writes result 'as atomic' replaced by the atomic report's result for that kind
    (e.g. 'sat as atomic'); with no atomic report among them it stays unresolved, which failures() counts."""
    atomic = next((r for r in reports if r.mode == MODE_NAMES[True]), None)
    if atomic is None:
        return reports
    return [replace(r, premises={k: f"{atomic.premises.get(k, 'unchecked')} {SAME_AS_ATOMIC}" if v == SAME_AS_ATOMIC else v for k, v in r.premises.items()}) for r in reports]
