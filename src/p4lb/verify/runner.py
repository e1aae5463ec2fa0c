"""Run the prover over designs x properties and collect typed results."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from p4lb.model.design import make_design
from p4lb.model.p4lb import P4LB
from p4lb.model.spec import Prop
from p4lb.verify.binding import BindingResult, bind_all
from p4lb.verify.bmv2.cex import save_counterexample
from p4lb.verify.bmv2.equivalence import EquivalenceResult, check_equivalence
from p4lb.verify.bmv2.equivalence import Verdict as Equivalence
from p4lb.verify.counts import STEP as COUNTS_STEP
from p4lb.verify.counts import prove_open_counts
from p4lb.verify.engine import InductionReport, Task, bad_steps_as_atomic, bmc, check_invariant, combined, prove, prove_together, replay
from p4lb.verify.errors import ReplayError
from p4lb.verify.isolation import STEP as ISOLATION_STEP
from p4lb.verify.isolation import prove_isolation
from p4lb.verify.mutants import MUTANTS
from p4lb.verify.results import Result, Verdict
from p4lb.verify.vacuity import Part, VacuityReport, check_vacuity, joined, resolve

log = logging.getLogger(__name__)
T = TypeVar("T")
MODES = {True: "atomic operations", False: "operations as single writes"}
MUTANT_BACKENDS = 4  # mutants are searched for counterexamples at N = 4: small, readable traces
SLOW_MUTANTS = (Prop.P5, Prop.P3)  # their searches take 10 and 3 s (the others about 1): submitted early
FALLBACK_SEARCH_S = 5.0  # p4lb not proven: how long to look for a counterexample before reporting 'unknown' (a failure)


@dataclass
class Report:
    """Everything one prover run found."""

    n: int
    results: list[Result] = field(default_factory=list)
    mutants: list[Result] = field(default_factory=list)
    invariants: dict[str, InductionReport] = field(default_factory=dict)
    bindings: list[BindingResult] = field(default_factory=list)
    compiled: list[EquivalenceResult] = field(default_factory=list)
    compiled_cex: dict[str, str] = field(default_factory=dict)  # program -> its saved counterexample (replay on BMv2)
    vacuity: list[VacuityReport] = field(default_factory=list)
    designs: list[str] = field(default_factory=list)
    props: list[Prop] = field(default_factory=list)
    seconds: float = 0.0

    def failures(self) -> list[str]:
        """Why the run should exit non-zero: a p4lb verdict not proven, any unknown, a mutant not refuted."""
        bad = [f"{r.design} {r.prop.name}: {r.verdict.value}" for r in self.results if r.verdict is Verdict.UNKNOWN]
        bad += [f"p4lb {r.prop.name}: {r.verdict.value}" for r in self.results if r.design == "p4lb" and r.verdict is Verdict.REFUTED]
        bad += [f"mutant {r.design} {r.prop.name}: {r.verdict.value} (must be refuted)" for r in self.mutants if r.verdict is not Verdict.REFUTED]
        bad += [f"{b.design} {b.step}: model and encoding {b.verdict.value} ({b.detail})" for b in self.bindings if b.verdict is not Verdict.PROVEN]
        bad += [f"{c.program}.json and the model: {c.verdict.value}" for c in self.compiled if c.verdict is not Equivalence.EQUIVALENT]
        bad += [f for v in self.vacuity for f in v.failures()]
        return bad

    def summary(self) -> str:
        """One line saying only what this run checked."""
        steps = [b for b in self.bindings if b.step not in (COUNTS_STEP, ISOLATION_STEP)]
        parts = [f"model = encoding for {len(steps)} kinds of step"] if steps else []
        parts += [f"{b.step}: {b.verdict.value}" if b.step == ISOLATION_STEP else "backend_open = OPEN places" for b in self.bindings if b.step in (COUNTS_STEP, ISOLATION_STEP)]
        parts += [f"{c.program}.json {c.verdict.value}" for c in self.compiled]
        props = ", ".join(p.name for p in self.props)
        for d in self.designs:
            rs = [r for r in self.results if r.design == d]
            want = Verdict.PROVEN if d == "p4lb" else Verdict.REFUTED
            ok = sum(r.verdict is want for r in rs)
            parts.append(f"{d}: {ok}/{len(rs)} {want.value} ({props})")
        if self.mutants:
            parts.append(f"mutants: {sum(r.verdict is Verdict.REFUTED for r in self.mutants)}/{len(self.mutants)} refuted")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """JSON form of the whole report."""
        return {
            "backends": self.n,
            "seconds": round(self.seconds, 2),
            "invariants": {k: {"inductive": v.ok, "clauses": v.clauses, "seconds": round(v.seconds, 3), "failed": v.failed, "as_atomic": list(v.shared)} for k, v in self.invariants.items()},
            "results": [r.to_json() for r in self.results],
            "mutants": [r.to_json() for r in self.mutants],
            "compiled": [{"program": c.program, "verdict": c.verdict.value, "seconds": round(c.seconds, 3), "assumptions": list(c.assumptions), "notes": list(c.notes), "counterexample": c.counterexample} for c in self.compiled],
            "vacuity": [{"mode": v.mode, "reached_at_depth": v.reached, "premises": v.premises, "seconds": round(v.seconds, 3)} for v in self.vacuity],
            "bindings": [{"design": b.design, "step": b.step, "verdict": b.verdict.value, "paths": b.paths, "seconds": round(b.seconds, 3), "detail": b.detail} for b in self.bindings],
            "failures": self.failures(),
        }


def check_p4lb(task: Task, invariants: dict[str, InductionReport]) -> Result:
    """Prove with the invariant; if that fails, look for a counterexample."""
    mode = MODES[task.atomic]
    inv = invariants.get(mode)
    if inv is None:
        inv = invariants[mode] = check_invariant(task)
    if inv.ok:
        r = prove(task)
        if r.verdict is Verdict.PROVEN:
            r.detail = f"invariant of {inv.clauses} clause families, induction"
            return r
    small = task.searchable(MUTANT_BACKENDS)  # counterexamples are searched where they are short and fast
    found = bmc(small, budget_s=None if task.variant != P4LB else FALLBACK_SEARCH_S)
    if small.n != task.n:
        found.detail = f"{found.detail} at N = {small.n}"
    if small.flow_table != task.flow_table:
        found.detail = f"{found.detail} on a {small.flow_table[1]}x{small.flow_table[2]} table of 2^{small.flow_table[0]} places"  # type: ignore[index]
    if found.verdict is Verdict.UNKNOWN and not inv.ok:
        found.detail = f"invariant not inductive ({inv.failed}); {found.detail}"
    return found


def check_replay(r: Result) -> Result:
    """A counterexample must break the same property at its last step of the executable model."""
    if r.trace is None:
        return r
    broken = replay(r.trace)
    if r.prop not in broken:
        raise ReplayError(f"{r.design} {r.prop.name}: counterexample does not reproduce on the executable model (broke {broken})")
    return r


def run(designs: list[str], props: list[Prop], n: int, mutants: bool, out_dir: Path | None, max_depth: int = 8, jobs: int | None = None) -> Report:
    """Check every (design, property), and every property's mutant: independent checks run in `jobs` processes."""
    start = time.monotonic()
    report = Report(n, designs=list(designs), props=list(props))
    with _pool(jobs) as pool:
        # longest first, and no check waits for another: the pool's workers stay busy to the end
        tasks = {Task("p4lb", n, p).atomic: Task("p4lb", n, p) for p in props} if "p4lb" in designs else {}  # one invariant check per mode the properties use
        modes = {atomic: [Task("p4lb", n, p, max_depth=max_depth) for p in props if Task("p4lb", n, p).atomic is atomic] for atomic in tasks}
        derived = tuple(modes.get(False, [])) if modes.get(True) else ()  # P7 joins the atomic mode's query if its bad steps are that mode's
        p4lb = "p4lb" in designs
        # the order of submission: the longest checks first (measured at N = 64), so that both workers end together
        compiled = [pool.submit(check_equivalence, "p4lb", n=n)]
        bindings = pool.submit(bind_all, make_design("p4lb", n).cfg, make_design("seed").cfg)
        premises = pool.submit(check_vacuity, Task("p4lb", n, Prop.P1), (Part.PREMISES,)) if p4lb else None  # non-vacuity: the atomic mode's premises
        # each mode's properties in one query, asked before its invariant is known to be inductive: kept only if it is
        together = [(atomic, pool.submit(_together, part, derived if atomic and i == 0 else ())) for atomic, group in modes.items() if atomic or not derived for i, part in enumerate(_parts(group))]
        runs = {atomic: pool.submit(check_invariant, t, not atomic and True in tasks) for atomic, t in tasks.items()}  # packet steps once
        mutant_runs = {prop: pool.submit(_check_mutant, prop, max_depth) for prop in props if mutants and prop in SLOW_MUTANTS}
        reach = pool.submit(check_vacuity, Task("p4lb", n, Prop.P1), (Part.REACH,)) if p4lb else None  # the atomic mode's runs from deployment
        counts = pool.submit(prove_open_counts, make_design("p4lb", n).cfg)  # backend_open = OPEN places: never wraps
        isolation = pool.submit(prove_isolation, make_design("p4lb", n).cfg)  # P9: other services' packets
        single = pool.submit(check_vacuity, Task("p4lb", n, Prop.P7), tuple(Part)) if p4lb else None  # non-vacuity of single writes
        mutant_runs |= {prop: pool.submit(_check_mutant, prop, max_depth) for prop in props if mutants and prop not in SLOW_MUTANTS}
        compiled.append(pool.submit(check_equivalence, "seed", n=4))
        searches = [pool.submit(_check_mode, [Task(design, n, prop, max_depth=max_depth)], {}) for design in designs if design != "p4lb" for prop in props]
        vacuity = [[premises, reach], [single]] if premises is not None and reach is not None and single is not None else []
        report.invariants = {MODES[atomic]: r for atomic, r in combined({atomic: f.result() for atomic, f in runs.items()}).items()}
        report.bindings, report.compiled = [*bindings.result(), counts.result(), isolation.result()], [c.result() for c in compiled]
        report.compiled_cex = _save_cex(report.compiled, n, out_dir)
        if report.failures():  # the encoding is not the model (or not the program): proofs about it would prove nothing
            log.error("stopping before the proofs: %s", "; ".join(report.failures()))
            pending: list[Future[Any]] = [*(h for v in vacuity for h in v), *mutant_runs.values(), *(f for _, f in together), *searches]
            for f in pending:
                f.cancel()
            report.seconds = time.monotonic() - start
            return report
        by_key = {(r.design, r.prop): r for c in searches for r in c.result()}
        by_key |= {(r.design, r.prop): r for _, f in together for r in _kept(f.result(), report.invariants)}
        missing = [[t for t in group if (t.design, t.prop) not in by_key] for group in modes.values()]  # not proven together: each on its own
        tried = {atomic for atomic, f in together if f.result() is None}  # a together query of theirs is not unsat: not asked again
        fallback = [pool.submit(_check_mode, group, report.invariants, group[0].atomic in tried) for group in missing if group]
        by_key |= {(r.design, r.prop): r for f in fallback for r in f.result()}
        report.results = [_save(by_key[(design, prop)], out_dir) for design in designs for prop in props]
        report.mutants = [_save(mutant_runs[prop].result(), out_dir) for prop in props if prop in mutant_runs]
        report.vacuity = resolve([joined([h.result() for h in v]) for v in vacuity])  # single writes' packet kinds take the atomic mode's results
    for r in report.results:
        log.info("%s %s: %s (%.2fs)", r.design, r.prop.name, r.verdict.value, r.seconds)
    report.seconds = time.monotonic() - start
    return report


def _pool(jobs: int | None) -> Executor:
    """A pool of `jobs` workers (default: one per CPU), each check in a fresh process forked from a server that has
    imported the prover (Z3's time on a query depends on what the process ran before); 1 runs every check here."""
    jobs = jobs or os.cpu_count() or 1
    if jobs == 1:
        return _Inline()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["p4lb.verify.runner"])
    return ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, max_tasks_per_child=1)


def fresh_process(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs) in a fresh process forked from the prover's server, as the prover runs each check (Z3's
    time on a differing JSON query depends on what ran before it in the same process: no_wrap took 15 s alone, over
    300 s after the tests before it in CI)."""
    with _pool(2) as pool:
        return pool.submit(fn, *args, **kwargs).result()


class _Inline(Executor):
    """An executor that runs each call at once, in this process (--jobs 1: one trace of logs, easy debugging)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        f: Future[T] = Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001  (handed to the caller through the future, as a pool would)
            f.set_exception(exc)
        return f


def _check(task: Task, invariants: dict[str, InductionReport]) -> Result:
    """One (design, property): a search for the seed, the proof (or a counterexample) for p4lb; replayed on the model."""
    r = bmc(task) if task.design == "seed" else check_p4lb(task, dict(invariants))
    return check_replay(r)


def _check_mode(tasks: list[Task], invariants: dict[str, InductionReport], tried: bool = False) -> list[Result]:
    """p4lb's properties of one mode: one query for all when the invariant is inductive and it proves them (unless
    `tried`: that query was asked and is not unsat); else each on its own (its proof or counterexample). The seed's
    property: its search."""
    inv = invariants.get(MODES[tasks[0].atomic]) if tasks and tasks[0].design == "p4lb" else None
    if inv is not None and inv.ok and not tried:
        kept = _kept(_together(tasks, ()), invariants)
        if kept:
            return kept
    return [_check(t, invariants) for t in tasks]


def _parts(group: list[Task]) -> list[list[Task]]:
    """A mode's properties in the queries that prove them together: P8 apart (its extra instances of the invariant,
    who held each candidate place, slow the others' query: 12 + 2 s apart, 16 s joined, at N = 64)."""
    return [part for part in ([t for t in group if t.prop is not Prop.P8], [t for t in group if t.prop is Prop.P8]) if part]


@dataclass(frozen=True)
class Together:
    """A _together() query's answer: the mode it ran in, its results, and the single-writes properties that joined it."""

    atomic: bool
    results: list[Result]
    joins: tuple[Prop, ...]


def _together(tasks: list[Task], derived: tuple[Task, ...]) -> Together | None:
    """One mode's properties in one induction query (prove_together), with each `derived` single-writes task whose
    bad steps are shown to be this mode's (bad_steps_as_atomic); None if the query is not unsat. The results stand
    only where the invariants are inductive: _kept() decides, once they are known."""
    joins = tuple(t.prop for t in derived if bad_steps_as_atomic(t))
    results = prove_together(tasks, joins)
    return None if results is None else Together(tasks[0].atomic, results, joins)


def _kept(together: Together | None, invariants: dict[str, InductionReport]) -> list[Result]:
    """The results of a _together() query whose premises hold: its mode's invariant inductive, and for a joined
    single-writes property, that mode's invariant too; none else (those properties are then checked on their own)."""
    inv = invariants.get(MODES[together.atomic]) if together is not None else None
    if together is None or inv is None or not inv.ok:
        return []
    single = invariants.get(MODES[False])
    how = f"invariant of {inv.clauses} clause families, induction"
    note = "; its bad steps are the atomic mode's"
    return [replace(r, detail=f"{how} ({r.detail}{note if r.prop in together.joins else ''})") for r in together.results if r.prop not in together.joins or (single is not None and single.ok)]


def _check_mutant(prop: Prop, max_depth: int) -> Result:
    """The property's mutant must be refuted, with a counterexample that replays on the model."""
    task = Task("p4lb", MUTANT_BACKENDS, prop, MUTANTS[prop], max_depth=max_depth).searchable(MUTANT_BACKENDS)
    found = bmc(task)  # a mutant is meant to be refuted: search first (the invariant and proof attempts would fail anyway)
    return check_replay(found if found.verdict is Verdict.REFUTED else check_p4lb(task, {}))  # else: why it survives


def _save_cex(results: list[EquivalenceResult], n: int, out_dir: Path | None) -> dict[str, str]:
    """Write each differing program's counterexample next to the traces (out/bmv2-cex-*.json), for the BMv2 replay."""
    where = (out_dir or Path("out/traces")).parent
    saved = {}
    for c in results:
        if c.verdict is Equivalence.DIFFERS and c.counterexample is not None:
            saved[c.program] = str(save_counterexample(c, where, n=n if c.program == "p4lb" else 4))
    return saved


def _save(r: Result, out_dir: Path | None) -> Result:
    if r.trace is not None and out_dir is not None:
        path = out_dir / f"{r.design}-{r.prop.name}.json"
        r.trace.save(path)
        r.trace_path = str(path)
    return r
