"""The executable model and the Z3 encoding agree step by step: outcomes, registers and counters.

Runs come from the generator of test_spec_runs (colliding keys, times at the idle-timeout edge, all 256
flag bytes, operations atomic or write by write with packets between the writes). For each run, Z3 must
prove that no outcome, register or counter may differ from the model's after any step. Z3 is the cost,
so these tests are derandomized: the same examples (and coverage table) on every run, the floors hold
the generator to its job rather than to luck; test_spec_runs explores afresh each run.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p4lb.model.design import Design, make_design
from p4lb.model.ops import Configure
from p4lb.model.p4lb import Variant
from p4lb.model.packet import ACK, FIN, SYN, Packet
from p4lb.model.pool import Pool
from p4lb.model.seed import seed_index
from p4lb.verify import crosscheck
from p4lb.verify.crosscheck import Abstract, Coverage, Operate, Send, compare, concretize
from p4lb.verify.errors import EncodingMismatch
from p4lb.verify.mutants import MUTANTS
from test_spec_runs import KEYS, runs

TIMEOUT = 5000
DESIGN = make_design("p4lb", 4, flow_table_bits=2, flow_ways=1, flow_bucket=1, idle_timeout_us=TIMEOUT)
VARIANTS = sorted({*MUTANTS.values(), Variant(uncounted_drops=True), Variant(refuse_stale=True)}, key=Variant.name)
FLOOR = 0.10


def agree(design: Design, abstract: list[Abstract], cov: Coverage) -> None:
    """Make the run concrete on the model, then have Z3 rule out any other outcome or register value."""
    c = concretize(design, Pool.initial(design.cfg.n), abstract, KEYS)
    cov.add(c.reached)
    slots = list(range(1 << design.cfg.flow_table_bits))
    if design.is_seed:
        slots = sorted({seed_index(design.cfg, Packet(k >> 16, k & 0xFFFF, 0)) for k in KEYS})
    compare(design, Pool.initial(design.cfg.n), c.steps, slots)


def report(capsys: pytest.CaptureFixture[str], cov: Coverage, title: str, features: tuple[str, ...]) -> None:
    """Print the coverage table and hold each feature to the floor."""
    with capsys.disabled():
        print("\n" + cov.table(title))
    assert not cov.below(FLOOR, features), cov.table("coverage below the floor")


def test_p4lb_model_equals_encoding(capsys: pytest.CaptureFixture[str]) -> None:
    """p4lb with N=4, four flow slots and a 5 ms idle timeout."""
    cov = Coverage()

    @settings(max_examples=40, derandomize=True)
    @given(runs(4, 16, 36))
    def run(abstract: list[Abstract]) -> None:
        agree(DESIGN, abstract, cov)

    run()
    report(capsys, cov, "model = encoding on p4lb (N=4, 4 slots, idle 5 ms)", crosscheck.FEATURES)


def test_p4lb_model_equals_encoding_with_weight_changes() -> None:
    """Runs with weight changes (atomic and write by write): the encoding's weighted groups match the model's plans."""

    @settings(max_examples=15, derandomize=True)
    @given(runs(4, 8, 20, weights=True))
    def run(abstract: list[Abstract]) -> None:
        agree(DESIGN, abstract, Coverage())

    run()


def reconfigurations(n: int) -> st.SearchStrategy[list[Abstract]]:
    """Atomic operations setting the healthy set (each backend a coin flip): several leave and come back in one commit."""
    every = frozenset(range(1, n + 1))
    healthy = st.lists(st.booleans(), min_size=n, max_size=n).map(lambda up: frozenset(b for b, ok in zip(sorted(every), up, strict=True) if ok))
    return st.lists(healthy.map(lambda h: Operate(Configure(every, h))), min_size=2, max_size=8)


def test_bounded_model_checking_commits_the_planners_group() -> None:
    """Unrolled as BMC unrolls it (groups not pinned), the encoding forces the model planner's group at every commit
    (weights 1), on p4lb and the mutants: so a counterexample's operations replay on the model as they were found.
    Not no_pointer_wrap: it reads past the group, where an atomic commit leaves the encoding's entries free."""

    def agree_unpinned(n: int, variant: Variant, abstract: list[Abstract]) -> None:
        design = make_design("p4lb", n, variant, flow_table_bits=2, flow_ways=1, flow_bucket=1, idle_timeout_us=TIMEOUT)
        c = concretize(design, Pool.initial(n), abstract, KEYS)
        compare(design, Pool.initial(n), c.steps, [], follow_planner=True)

    @settings(max_examples=30, derandomize=True)
    @given(reconfigurations(5))
    def several(abstract: list[Abstract]) -> None:
        agree_unpinned(5, Variant(), abstract)

    @settings(max_examples=20, derandomize=True)
    @given(runs(4, 8, 24), st.sampled_from([v for v in VARIANTS if not v.no_pointer_wrap]))
    def mutants(abstract: list[Abstract], variant: Variant) -> None:
        agree_unpinned(4, variant, abstract)

    several()
    mutants()


def test_mutants_model_equal_encoding(capsys: pytest.CaptureFixture[str]) -> None:
    """Every mutant (N=3) behaves in the encoding as in the model."""
    cov = Coverage()

    @settings(max_examples=50, derandomize=True)
    @given(runs(3, 8, 24), st.sampled_from(VARIANTS))
    def run(abstract: list[Abstract], variant: Variant) -> None:
        agree(make_design("p4lb", 3, variant, flow_table_bits=2, flow_ways=1, flow_bucket=1, idle_timeout_us=TIMEOUT), abstract, cov)

    run()
    report(capsys, cov, "model = encoding on the mutants (N=3)", ("commits", "expiries", "no_eligible", "mid-op packets"))


def test_backend_open_mutant_model_equals_encoding() -> None:
    """reclaim_keeps_open (N=3) behaves in the encoding as in the model: the mutant the count checks must catch
    (test_open_counts, test_backend_open_is_compared) is the same bug on both sides."""

    @settings(max_examples=15, derandomize=True)
    @given(runs(3, 8, 24))
    def run(abstract: list[Abstract]) -> None:
        agree(make_design("p4lb", 3, Variant(reclaim_keeps_open=True), flow_table_bits=2, flow_ways=1, flow_bucket=1, idle_timeout_us=TIMEOUT), abstract, Coverage())

    run()


def test_seed_model_equals_encoding(capsys: pytest.CaptureFixture[str]) -> None:
    """The seed (its operations are single writes already)."""
    cov = Coverage()

    @settings(max_examples=30, derandomize=True)
    @given(runs(4, 6, 18, drain=False))
    def run(abstract: list[Abstract]) -> None:
        agree(make_design("seed"), abstract, cov)

    run()
    report(capsys, cov, "model = encoding on the seed", ("commits",))


def test_registers_are_compared_not_only_outcomes() -> None:
    """An encoding that forgets lb_drops has the same outcomes, and the comparison still sees it."""
    wrong = make_design("p4lb", 4, Variant(uncounted_drops=True), flow_table_bits=2, flow_ways=1, flow_bucket=1, idle_timeout_us=TIMEOUT)
    c = concretize(DESIGN, Pool.initial(4), [Send(0, ACK)], KEYS)
    with pytest.raises(EncodingMismatch, match=r"lb_drops\[UNKNOWN_FLOW\] is 1 in the model but may be 0"):
        compare(DESIGN, Pool.initial(4), c.steps, [0], encoded=wrong)


def test_outcome_mismatch_is_named() -> None:
    """An encoding that refuses a SYN the model admits (a closing occupant) is caught at that step."""
    wrong = make_design("p4lb", 4, Variant(refuse_stale=True), flow_table_bits=2, flow_ways=1, flow_bucket=1, idle_timeout_us=TIMEOUT)
    c = concretize(DESIGN, Pool.initial(4), [Send(0, SYN), Send(0, FIN), Send(1, SYN)], KEYS)
    with pytest.raises(EncodingMismatch, match=r"step 2 .*: fate is 0 in the model but may be 1"):
        compare(DESIGN, Pool.initial(4), c.steps, [0, 1, 2, 3], encoded=wrong)


def test_backend_open_is_compared() -> None:
    """An encoding that forgets the decrement of a reclaimed place (reclaim_keeps_open) forwards every packet alike;
    the comparison still sees the count: a's place expired, b took it, backend 1 holds no OPEN place any more."""
    wrong = make_design("p4lb", 4, Variant(reclaim_keeps_open=True), flow_table_bits=2, flow_ways=1, flow_bucket=1, idle_timeout_us=TIMEOUT)
    c = concretize(DESIGN, Pool.initial(4), [Send(0, SYN), Send(1, SYN, dt=TIMEOUT + 1)], KEYS)
    with pytest.raises(EncodingMismatch, match=r"step 1 .*: backend_open\[1\] is 0 in the model but may be 1"):
        compare(DESIGN, Pool.initial(4), c.steps, [0, 1, 2, 3], encoded=wrong)
