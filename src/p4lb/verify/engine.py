"""The proof engine: bounded model checking for minimal counterexamples, invariant induction for unbounded proofs."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import z3

from p4lb.model.config import table_fields
from p4lb.model.design import make_design
from p4lb.model.errors import ModelError
from p4lb.model.ops import Fail, Heal, Scale, Target, Write, op_between
from p4lb.model.p4lb import P4LB, Variant
from p4lb.model.packet import Packet
from p4lb.model.pool import MAX_WEIGHT, Pool
from p4lb.model.spec import Prop
from p4lb.model.trace import OpStep, Step, Trace, WriteStep
from p4lb.verify.encoding import SERVICE, StepEnc, Sym, equal
from p4lb.verify.errors import ReplayError
from p4lb.verify.invariants import Watched, clause_names, clauses_at, conj, terms, watched_clauses
from p4lb.verify.p4lb_enc import P4lbEncoding
from p4lb.verify.properties import Witness, bad
from p4lb.verify.results import QUERY_TIMEOUT_MS, Result, Verdict
from p4lb.verify.seed_enc import SeedEncoding

log = logging.getLogger(__name__)

Encoding = SeedEncoding | P4lbEncoding
SEARCH_CANDIDATES = 1
SEARCH_TABLE = (8, 1, 1)  # run searches on a multi-way design: the one-way table of 256 places (with 2 ways of single places, P5's mutant took 300 s+)
PREFERENCE_TIMEOUT_MS = 3_000  # a readability preference (strict flags and times) is dropped if it cannot be decided quickly


@dataclass(frozen=True)
class Task:
    """What to check: a design (or mutant) on N backends, one property, how deep to search."""

    design: str
    n: int
    prop: Prop
    variant: Variant = P4LB
    max_depth: int = 8
    idle_timeout_us: int = 60_000_000
    flow_table: tuple[int, int, int] | None = None  # (bits, ways, bucket) for p4lb; None: the default (one-way) table

    @property
    def atomic(self) -> bool:
        """P7 runs operations write by write; every other property runs them atomically."""
        return self.prop is not Prop.P7

    def encoding(self, real_hash: bool, follow_planner: bool = False) -> Encoding:
        """The Z3 transition system (follow_planner: commits of weight-1 groups in the model planner's order)."""
        d = make_design(self.design, self.n, self.variant, idle_timeout_us=self.idle_timeout_us, **table_fields(self.flow_table))
        if d.is_seed:
            return SeedEncoding(d.cfg, real_hash=real_hash)
        return P4lbEncoding(d.cfg, self.variant, real_hash=real_hash, follow_planner=follow_planner)

    def searchable(self, n: int) -> Task:
        """This task for a run search (BMC): at most n backends, and a table whose flows have at most
        SEARCH_CANDIDATES places (a refusal needs every place of a flow open: 32 flows at 4 x 8, too deep to unroll)."""
        small = replace(self, n=min(self.n, n))
        if self.design == "seed":
            return small
        shape = make_design(self.design, self.n, self.variant, **table_fields(self.flow_table)).cfg.shape
        return small if shape.ways * shape.bucket <= SEARCH_CANDIDATES else replace(small, flow_table=SEARCH_TABLE)

    @property
    def label(self) -> str:
        """seed, p4lb, or the mutant's name."""
        return self.design if self.design == "seed" else self.variant.name()


def _solver() -> z3.Solver:
    s = z3.Solver()
    s.set("timeout", QUERY_TIMEOUT_MS)
    return s


# ---- bounded model checking ------------------------------------------------------------------------------

CLIENT_NET = 0x0A000100  # 10.0.1.0/24, the seed's client subnet
PLAIN_FLAGS = (0x02, 0x10, 0x18, 0x11, 0x04, 0x14)  # SYN, ACK, PSH|ACK, FIN|ACK, RST, RST|ACK


def _plain_packet(e: StepEnc, depth: int, strict: bool) -> list[z3.BoolRef]:
    """Readable packets: clients in 10.0.1.0/24 with ephemeral ports; if strict, everyday flags and t = 1 ms per step."""
    p = e.pkt
    out = [z3.Extract(31, 8, p.src_ip) == CLIENT_NET >> 8, z3.UGE(z3.Extract(7, 0, p.src_ip), 2), z3.ULE(z3.Extract(7, 0, p.src_ip), 254), z3.UGE(p.src_port, 1024)]
    if strict:
        out += [z3.Or(*[p.flags == f for f in PLAIN_FLAGS]), p.t == 1000 * depth]
    return out


def _plain_op(enc: Encoding, s: Sym, e: StepEnc, tag: str) -> list[z3.BoolRef]:
    """Operator actions a person would do: one fail/heal/drain/undrain, a scale to 1..N, or one backend's weight."""
    if isinstance(enc, SeedEncoding):
        return [z3.Implies(e.inputs["kind"] == 1, z3.UGE(e.inputs["k"], 1))]
    old = s.spec
    new = enc.new_sets(tag)
    b = z3.BitVec(f"plainb_{tag}", 8)
    x = z3.Bool(f"plainx_{tag}")
    one = z3.And(z3.UGE(b, 1), z3.ULE(b, enc.n))
    same_w = new["weight"] == old["weight"]
    flip_h = z3.And(one, new["healthy"] == z3.Store(old["healthy"], b, x), new["active"] == old["active"], new["draining"] == old["draining"], same_w)
    flip_d = z3.And(one, new["draining"] == z3.Store(old["draining"], b, x), new["active"] == old["active"], new["healthy"] == old["healthy"], same_w)
    wv = z3.BitVec(f"plainw_{tag}", 8)
    same_sets = z3.And(*[new[k] == old[k] for k in ("active", "healthy", "draining")])
    reweight = z3.And(one, z3.UGE(wv, 1), z3.ULE(wv, MAX_WEIGHT), new["weight"] == z3.Store(old["weight"], b, wv), same_sets)
    scales = []
    for k in range(1, enc.n + 1):
        arr = old["active"]
        for i in range(1, enc.n + 1):
            arr = z3.Store(arr, z3.BitVecVal(i, 8), z3.BoolVal(i <= k))
        scales.append(new["active"] == arr)
    scale = z3.And(z3.Or(*scales), new["healthy"] == old["healthy"], new["draining"] == old["draining"], same_w)
    return [z3.Implies(z3.Or(e.inputs["kind"] == 1, e.inputs["kind"] == 2), z3.Or(flip_h, flip_d, scale, reweight))]


class _Unroll:
    """An incremental unrolling of one encoding, its commits in the planner's order (so a run replays on the model).

    `others`: the steps include other services' packets (non-vacuity's search); bounded model checking leaves them
    out, so that every trace it finds is one service's run and replays on the model."""

    def __init__(self, task: Task, real_hash: bool, others: bool = False) -> None:
        self.others = others
        self.enc = task.encoding(real_hash, follow_planner=True)
        self.states = [self.enc.fresh("s0")]
        self.steps: list[StepEnc] = []
        self.plain: list[list[z3.BoolRef]] = [[], [], []]  # strict, addresses only, none
        self.solver = _solver()
        self.solver.add(self.enc.init(self.states[0]), SERVICE == 0)  # traces of service 0, as a default config replays them (the proofs: any id)
        self.task = task

    def extend(self) -> z3.BoolRef:
        """Add one step; return its 'bad' formula."""
        depth = len(self.steps) + 1
        tag = f"d{depth}"
        self.states.append(self.enc.fresh(f"s{depth}"))
        e = self.enc.step(self.states[-2], self.states[-1], tag, self.task.atomic, self.others)
        self.steps.append(e)
        self.solver.add(e.trans)
        pkt = e.is_packet
        self.plain[0] += [z3.Implies(pkt, c) for c in _plain_packet(e, depth, True)] + _plain_op(self.enc, self.states[-2], e, tag)
        self.plain[1] += [z3.Implies(pkt, c) for c in _plain_packet(e, depth, False)]
        w = Witness.fresh(tag)
        return bad(self.task.prop, self.states[-2], self.states[-1], e, w, self.enc.n, self.enc.timeout)

    def check(self, bad_now: z3.BoolRef, level: int) -> z3.CheckSatResult:
        """Is 'bad at the last step' reachable, under the readability constraints of `level` and weaker."""
        self.solver.push()
        self.solver.add(bad_now, *[c for lv in range(level, 2) for c in self.plain[lv]])
        self.solver.set("timeout", PREFERENCE_TIMEOUT_MS if level < 2 else QUERY_TIMEOUT_MS)
        r = self.solver.check()
        self.model = self.solver.model() if r == z3.sat else None
        self.reason = self.solver.reason_unknown() if r == z3.unknown else ""
        self.solver.pop()
        return r


def bmc(task: Task, budget_s: float | None = None) -> Result:
    """Shortest run breaking the property: a hash-agnostic screen per depth, then BMv2's crc16 for real collisions."""
    start = time.monotonic()
    screen, real = _Unroll(task, real_hash=False), _Unroll(task, real_hash=True)
    for depth in range(1, task.max_depth + 1):
        if budget_s is not None and time.monotonic() - start > budget_s:
            return Result(task.label, task.prop, Verdict.UNKNOWN, time.monotonic() - start, f"no counterexample up to depth {depth - 1} within {budget_s:.0f} s")
        bad_screen, bad_real = screen.extend(), real.extend()
        r = screen.check(bad_screen, 2)
        if r == z3.unsat:
            continue
        unknown = screen.reason if r == z3.unknown else ""
        timed_out = False
        for level in (0, 1, 2):
            if level == 1 and timed_out:
                continue  # the strict preference timed out: the weaker one did too wherever measured (P5's mutant: 3 s each)
            r = real.check(bad_real, level)
            timed_out = r == z3.unknown
            if r == z3.sat:
                trace = extract(task, real.enc, real.model, real.states, real.steps)
                return Result(task.label, task.prop, Verdict.REFUTED, time.monotonic() - start, f"depth {depth}", trace)
            if r == z3.unknown and level == 2:
                unknown = real.reason
        if unknown:
            return Result(task.label, task.prop, Verdict.UNKNOWN, time.monotonic() - start, f"solver: {unknown} at depth {depth}")
    return Result(task.label, task.prop, Verdict.UNKNOWN, time.monotonic() - start, f"no counterexample up to depth {task.max_depth}")


def _val(m: z3.ModelRef, t: z3.ExprRef) -> int:
    return int(m.eval(t, model_completion=True).as_long())


def _bool(m: z3.ModelRef, t: z3.ExprRef) -> bool:
    return bool(z3.is_true(m.eval(t, model_completion=True)))


def _set(m: z3.ModelRef, arr: z3.ExprRef, n: int) -> frozenset[int]:
    return frozenset(b for b in range(1, n + 1) if _bool(m, arr[z3.BitVecVal(b, 8)]))


def _pool(m: z3.ModelRef, spec: dict[str, z3.ExprRef], n: int) -> Pool:
    weights = tuple(_val(m, spec["weight"][z3.BitVecVal(b, 8)]) for b in range(1, n + 1))
    return Pool(n, _set(m, spec["active"], n), _set(m, spec["healthy"], n), _set(m, spec["draining"], n), weights)


def extract(task: Task, enc: Encoding, m: z3.ModelRef, states: list[Sym], steps: list[StepEnc]) -> Trace:
    """Turn a satisfying assignment into a concrete trace of packets and controller steps."""
    n = enc.n
    out: list[Step] = []
    for i, e in enumerate(steps):
        kind = _val(m, e.inputs["kind"])
        post = states[i + 1]
        if kind == 0:
            p = e.pkt
            out.append(Packet(_val(m, p.src_ip), _val(m, p.src_port), _val(m, p.flags), _val(m, p.t), _val(m, p.service)))
        elif isinstance(enc, SeedEncoding):
            out.append(OpStep(_seed_op(m, e)))
        else:
            out.append(_p4lb_op(m, task, kind, _pool(m, states[i].spec, n), post, e, n))
    return Trace(task.design, n, task.variant, Pool.initial(n), out, task.prop, len(out) - 1, task.idle_timeout_us, task.flow_table)


def _seed_op(m: z3.ModelRef, e: StepEnc) -> Scale | Fail | Heal:
    kind = _val(m, e.inputs["kind"])
    if kind == 1:
        return Scale(_val(m, e.inputs["k"]))
    b = _val(m, e.inputs["b"])
    return Fail(b) if _bool(m, e.inputs["fail"]) else Heal(b)


def _p4lb_op(m: z3.ModelRef, task: Task, kind: int, before: Pool, post: Sym, e: StepEnc, n: int) -> OpStep | WriteStep:
    pool = _pool(m, post.spec, n)
    if task.atomic:
        return OpStep(op_between(before, pool))
    if kind == 2:
        return WriteStep(Write(Target.NOOP, (), 0), pool)
    if kind == 1:
        return WriteStep(Write(Target.VIP, (), int(_bool(m, post.sw["version"]))), pool)
    tag = e.pkt.src_ip.decl().name().removeprefix("src_")
    ver = int(_bool(m, z3.Bool(f"wver_{tag}")))
    what = _val(m, z3.BitVec(f"what_{tag}", 2))
    idx, val = _val(m, z3.BitVec(f"widx_{tag}", 8)), _val(m, z3.BitVec(f"wval_{tag}", 8))
    if what == 0:
        return WriteStep(Write(Target.RR_MEMBER, (ver, idx), val))
    return WriteStep(Write(Target.RR_GROUP if what == 1 else Target.RR_NEXT, (ver,), val))


def replay(trace: Trace) -> list[Prop]:
    """Run a trace on the executable model; the properties broken at its last step."""
    try:
        run = trace.run()
    except ModelError as exc:
        raise ReplayError(f"trace does not run on the executable model: {exc}") from exc
    last = run.results[-1]
    return [p for p, _ in last.violations]


# ---- induction -----------------------------------------------------------------------------------------


@dataclass
class InductionReport:
    """Whether the invariant holds initially and is preserved."""

    ok: bool
    seconds: float
    clauses: int
    failed: str = ""
    shared: tuple[str, ...] = ()  # kinds of step left to the atomic mode's check (the same transitions)


SHARED_BRANCHES = ("packet", "other service")  # steps that are the same transition in both modes of the controller


def check_invariant(task: Task, shared_elsewhere: bool = False) -> InductionReport:
    """Init => Inv, and for each kind of step and each clause, Inv /\\ step => clause' at fresh watched terms.

    `shared_elsewhere` (single writes, when the atomic mode's invariant is checked too): the packet steps and other
    services' packets are shown to be the very transitions of the atomic mode (same guard, same post-state), whose
    check covers them; only the writes are checked here. The caller must combine the two reports (combined())."""
    start = time.monotonic()
    enc = task.encoding(real_hash=False)
    assert isinstance(enc, P4lbEncoding)
    s0, s1 = enc.fresh("a"), enc.fresh("b")
    watched = Watched.fresh(enc)
    names = clause_names(enc)
    solver = _solver()
    solver.add(enc.init(s0), z3.Not(conj(watched_clauses(enc, s0, watched))))
    if (r := solver.check()) != z3.unsat:
        return InductionReport(False, time.monotonic() - start, len(names), f"initiation: {r}")
    e = enc.step(s0, s1, "i", task.atomic)
    w = Witness.fresh("i")
    positions, backends, keys, slots = terms(enc, s0, e, w, watched, occupants=False)
    pre = conj(clauses_at(enc, s0, positions, backends, keys, slots))
    skip = _same_as_atomic(enc, s0, s1, e) if shared_elsewhere and not task.atomic else set()
    for branch in (b for b in e.branches if b.name not in skip):
        post = Sym(branch.sw, branch.spec)
        solver = _solver()
        solver.add(pre, branch.guard_at(positions, backends))
        if (broken := _breaks(solver, watched_clauses(enc, post, watched))) is not None:
            name, r = broken
            return InductionReport(False, time.monotonic() - start, len(names), f"{branch.name} step breaks '{name}': {r}")
    return InductionReport(True, time.monotonic() - start, len(names), shared=tuple(sorted(skip)))


def _breaks(solver: z3.Solver, clauses: list[tuple[str, z3.BoolRef]]) -> tuple[str, z3.CheckSatResult] | None:
    """None if the solver's premises imply every clause: one query for all (Z3 shares their work: the packet step's
    12 clauses take 13 s together, 15 s one by one); if that is not unsat, one query per clause: the first clause
    not shown and its answer, or None if each is shown (the joint query had only timed out)."""
    solver.push()
    solver.add(z3.Not(z3.And(*[c for _, c in clauses])))
    together = solver.check()
    solver.pop()
    if together == z3.unsat:
        return None
    for name, clause in clauses:
        solver.push()
        solver.add(z3.Not(clause))
        r = solver.check()
        solver.pop()
        if r != z3.unsat:
            return name, r
    return None


def _same_as_atomic(enc: P4lbEncoding, s0: Sym, s1: Sym, e: StepEnc) -> set[str]:
    """The SHARED_BRANCHES of `e` that are, for every state, the atomic mode's same-named branch."""
    atomic = {b.name: b for b in enc.step(s0, s1, "i", atomic=True).branches}
    same = set()
    for b in e.branches:
        if b.name in SHARED_BRANCHES and b.name in atomic:
            a = atomic[b.name]
            solver = _solver()
            solver.add(z3.Not(z3.And(b.guard == a.guard, equal(b.sw, a.sw), equal(b.spec, a.spec))))
            if solver.check() == z3.unsat:
                same.add(b.name)
    return same


def combined(reports: dict[bool, InductionReport]) -> dict[bool, InductionReport]:
    """Each mode's report; a mode that left its shared steps to the atomic mode fails if that one failed."""
    atomic = reports.get(True)
    out = dict(reports)
    for mode, r in reports.items():
        if r.shared and (atomic is None or not atomic.ok):
            why = "no atomic-mode check" if atomic is None else f"atomic mode: {atomic.failed}"
            out[mode] = replace(r, ok=False, failed=f"{', '.join(r.shared)} steps are checked as in the atomic mode ({why})")
    return out


# OWN_STEPS: P1-P8's queries leave other services' packets out of the step. Every violation they look for is a step
# of this service (properties.bad is `e.is_packet /\ ...`; P7's, a packet after a write), which another service's
# packet is not: with or without that branch the query is the same (tests/test_isolation.py checks it). The invariant
# is checked with that branch (check_invariant), so it holds whatever other services do; P9 (verify.isolation)
# is the query about that branch.


def induction_premises(enc: P4lbEncoding, s0: Sym, s1: Sym, e: StepEnc, w: Witness, watched: Watched, occupants: bool, rely: bool = False) -> list[z3.BoolRef]:
    """Inv /\\ T /\\ Inv': the invariant's instances before the step (with `occupants`: who held each candidate place,
    which P8 reads), the step, and the instances after it; with `rely`, K0's too (the queries whose step includes other
    services' packets: P9's; the others may leave them out, any subset of the invariant's instances being sound)."""
    pre_terms = terms(enc, s0, e, w, watched, occupants)
    post_terms = terms(enc, s1, e, w, watched, occupants=False)
    return [conj(clauses_at(enc, s0, *pre_terms, rely=rely)), e.trans, conj(clauses_at(enc, s1, *post_terms, rely=rely))]


def prove_together(tasks: list[Task], also: tuple[Prop, ...] = ()) -> list[Result] | None:
    """One induction query for several properties of one mode: Inv /\\ T /\\ Inv' /\\ (bad_1 \\/ .. \\/ bad_k) unsat
    proves each (with P8's instances of the invariant for all if P8 is among them: every instance is implied by the
    invariant). Z3 shares the premises' work: the 8 atomic-mode properties take about half their separate queries'
    time. None if the query is not unsat: prove them one by one, for a verdict (and a counterexample) per property.
    `also`: properties of another mode whose bad steps this mode's transition is checked to take the same way
    (bad_steps_as_atomic): they join the disjunction, and their results follow the tasks'."""
    if not tasks:
        return []
    start = time.monotonic()
    first = tasks[0]
    if any((t.design, t.n, t.variant, t.atomic, t.flow_table) != (first.design, first.n, first.variant, first.atomic, first.flow_table) for t in tasks):
        raise ValueError("prove_together: the tasks must share design, N, variant, mode and table")
    enc = first.encoding(real_hash=False)
    assert isinstance(enc, P4lbEncoding)
    s0, s1 = enc.fresh("a"), enc.fresh("b")
    e = enc.step(s0, s1, "p", first.atomic, others=False)  # see OWN_STEPS
    w, watched = Witness.fresh("p"), Watched.fresh(enc)
    solver = _solver()
    solver.add(*induction_premises(enc, s0, s1, e, w, watched, occupants=any(t.prop is Prop.P8 for t in tasks)))
    props = [*(t.prop for t in tasks), *also]
    solver.add(z3.Or(*[bad(p, s0, s1, e, w, enc.n, enc.timeout) for p in props]))
    if solver.check() != z3.unsat:
        return None
    seconds = time.monotonic() - start
    return [Result(first.label, p, Verdict.PROVEN, seconds, f"one query, {len(props)} properties") for p in props]


def bad_steps_as_atomic(task: Task) -> bool:
    """For a single-writes task: every step that breaks its property is a step of the atomic mode's transition that
    breaks it too (bad_single => bad_atomic /\\ T_single = T_atomic, for every state and input; the bad steps of
    every property are packet steps, which both modes share). The invariant is one formula for both modes and
    inductive in each, so an atomic-mode proof of the property (Inv /\\ T_atomic /\\ Inv' => not bad_atomic) is
    a proof here. False if Z3 does not show it: the property is then proven in its own mode."""
    enc = task.encoding(real_hash=False)
    assert isinstance(enc, P4lbEncoding)
    s0, s1 = enc.fresh("a"), enc.fresh("b")
    single, atomic = (enc.step(s0, s1, "p", mode, others=False) for mode in (False, True))
    w = Witness.fresh("p")
    b_single, b_atomic = (bad(task.prop, s0, s1, e, w, enc.n, enc.timeout) for e in (single, atomic))
    solver = _solver()
    solver.add(b_single, z3.Not(z3.And(b_atomic, single.trans == atomic.trans)))
    return bool(solver.check() == z3.unsat)


def prove(task: Task) -> Result:
    """Inv /\\ T /\\ Inv' => not bad(prop): the property holds on every reachable step (given the invariant)."""
    start = time.monotonic()
    enc = task.encoding(real_hash=False)
    assert isinstance(enc, P4lbEncoding)
    s0, s1 = enc.fresh("a"), enc.fresh("b")
    e = enc.step(s0, s1, "p", task.atomic, others=False)  # see OWN_STEPS
    w = Witness.fresh("p")
    watched = Watched.fresh(enc)
    solver = _solver()
    solver.add(*induction_premises(enc, s0, s1, e, w, watched, occupants=task.prop is Prop.P8))  # the others need fewer instances
    solver.add(bad(task.prop, s0, s1, e, w, enc.n, enc.timeout))
    answer = solver.check()
    seconds = time.monotonic() - start
    if answer == z3.unsat:
        return Result(task.label, task.prop, Verdict.PROVEN, seconds, "")
    why = "invariant too weak for this property" if answer == z3.sat else f"solver: {solver.reason_unknown()}"
    return Result(task.label, task.prop, Verdict.UNKNOWN, seconds, why)
