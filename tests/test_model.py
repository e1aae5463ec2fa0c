"""The executable models behave as designed, and the properties checker catches what it should."""

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from p4lb.model.config import default_config
from p4lb.model.crc import ip
from p4lb.model.design import make_design
from p4lb.model.errors import ConfigError, PlanError
from p4lb.model.ops import Drain, Fail, Heal, Scale
from p4lb.model.p4lb import P4lbState, Variant, check_plan, p4lb_plan, p4lb_write, planned_members
from p4lb.model.packet import ACK, FIN, RST, SYN, DropReason, Fate, Packet
from p4lb.model.pool import Pool, in_place
from p4lb.model.spec import Prop
from p4lb.model.trace import OpStep, Run

CLIENT = ip("10.0.1.1")


def syn(port, t=0):
    return Packet(CLIENT, port, SYN, t)


def test_seed_round_robin_then_retransmitted_syn_moves_the_flow():
    run = Run.start(make_design("seed"), Pool.initial(4))
    got = [run.step(syn(1000 + i, i)).outcome.backend for i in range(5)]
    assert got == [1, 2, 3, 4, 1]
    res = run.step(syn(1000, 10))
    assert res.outcome.backend == 2 and Prop.P4 in [p for p, _ in res.violations]


def test_seed_all_failed_still_dispatches_to_backend_4():
    run = Run.start(make_design("seed"), Pool.initial(4))
    for b in (1, 2, 3, 4):
        run.step(OpStep(Fail(b)))
    assert run.step(syn(2000)).outcome.backend == 4


def test_p4lb_round_robin_pins_and_closes():
    run = Run.start(make_design("p4lb", 4), Pool.initial(4))
    got = [run.step(syn(1000 + i, i)).outcome.backend for i in range(4)]
    assert got == [1, 2, 3, 4]
    assert run.step(Packet(CLIENT, 1000, ACK, 10)).outcome.backend == 1
    assert run.step(syn(1000, 11)).outcome.backend == 1  # retransmitted SYN stays
    assert run.step(Packet(CLIENT, 1000, FIN | ACK, 12)).outcome.backend == 1
    assert run.step(Packet(CLIENT, 1000, ACK, 13)).outcome.backend == 1  # closing handshake still forwarded
    assert run.step(syn(1000, 14)).outcome.admitted  # a new flow after the close
    assert all(not r.violations for r in run.results)


def test_p4lb_fail_drain_scale_keep_open_flows():
    run = Run.start(make_design("p4lb", 4), Pool.initial(4))
    assert run.step(syn(1000)).outcome.backend == 1
    for op in (Fail(1), Drain(2), Scale(3)):
        run.step(OpStep(op))
    assert run.step(Packet(CLIENT, 1000, ACK, 5)).outcome.backend == 1
    assert [run.step(syn(2000 + i, 10 + i)).outcome.backend for i in range(3)] == [3, 3, 3]
    run.step(OpStep(Heal(1)))
    assert sorted(run.step(syn(3000 + i, 20 + i)).outcome.backend for i in range(2)) == [1, 3]
    assert all(not r.violations for r in run.results)


def test_p4lb_no_eligible_is_dropped_and_counted():
    run = Run.start(make_design("p4lb", 2), Pool.initial(2))
    run.step(OpStep(Scale(0)))
    out = run.step(syn(1000)).outcome
    assert out.fate is Fate.DROP and out.reason is DropReason.NO_ELIGIBLE
    assert run.state.lb_drops[DropReason.NO_ELIGIBLE] == 1


def test_p4lb_collision_refused_and_counted():
    design = make_design("p4lb", 4, flow_table_bits=1, flow_ways=1, flow_bucket=1)
    run = Run.start(design, Pool.initial(4))
    first = run.step(syn(1000)).outcome
    slot = design.places(syn(1000))
    other = next(p for p in range(1001, 1100) if design.places(syn(p)) == slot)
    out = run.step(syn(other, 1)).outcome
    assert first.admitted and out.reason is DropReason.FLOW_TABLE_FULL
    assert run.step(Packet(CLIENT, 1000, ACK, 2)).outcome.backend == first.backend


def test_p4lb_idle_flow_expires():
    design = make_design("p4lb", 4, idle_timeout_us=100)
    run = Run.start(design, Pool.initial(4))
    run.step(syn(1000, 0))
    assert run.step(Packet(CLIENT, 1000, ACK, 100)).outcome.fate is Fate.BACKEND
    assert run.step(Packet(CLIENT, 1000, ACK, 201)).outcome.reason is DropReason.UNKNOWN_FLOW


def test_malformed_flags_change_nothing():
    design = make_design("p4lb", 4)
    run = Run.start(design, Pool.initial(4))
    run.step(syn(1000))
    before = run.state
    for flags in (SYN | FIN, SYN | RST, SYN | FIN | RST | ACK):
        assert run.step(Packet(CLIENT, 1000, flags, 1)).outcome.reason is DropReason.MALFORMED
    assert before.flows == run.state.flows and before.rr_next == run.state.rr_next


def test_plan_stages_then_commits_and_in_place_is_rejected():
    st = make_design("p4lb", 4).initial(Pool.initial(4))
    after = Fail(2).apply(Pool.initial(4))
    plan = p4lb_plan(Variant(), st, after)
    assert plan[-1].target == "vip" and all(w.index[0] != st.version for w in plan[:-1])
    check_plan(st, plan, after)
    with pytest.raises(PlanError, match="live version"):
        check_plan(st, p4lb_plan(Variant(in_place_updates=True), st, after), after)


def test_empty_plan_when_eligibility_unchanged():
    st = make_design("p4lb", 4).initial(Pool.initial(4, active=2))
    assert p4lb_plan(Variant(), st, Fail(4).apply(Pool.initial(4, active=2))) == []


N = 8
backend_ids = hs.integers(0, N + 1)  # 0: no entry (a miss), N + 1: a backend the pool does not know


@hs.composite
def switch_states(draw: hs.DrawFn) -> P4lbState:
    """Any controller-written state: both versions' sizes and members (stale ones past the size too), any rr_next."""
    members = {(v, i): draw(backend_ids) for v in (0, 1) for i in range(draw(hs.integers(0, N + 2)))}
    sizes = (draw(hs.integers(0, N + 2)), draw(hs.integers(0, N + 2)))
    return P4lbState(version=draw(hs.integers(0, 1)), rr_group=sizes, rr_member={k: b for k, b in members.items() if b}, rr_next=(draw(hs.integers(0, 255)), draw(hs.integers(0, 255))))


@hs.composite
def pools(draw: hs.DrawFn) -> Pool:
    """Any operator sets over backends 1..N."""
    subset = hs.frozensets(hs.integers(1, N))
    return Pool(N, draw(subset), draw(subset), draw(subset))


@given(switch_states(), pools())
def test_a_plan_writes_only_the_staged_entries_that_differ(state, pool):
    plan = p4lb_plan(Variant(), state, pool)
    check_plan(state, plan, pool)  # stages the unused version only, commits last, lists the eligible set once each
    if not plan:
        return
    staged, members = 1 - state.version, planned_members(Variant(), pool, state.members(state.version))
    end = state
    for w in plan:
        end = p4lb_write(end, w)
    assert end.members(staged) == members and end.rr_next[staged] == 0  # the group in the planner's order
    written = [w for w in plan if w.target == "rr_member"]
    assert all(state.rr_member.get(w.index) != w.value for w in written)  # no write that changes nothing
    assert len(written) == sum(state.rr_member.get((staged, i)) != b for i, b in enumerate(members))  # and none missing
    assert [w.target for w in plan[len(written):]] in (["rr_group", "rr_next", "vip"], ["rr_next", "vip"])
    assert p4lb_plan(Variant(), state, pool) == plan  # a function of (variant, state, pool) alone


def test_a_plan_over_a_staged_version_that_already_lists_the_group_only_resets_rr_next_and_commits():
    st = make_design("p4lb", 4).initial(Pool.initial(4))
    down = Fail(2).apply(Pool.initial(4))
    for pool in (down, Pool.initial(4)):  # 2 fails: (1, 4, 3); 2 returns at the end: (1, 4, 3, 2)
        for w in p4lb_plan(Variant(), st, pool):
            st = p4lb_write(st, w)
    again = p4lb_plan(Variant(), st, down)  # 2 fails again: (1, 4, 3), which the unused version still lists
    assert [w.target for w in again] == ["rr_next", "vip"]
    check_plan(st, again, down)


@given(hs.lists(hs.integers(1, N), unique=True), hs.frozensets(hs.integers(1, N)))
def test_the_planner_keeps_live_members_in_place(live, eligible):
    live, want = tuple(live), dict.fromkeys(eligible, 1)
    group = in_place(live, want)
    assert Counter(group) == want
    assert all(group[i] == b for i, b in enumerate(live[: len(group)]) if b in want)  # a survivor keeps its place
    assert sum(i >= len(live) or live[i] != b for i, b in enumerate(group)) == len(group) - sum(b in want for b in live[: len(group)])
    if set(live) <= eligible:
        assert group == live + tuple(sorted(eligible - set(live)))  # returning backends go last


@pytest.mark.parametrize("k", [1, 10, 100])
def test_a_failover_of_k_of_128_backends_stages_at_most_k_members(k):
    group = {(v, i): i + 1 for v in (0, 1) for i in range(128)}
    st = P4lbState(rr_group=(128, 128), rr_member=group)  # the unused version lists the live group (a grace period later)
    down = Pool(128, frozenset(range(1, 129)), frozenset(range(1, 129)) - set(random.Random(k).sample(range(1, 129), k)))
    plan = p4lb_plan(Variant(), st, down)
    check_plan(st, plan, down)
    assert sum(w.target == "rr_member" for w in plan) <= k and [w.target for w in plan[-3:]] == ["rr_group", "rr_next", "vip"]


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"vip_port": 0}, "vip_port"), ({"idle_timeout_us": 0}, "idle_timeout"), ({"flow_table_bits": 40}, "flow_table_bits")],
)
def test_bad_config_names_the_field(kw, field):
    with pytest.raises(ConfigError) as err:
        default_config(4, **kw)
    assert err.value.field == field and "invalid" in str(err.value)


def test_bad_backend_id_in_op():
    with pytest.raises(ConfigError, match="backend"):
        Fail(9).apply(Pool.initial(4))


def test_state_is_immutable():
    with pytest.raises(AttributeError):
        P4lbState().version = 1  # type: ignore[misc]
