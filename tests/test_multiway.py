"""The multi-way flow table (ways x bucket candidates per flow): model, symbolic helpers, encoding and proofs agree.

The compiled program still has the one-way table; these tests hold the multi-way design to the same checks
the one-way table passes in `nox -s prove`: the model's code equals the encoding for every state and packet
(at the 4 x 8, 2^20-place shape too), model runs break no property, the model and the encoding agree step by
step, and P1-P8 are proven by induction with the mutants refuted.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import z3
from hypothesis import given, settings

from p4lb.model import p4lb as p4lb_model
from p4lb.model.design import Design, make_design
from p4lb.model.flowtable import argmin, at, first
from p4lb.model.p4lb import P4LB, FlowEntry, SlotState, Variant
from p4lb.model.pool import Pool
from p4lb.model.spec import Prop
from p4lb.verify.binding import bind_p4lb_packet
from p4lb.verify.crosscheck import Abstract, Concrete, Coverage, colliding_keys, compare, concretize
from p4lb.verify.engine import Task, check_invariant, prove
from p4lb.verify.results import Verdict
from p4lb.verify.symbolic import Explorer, SymBool, SymBV, SymOps
from test_spec_runs import runs

TIMEOUT = 5000
SMALL = (3, 2, 2)  # 8 places: 2 ways x buckets of 2, 2 buckets per way
# runs need full candidate sets to reach refusals: 4 places, so 2 ways of 2 single-place buckets, or 2 ways of one
# 2-place bucket (every key has all 4 places: the least-loaded choice between the ways decides)
TINY = {"2 ways x 1 (4 places)": (2, 2, 1), "2 ways x 2 (4 places)": (2, 2, 2)}


def design(shape: tuple[int, int, int]) -> Design:
    """p4lb with N = 4, a 5 ms idle timeout and the given (bits, ways, bucket) table."""
    return make_design("p4lb", 4, flow_table_bits=shape[0], flow_ways=shape[1], flow_bucket=shape[2], idle_timeout_us=TIMEOUT)


def keys(shape: tuple[int, int, int]) -> tuple[int, ...]:
    """Nine client keys, grouped by their first candidate."""
    return colliding_keys(design(shape), (5, 4) if shape[2] == 1 else (9,))


def _eval(x: object) -> int:
    term = x.term if isinstance(x, SymBV | SymBool) else x  # type: ignore[union-attr]
    v = z3.simplify(term)
    return int(z3.is_true(v)) if z3.is_bool(v) else v.as_long()  # type: ignore[union-attr]


def test_symbolic_selection_equals_plain_python():
    """SymOps (the branch-free first / argmin / at) gives what the model's plain helpers give, on random inputs."""
    ops, rng = SymOps(Explorer()), random.Random(7)
    for _ in range(300):
        flags = [rng.random() < 0.3 for _ in range(rng.randint(1, 9))]
        values = [rng.randint(0, 4) for _ in range(rng.randint(1, 6))]
        i = rng.randrange(len(values))
        sym_flags = [SymBool(z3.BoolVal(f), ops.ex) for f in flags]
        sym_values = [SymBV(z3.BitVecVal(v, 4), ops.ex) for v in values]
        assert _eval(ops.first(sym_flags)) == first(flags)
        assert _eval(ops.argmin(sym_values)) == argmin(values)
        assert _eval(ops.at(sym_values, SymBV(z3.BitVecVal(i, 8), ops.ex))) == at(values, i)
        assert _eval(ops.at(sym_flags, SymBV(z3.BitVecVal(i % len(flags), 8), ops.ex))) == flags[i % len(flags)]


@pytest.mark.parametrize(("bits", "ways", "bucket"), [SMALL, (20, 4, 8)], ids=["2x2", "4x8 at 2^20"])
def test_model_code_equals_encoding(bits: int, ways: int, bucket: int):
    """p4lb_packet run symbolically (one path per outcome) = P4lbEncoding.packet, for every state and packet."""
    cfg = make_design("p4lb", 8, flow_table_bits=bits, flow_ways=ways, flow_bucket=bucket).cfg
    r = bind_p4lb_packet(cfg)
    assert r.verdict is Verdict.PROVEN, r
    assert r.paths < 200  # the selection helpers keep paths linear in the outcomes, not the places


def _stale_is_held(e: FlowEntry, now: int, idle_timeout_us: int, var: Variant) -> bool:
    return e.state != SlotState.FREE  # an expired or closing flow's place refuses SYNs too


def _closing_any_key(entries: list[FlowEntry], key: int) -> int:
    return first([(e.state != SlotState.FREE) & ((e.key == key) | (e.state == SlotState.CLOSING)) for e in entries])


@pytest.mark.parametrize(("name", "bug"), [("held", _stale_is_held), ("find", _closing_any_key)], ids=["held: stale places refuse", "find: CLOSING of any key"])
def test_a_model_bug_is_refuted_by_the_binding(monkeypatch: pytest.MonkeyPatch, name: str, bug: Callable[..., object]):
    """The binding can fail: the model's code with a realistic bug (its function replaced) differs from the encoding,
    and the check names what differs (the prover's speed-ups of this check must keep it able to say so)."""
    cfg = make_design("p4lb", 8, flow_table_bits=SMALL[0], flow_ways=SMALL[1], flow_bucket=SMALL[2]).cfg
    monkeypatch.setattr(p4lb_model, name, bug)
    r = bind_p4lb_packet(cfg)
    assert r.verdict is Verdict.REFUTED, r
    assert r.detail.startswith("differs on "), r.detail


def generated(name: str, examples: int, sizes: tuple[int, int], check: Callable[[Design, Concrete], None]) -> Coverage:
    """Run `check` on generated runs made concrete on the named tiny table; the coverage they reached."""
    cov, d, k = Coverage(), design(TINY[name]), keys(TINY[name])

    @settings(max_examples=examples, derandomize=True)
    @given(runs(4, *sizes))
    def run(abstract: list[Abstract]) -> None:
        c = concretize(d, Pool.initial(4), abstract, k)
        cov.add(c.reached)
        check(d, c)

    run()
    return cov


def _clean(d: Design, c: Concrete) -> None:
    bad = [(i, r.step, r.violations) for i, r in enumerate(c.run.results) if r.violations]
    assert not bad, bad[0]


def _agree(d: Design, c: Concrete) -> None:
    compare(d, Pool.initial(4), c.steps, list(range(1 << d.cfg.flow_table_bits)))


@pytest.mark.parametrize("name", TINY)
def test_model_runs_break_no_property_and_refuse_only_when_full(name: str, capsys: pytest.CaptureFixture[str]):
    """Generated runs are clean for model.spec (P8: refused only when every candidate holds an open flow); refusals are reached."""
    cov = generated(name, 200, (20, 60), _clean)
    with capsys.disabled():
        print("\n" + cov.table(f"model.spec on p4lb with a {name} table"))
    assert not cov.below(0.10, ("dispatches>=5", "closing", "expiries", "commits")), cov.table("below the floor")
    assert not cov.below(0.02, ("refusals",)), cov.table("refusals below the floor")  # 4-10% depending on the test order


@pytest.mark.parametrize("name", ["2 ways x 1 (4 places)"])
def test_model_equals_encoding_step_by_step(name: str, capsys: pytest.CaptureFixture[str]):
    """Z3 forces the model's outcome and every place's registers after each step of generated runs (real crc32 places)."""
    cov = generated(name, 25, (16, 30), _agree)
    with capsys.disabled():
        print("\n" + cov.table(f"model = encoding on a {name} table"))
    assert not cov.below(0.05, ("refusals", "commits")), cov.table("below the floor")  # dispatches>=5 swings 4-68% with the test order


PROPS = [Prop.P1, Prop.P3, Prop.P4, Prop.P4b, Prop.P6, Prop.P7, Prop.P8]


@pytest.mark.parametrize("prop", PROPS, ids=lambda p: p.name)
def test_p4lb_proven_on_a_multiway_table(prop: Prop):
    """Induction with the invariant (ghost candidate per key) proves the flow-table properties for ways x bucket > 1."""
    task = Task("p4lb", 8, prop, flow_table=(8, 2, 2))
    assert check_invariant(task).ok
    r = prove(task)
    assert r.verdict is Verdict.PROVEN, r.detail


@pytest.mark.parametrize("variant", [Variant(evict_on_collision=True), Variant(refuse_stale=True), Variant(refuse_uncounted=True)], ids=Variant.name)
def test_flow_table_mutants_are_not_proven(variant: Variant):
    """The same induction cannot prove P8 for a table that evicts, refuses with a free place, or refuses uncounted."""
    r = prove(Task("p4lb", 4, Prop.P8, variant, flow_table=(8, 2, 2)))
    assert r.verdict is not Verdict.PROVEN


def test_p4lb_variant_is_proven_too():
    """Control for the mutant test: the unmutated design with the same task is proven."""
    assert prove(Task("p4lb", 4, Prop.P8, P4LB, flow_table=(8, 2, 2))).verdict is Verdict.PROVEN
