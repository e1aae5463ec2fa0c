"""The prover proves p4lb, refutes every mutant and the seed with replayable traces, and never passes 'unknown'."""

import json
import os
import subprocess
import sys

import pytest
import z3

from p4lb.model.spec import Prop
from p4lb.verify import engine
from p4lb.verify.engine import Task, bmc, check_invariant, prove, replay
from p4lb.verify.mutants import MUTANTS
from p4lb.verify.results import Result, Verdict
from p4lb.verify.runner import Report, check_p4lb


@pytest.mark.parametrize("n", [4, 64])
@pytest.mark.parametrize("atomic_prop", [Prop.P1, Prop.P7])
def test_invariant_is_inductive(n, atomic_prop):
    assert check_invariant(Task("p4lb", n, atomic_prop)).ok


@pytest.mark.parametrize("prop", list(Prop))
def test_p4lb_proven(prop):
    """Each property on its own query (the prover's path when the one query for all is not unsat), at N = 4. At
    N = 64 every property is proven by `nox -s prove`, which CI runs before the tests and which fails on anything
    not proven; asking it again here took 6 minutes of CI."""
    assert check_p4lb(Task("p4lb", 4, prop), {}).verdict is Verdict.PROVEN


@pytest.mark.parametrize("prop", list(Prop))
def test_each_mutant_is_refuted_on_its_property(prop):
    r = check_p4lb(Task("p4lb", 4, prop, MUTANTS[prop]), {})
    assert r.verdict is Verdict.REFUTED, r.detail
    assert prop in replay(r.trace)


@pytest.mark.parametrize("prop", [Prop.P1, Prop.P4, Prop.P6])
def test_invariant_proof_fails_on_the_mutant(prop):
    task = Task("p4lb", 4, prop, MUTANTS[prop])
    assert not (check_invariant(task).ok and prove(task).verdict is Verdict.PROVEN)


@pytest.mark.parametrize(("prop", "depth"), [(Prop.P1, 5), (Prop.P4, 2), (Prop.P6, 2), (Prop.P8, 2)])
def test_seed_refuted_with_minimal_trace(prop, depth):
    r = bmc(Task("seed", 4, prop))
    assert r.verdict is Verdict.REFUTED and r.detail == f"depth {depth}"
    assert prop in replay(r.trace)


def test_seed_collision_trace_really_collides_under_crc16():
    r = bmc(Task("seed", 4, Prop.P6))
    a, b = r.trace.steps
    design = r.trace.make_design()
    assert a.key != b.key and design.places(a) == design.places(b)


def test_unknown_is_a_failure():
    report = Report(4, [Result("p4lb", Prop.P1, Verdict.UNKNOWN, 0.0, "timeout")])
    assert report.failures()
    report = Report(4, [Result("seed", Prop.P1, Verdict.UNKNOWN, 0.0, "timeout")])
    assert report.failures()


def test_cli_json_and_replay(tmp_path):
    out = subprocess.run([sys.executable, "-m", "p4lb.verify", "prove", "--design", "seed", "-p", "P4", "--no-mutants", "--json", "--out", str(tmp_path)], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    (res,) = data["results"]
    assert res["verdict"] == "refuted" and res["trace_file"]
    rep = subprocess.run([sys.executable, "-m", "p4lb.verify", "replay", res["trace_file"]], capture_output=True, text=True)
    assert rep.returncode == 0 and "P4" in rep.stdout


def test_cli_rejects_bad_property():
    out = subprocess.run([sys.executable, "-m", "p4lb.verify", "prove", "-p", "P9"], capture_output=True, text=True)
    assert out.returncode == 2 and "P1..P8" in out.stdout


def test_a_failed_binding_reports_no_proofs(monkeypatch):
    """The proofs start beside the bindings, but a binding that fails leaves the report without verdicts: proofs
    about an encoding that is not the model would prove nothing."""
    from p4lb.verify import runner  # noqa: PLC0415
    from p4lb.verify.binding import BindingResult  # noqa: PLC0415
    from p4lb.verify.bmv2.equivalence import EquivalenceResult  # noqa: PLC0415
    from p4lb.verify.bmv2.equivalence import Verdict as Equivalence  # noqa: PLC0415
    from p4lb.verify.engine import InductionReport  # noqa: PLC0415

    bad = BindingResult("p4lb", "packet", Verdict.REFUTED, 1, 0.0, "differs on fate")
    monkeypatch.setattr(runner, "bind_all", lambda *a: [bad])
    monkeypatch.setattr(runner, "prove_open_counts", lambda *a: BindingResult("p4lb", "counts", Verdict.PROVEN, 0, 0.0))
    monkeypatch.setattr(runner, "check_equivalence", lambda program, n: EquivalenceResult(program, Equivalence.EQUIVALENT, 0.0, ()))
    monkeypatch.setattr(runner, "check_vacuity", lambda task, parts: runner.VacuityReport("atomic operations"))
    monkeypatch.setattr(runner, "_together", lambda tasks, derived: None)
    monkeypatch.setattr(runner, "prove_isolation", lambda *a: BindingResult("p4lb", "isolation", Verdict.PROVEN, 0, 0.0))
    monkeypatch.setattr(runner, "check_invariant", lambda task, shared=False: InductionReport(True, 0.0, 0))
    monkeypatch.setattr(runner, "_check", lambda task, inv: pytest.fail("a proof's result was used"))
    monkeypatch.setattr(runner, "_check_mutant", lambda prop, depth: pytest.fail("a mutant's result was used"))
    report = runner.run(["p4lb"], [Prop.P1], 4, mutants=False, out_dir=None, jobs=1)
    assert report.results == [] and report.vacuity == []
    assert report.failures() == ["p4lb packet: model and encoding refuted (differs on fate)"]


def test_each_check_runs_in_a_fresh_process():
    """Z3's time on a query depends on the process's history: the pool gives every check a process of its own."""
    from p4lb.verify import runner  # noqa: PLC0415

    with runner._pool(2) as pool:
        pids = [pool.submit(os.getpid).result() for _ in range(3)]
    assert len(set(pids)) == 3 and os.getpid() not in pids


def test_properties_proven_together_or_one_by_one():
    """One query proves the atomic-mode properties together; with a mutant among them it is not unsat, and each
    property gets its own verdict (the mutant's property refuted, with a trace)."""
    from p4lb.verify import runner  # noqa: PLC0415
    from p4lb.verify.engine import prove_together  # noqa: PLC0415

    props = [p for p in Prop if p is not Prop.P7]
    together = prove_together([Task("p4lb", 4, p) for p in props])
    assert together is not None and {r.prop for r in together} == set(props) and {r.verdict for r in together} == {Verdict.PROVEN}
    broken = [Task("p4lb", 4, p, MUTANTS[Prop.P4]) for p in (Prop.P1, Prop.P4)]
    assert prove_together(broken) is None
    inv = {"atomic operations": check_invariant(broken[0])}
    results = {r.prop: r for r in runner._check_mode(broken, inv)}
    assert results[Prop.P4].verdict is Verdict.REFUTED and results[Prop.P4].trace is not None


def test_p7_joins_the_atomic_query_only_when_its_bad_steps_are_that_modes(monkeypatch):
    """P7 (operations as single writes) is proven in the atomic mode's query when Z3 shows every single-writes step
    that breaks it is an atomic-mode step that breaks it, and kept only while both modes' invariants are inductive;
    a single-writes packet step that differs (here: it never takes a SYN) is not derived (P7 gets its own query)."""
    from dataclasses import replace  # noqa: PLC0415

    import z3  # noqa: PLC0415

    from p4lb.verify import runner  # noqa: PLC0415
    from p4lb.verify.engine import InductionReport, bad_steps_as_atomic  # noqa: PLC0415
    from p4lb.verify.p4lb_enc import P4lbEncoding  # noqa: PLC0415

    atomic, single = [Task("p4lb", 4, Prop.P1), Task("p4lb", 4, Prop.P4)], Task("p4lb", 4, Prop.P7)
    together = runner._together(atomic, (single,))
    assert together is not None and together.joins == (Prop.P7,) and together.atomic
    ok, broken = InductionReport(True, 0.0, 12), InductionReport(False, 0.0, 12, "a clause")
    kept = {r.prop: r for r in runner._kept(together, {"atomic operations": ok, "operations as single writes": ok})}
    assert set(kept) == {Prop.P1, Prop.P4, Prop.P7} and "its bad steps are the atomic mode's" in kept[Prop.P7].detail
    assert {r.prop for r in runner._kept(together, {"atomic operations": ok, "operations as single writes": broken})} == {Prop.P1, Prop.P4}
    assert runner._kept(together, {"atomic operations": broken, "operations as single writes": ok}) == []

    step = P4lbEncoding.step

    def no_syn_when_single(self, s, s2, tag, atomic=True, others=True, other_variant=None):
        e = step(self, s, s2, tag, atomic, others, other_variant)
        return e if atomic else replace(e, trans=z3.And(e.trans, z3.Not(z3.And(e.is_packet, e.pkt.syn))))

    monkeypatch.setattr(P4lbEncoding, "step", no_syn_when_single)
    assert not bad_steps_as_atomic(single)
    together = runner._together(atomic, (single,))
    assert together is not None and together.joins == ()


class _Answers:
    """A solver stand-in that gives the listed answers in turn."""

    def __init__(self, answers: list[z3.CheckSatResult]) -> None:
        self.answers = list(answers)

    def push(self) -> None:
        return None

    def pop(self) -> None:
        return None

    def add(self, *_: object) -> None:
        return None

    def check(self) -> z3.CheckSatResult:
        return self.answers.pop(0)


@pytest.mark.parametrize(
    ("answers", "broken"),
    [
        ([z3.unsat], None),  # the joint query shows every clause
        ([z3.sat, z3.unsat, z3.sat], ("b", z3.sat)),  # it does not: the clause broken is named
        ([z3.unknown, z3.unsat, z3.unsat], None),  # it gave up, and each clause is shown alone
        ([z3.unknown, z3.unknown], ("a", z3.unknown)),  # it gave up, and so did the first clause alone
    ],
)
def test_the_invariant_clauses_are_checked_together_then_one_by_one(answers: list[z3.CheckSatResult], broken: tuple[str, z3.CheckSatResult] | None) -> None:
    """check_invariant asks for all of a step's clauses in one query, and one by one only when that is not unsat."""
    x, y = z3.Bools("x y")
    assert engine._breaks(_Answers(answers), [("a", x), ("b", y)]) == broken
