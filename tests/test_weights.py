"""Weights: the planner lists each eligible backend as often as its weight, interleaved; P5 holds by weight."""

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p4lb.model.design import make_design
from p4lb.model.errors import ConfigError, PlanError
from p4lb.model.ops import Configure, Fail, Weight, op_between, op_from_json, op_to_json
from p4lb.model.p4lb import P4LB, P4lbState, check_plan, p4lb_plan, planned_members
from p4lb.model.packet import SYN, Packet
from p4lb.model.pool import MAX_WEIGHT, Pool, interleave
from p4lb.model.spec import fair
from p4lb.model.trace import OpStep, Run


def test_interleave_spreads_copies_smoothly():
    assert interleave({1: 1, 2: 1, 3: 1}) == (1, 2, 3)
    assert interleave({1: 3, 2: 1, 3: 2}) == (1, 3, 1, 2, 3, 1)
    assert interleave({}) == ()


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.integers(1, 8), st.integers(1, MAX_WEIGHT), max_size=8))
def test_interleave_lists_each_backend_weight_times_and_is_fair_in_every_window(weights):
    group = interleave(weights)
    assert Counter(group) == weights
    cycle = group * 2
    for end in range(1, len(cycle) + 1):
        assert fair(cycle[:end], weights)  # every window ending here: any start in the cycle, not only position 0


def test_weight_op_validates_and_round_trips():
    pool = Pool.initial(4)
    after = Weight(2, 5).apply(pool)
    assert after.weight(2) == 5 and after.members() == interleave({1: 1, 2: 5, 3: 1, 4: 1})
    assert op_between(pool, after) == Weight(2, 5) and op_from_json(op_to_json(Weight(2, 5))) == Weight(2, 5)
    both = Configure(frozenset({1, 2}), frozenset({1, 2, 3, 4}), frozenset(), (2, 3, 1, 1))
    assert op_from_json(op_to_json(both)) == both and op_between(pool, both.apply(pool)) == both
    with pytest.raises(ConfigError, match=r"backend\[2\]\.weight"):
        Weight(2, MAX_WEIGHT + 1).apply(pool)
    with pytest.raises(ConfigError, match="weight"):
        Weight(2, 0).apply(pool)


def test_weights_beyond_the_groups_positions_are_refused():
    pool = Pool.initial(64)
    for b in range(1, 28):
        pool = Weight(b, MAX_WEIGHT).apply(pool)  # 27 * 8 + 37 = 253 positions
    with pytest.raises(ConfigError, match="at most 255"):
        Weight(28, MAX_WEIGHT).apply(pool)


def test_plan_stages_the_weighted_group_and_check_plan_counts_copies():
    st, after = P4lbState(), Weight(1, 3).apply(Pool.initial(2))
    plan = p4lb_plan(P4LB, st, after)
    check_plan(st, plan, after)
    wrong = p4lb_plan(P4LB, st, Pool.initial(2))  # lists backend 1 once
    with pytest.raises(PlanError, match="as often as their weights"):
        check_plan(st, wrong, after)


def test_p4lb_dispatches_by_weight_and_p5_holds():
    run = Run.start(make_design("p4lb", 3), Pool.initial(3))
    run.step(OpStep(Weight(3, 4)))
    got = [run.step(Packet(0x0A000101 + i, 2000 + i, SYN, 1 + i)).outcome.backend for i in range(12)]
    assert Counter(got) == {1: 2, 2: 2, 3: 8}
    run.step(OpStep(Fail(3)))
    assert {run.step(Packet(0x0A000201 + i, 3000 + i, SYN, 100 + i)).outcome.backend for i in range(4)} == {1, 2}
    assert all(not r.violations for r in run.results)


def test_the_mutant_that_ignores_weights_lists_each_backend_once():
    from p4lb.model.p4lb import Variant  # noqa: PLC0415

    pool = Weight(1, 3).apply(Pool.initial(2))
    assert planned_members(Variant(ignores_weights=True), pool) == (1, 2) and planned_members(P4LB, pool) == (1, 1, 2, 1)
