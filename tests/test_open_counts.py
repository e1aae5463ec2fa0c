"""backend_open, the data plane's per-backend count of OPEN flow places, is what its name says in every run.

`p4lb status` reads it instead of scanning every place, so it must equal the scan's count of places in state OPEN
per backend (open flows and idle ones a new SYN has not yet reclaimed) after any sequence of packets and
operations. Generated runs (a four-place table with colliding keys, so places are reclaimed; times at the idle
edge) check it after every step; the coverage floors hold the generator to closes and reclaims. The mutant that
forgets the reclaim's decrement is caught by the same check.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings

from p4lb.model.design import Design, make_design
from p4lb.model.ops import Fail
from p4lb.model.p4lb import P4lbState, SlotState, Variant
from p4lb.model.packet import ACK, FIN, RST, SYN, Packet
from p4lb.model.pool import Pool
from p4lb.model.trace import OpStep, Run
from p4lb.verify.counts import prove_open_counts
from p4lb.verify.crosscheck import Abstract, concretize
from p4lb.verify.results import Verdict
from test_spec_runs import KEYS, runs

N = 4
TIMEOUT = 5000
DESIGN = make_design("p4lb", N, flow_table_bits=2, flow_ways=1, flow_bucket=1, idle_timeout_us=TIMEOUT)
MUTANT = make_design("p4lb", N, Variant(reclaim_keeps_open=True), flow_table_bits=2, flow_ways=1, flow_bucket=1, idle_timeout_us=TIMEOUT)
FLOOR = 0.10
EVENTS = ("admits", "closes", "reclaims (expired place)", "reclaims (own key)")


def open_places(st: P4lbState) -> dict[int, int]:
    """What a scan counts: places in state OPEN, per backend (idle ones too: nothing reclaimed them yet)."""
    return dict(Counter(e.backend for e in st.flows.values() if e.state == SlotState.OPEN))


def counted(st: P4lbState) -> dict[int, int]:
    """backend_open without its zero cells."""
    return {b: c for b, c in st.backend_open.items() if c}


def events(before: P4lbState, after: P4lbState) -> set[str]:
    """What one step did to the places that backend_open follows (a packet writes at most one place)."""
    out = set()
    admitted = after.backend_flows != before.backend_flows
    for slot, e in after.flows.items():
        old = before.flows.get(slot)
        if old == e or old is None or old.state != SlotState.OPEN:
            out |= {"admits"} if admitted and old != e else set()
            continue
        if e.state == SlotState.CLOSING:
            out.add("closes")
        elif admitted:
            out |= {"admits", "reclaims (own key)" if old.key == e.key else "reclaims (expired place)"}
    return out


@dataclass
class Reached:
    """How many runs reached each event."""

    runs: int = 0
    hits: Counter[str] = field(default_factory=Counter)

    def table(self) -> str:
        """The counts as a small table."""
        return "\n".join([f"backend_open = OPEN places: {self.runs} runs"] + [f"  {e:<26}{self.hits[e]:>5}  {100 * self.hits[e] / max(self.runs, 1):5.1f}%" for e in EVENTS])


def check(design: Design, abstract: list[Abstract]) -> set[str]:
    """Replay the run step by step; backend_open equals the OPEN places per backend after every step. The events seen."""
    c = concretize(design, Pool.initial(design.cfg.n), abstract, KEYS)
    run, seen = Run.start(design, Pool.initial(design.cfg.n)), set()
    for i, step in enumerate(c.steps):
        before = run.state
        run.step(step)
        seen |= events(before, run.state)
        assert counted(run.state) == open_places(run.state), (i, step, run.state)
        assert all(v >= 0 for v in run.state.backend_open.values())
    return seen


def test_backend_open_equals_the_open_places_per_backend(capsys: pytest.CaptureFixture[str]) -> None:
    """After every step of generated runs; closes and both kinds of reclaim in at least FLOOR of the runs."""
    got = Reached()

    @settings(max_examples=300)
    @given(runs(N, 20, 60))
    def run(abstract: list[Abstract]) -> None:
        got.runs += 1
        got.hits.update(check(DESIGN, abstract))

    run()
    with capsys.disabled():
        print("\n" + got.table())
    assert all(got.hits[e] >= FLOOR * got.runs for e in EVENTS), got.table()


def test_the_count_follows_a_close_a_reclaim_and_a_readmission() -> None:
    """Concretely: +1 per new flow, -1 when FIN/RST closes it, -1/+1 when an expired place or key is taken again."""
    d = DESIGN
    run = Run.start(d, Pool.initial(N))
    a, b = KEYS[0], KEYS[1]  # the same place
    pkt = lambda k, flags, t: Packet(k >> 16, k & 0xFFFF, flags, t)  # noqa: E731
    run.step(pkt(a, SYN, 0))
    assert counted(run.state) == {1: 1}
    run.step(pkt(a, ACK, 10))  # a packet of the open flow: no change
    assert counted(run.state) == {1: 1}
    run.step(pkt(b, SYN, 20 + TIMEOUT))  # a's place expired: b reclaims it, on backend 2
    assert counted(run.state) == {2: 1} == open_places(run.state)
    run.step(pkt(b, SYN, 40 + 2 * TIMEOUT))  # b's own key re-admitted after expiry: backend 3
    assert counted(run.state) == {3: 1}
    run.step(pkt(b, FIN | ACK, 50 + 2 * TIMEOUT))
    assert counted(run.state) == {}
    run.step(pkt(b, RST, 60 + 2 * TIMEOUT))  # a closing flow's packets change nothing more
    run.step(OpStep(Fail(3)))
    assert counted(run.state) == {} == open_places(run.state)


def test_the_mutant_that_forgets_the_reclaims_decrement_is_caught() -> None:
    """reclaim_keeps_open: the first reclaim leaves the old backend counted; the check says which step."""
    a, b = KEYS[0], KEYS[1]
    pkt = lambda k, flags, t: Packet(k >> 16, k & 0xFFFF, flags, t)  # noqa: E731
    run = Run.start(MUTANT, Pool.initial(N))
    run.step(pkt(a, SYN, 0))
    run.step(pkt(b, SYN, 1 + TIMEOUT))
    assert counted(run.state) == {1: 1, 2: 1} != open_places(run.state) == {2: 1}

    caught = []

    @settings(max_examples=100, derandomize=True)
    @given(runs(N, 20, 60))
    def mutant(abstract: list[Abstract]) -> None:
        try:
            check(MUTANT, abstract)
        except AssertionError:
            caught.append(abstract)

    mutant()
    assert caught, "no generated run caught reclaim_keeps_open"


@pytest.mark.parametrize("n", [4, 128])
def test_z3_proves_the_count_by_induction_on_the_default_table(n: int) -> None:
    """verify.counts: deployment and every step (both controller modes) keep backend_open = OPEN places; so it never
    goes below 0 or past the 2^20 places, and its bit<32> cells never wrap."""
    r = prove_open_counts(make_design("p4lb", n).cfg)
    assert r.verdict is Verdict.PROVEN, r.detail


def test_z3_refutes_the_count_for_the_mutant() -> None:
    """The same induction step fails for reclaim_keeps_open (a place reclaimed without giving back its count)."""
    r = prove_open_counts(make_design("p4lb", 4).cfg, Variant(reclaim_keeps_open=True))
    assert r.verdict is Verdict.REFUTED and "step" in r.detail
