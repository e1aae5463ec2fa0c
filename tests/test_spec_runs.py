"""Generated runs on p4lb (tiny flow table, short idle timeout) break no property of model.spec at any step."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p4lb.model.design import Design, make_design
from p4lb.model.ops import Drain, Fail, Heal, Scale, Undrain, Weight
from p4lb.model.packet import ACK, FIN, PSH, RST, SYN
from p4lb.model.pool import Pool
from p4lb.verify.crosscheck import Abstract, Coverage, NextWrite, Operate, Send, colliding_keys, concretize

N = 4
TIMEOUT = 5000
DESIGN = make_design("p4lb", N, flow_table_bits=2, flow_ways=1, flow_bucket=1, idle_timeout_us=TIMEOUT)
SIZES = (4, 2, 2, 1)
KEYS = colliding_keys(DESIGN, SIZES)  # four keys share a slot, two another, two a third, one the last
COMMON = (ACK, PSH | ACK, FIN | ACK, RST, SYN | ACK, SYN | FIN)
EXAMPLES = 500
FLOOR = 0.20


def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """Draw from one of the strategies with the given weights (an integer picks, so nothing is deduplicated)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(lambda i: table[i])


def flags() -> st.SearchStrategy[int]:
    """SYN 2 times in 5, other everyday flags 2 in 5, any of the 256 flag bytes 1 in 5."""
    return weighted((2, st.just(SYN)), (2, st.sampled_from(COMMON)), (1, st.integers(0, 255)))


def keys() -> st.SearchStrategy[int]:
    """An index into KEYS: a slot uniformly, then one of the keys that share it."""
    starts = [sum(SIZES[:g]) for g in range(len(SIZES))]
    return st.integers(0, len(SIZES) - 1).flatmap(lambda g: st.integers(starts[g], starts[g] + SIZES[g] - 1))


def sends() -> st.SearchStrategy[Send]:
    """A packet of one of KEYS, a little later or at its slot's expiry edge (t-1, t, t+1)."""
    timing = weighted((2, st.integers(0, 4000).map(lambda dt: (dt, None))), (1, st.integers(-1, 1).map(lambda e: (0, e))))
    return st.builds(lambda k, f, tm: Send(k, f, tm[0], tm[1]), keys(), flags(), timing)


def operations(n: int, drain: bool = True, weights: bool = False) -> st.SearchStrategy[Operate]:
    """An operator action on backend 1..n (drains only if `drain`, weight changes only if `weights`), applied
    atomically or write by write."""
    b = st.integers(1, n)
    kinds = [(3, st.just(Scale(0))), (2, st.builds(Scale, st.integers(1, n))), (2, st.builds(Fail, b)), (2, st.builds(Heal, b))]
    if drain:  # p4lb only: the seed has no drain
        kinds += [(3, st.builds(Drain, b)), (2, st.builds(Undrain, b))]
    if weights:  # p4lb only; small weights keep plans short and leave the run room for packets
        kinds += [(1, st.builds(Weight, b, st.integers(1, 3)))]
    return st.builds(Operate, weighted(*kinds), st.booleans())


def step(n: int, drain: bool = True, weights: bool = False) -> st.SearchStrategy[Abstract]:
    """A packet 6 times in 10, an operation 2 in 10, the next 1-2 queued single writes 2 in 10."""
    return weighted((6, sends()), (2, operations(n, drain, weights)), (2, st.builds(NextWrite, st.integers(1, 2))))


def runs(n: int, min_size: int, max_size: int, drain: bool = True, weights: bool = False) -> st.SearchStrategy[list[Abstract]]:
    """Generated runs of packets, operations and single writes."""
    return st.lists(step(n, drain, weights), min_size=min_size, max_size=max_size)


def check_run(design: Design, abstract: list[Abstract], cov: Coverage) -> None:
    """Every step of the concrete run is clean for model.spec."""
    c = concretize(design, Pool.initial(design.cfg.n), abstract, KEYS)
    cov.add(c.reached)
    bad = [(i, r.step, r.violations) for i, r in enumerate(c.run.results) if r.violations]
    assert not bad, bad[0]


def test_p4lb_runs_break_no_property(capsys: pytest.CaptureFixture[str]) -> None:
    """Zero violations over generated runs; each feature reached in at least FLOOR of them."""
    cov = Coverage()

    @settings(max_examples=EXAMPLES)
    @given(runs(N, 20, 60, weights=True))
    def run(abstract: list[Abstract]) -> None:
        check_run(DESIGN, abstract, cov)

    run()
    with capsys.disabled():
        print("\n" + cov.table("model.spec on p4lb (N=4, 4 slots, idle 5 ms)"))
    assert not cov.below(FLOOR), cov.table("coverage below the floor")
