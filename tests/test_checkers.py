"""The checkers themselves: check_plan refuses what the proofs do not cover, P6 watches every flow register, and the
non-vacuity premises are about the transition."""

import pytest
import z3

from p4lb.model.config import default_config
from p4lb.model.errors import PlanError
from p4lb.model.ops import Fail, Heal, Target, Write
from p4lb.model.p4lb import P4LB, P4lbState, check_plan, p4lb_plan, p4lb_write
from p4lb.model.pool import Pool
from p4lb.model.spec import Prop
from p4lb.verify.encoding import KEY
from p4lb.verify.engine import Task
from p4lb.verify.p4lb_enc import P4lbEncoding
from p4lb.verify.vacuity import kinds, premises


def _deployed_with_traffic() -> P4lbState:
    """Deployed on 4 backends, then the staged version used and left with rr_next 2 (two dispatches under it)."""
    st = P4lbState()
    for w in p4lb_plan(P4LB, st, Pool.initial(4)):
        st = p4lb_write(st, w)
    failed = Fail(2).apply(Pool.initial(4))
    for w in p4lb_plan(P4LB, st, failed):
        st = p4lb_write(st, w)
    return p4lb_write(st, Write(Target.RR_NEXT, (st.version,), 2))


def test_check_plan_refuses_a_plan_that_leaves_the_staged_rr_next():
    st = _deployed_with_traffic()
    st = p4lb_write(st, Write(Target.RR_NEXT, (1 - st.version,), 2))
    healed = Heal(2).apply(Fail(2).apply(Pool.initial(4)))
    plan = [w for w in p4lb_plan(P4LB, st, healed) if w.target is not Target.RR_NEXT]
    with pytest.raises(PlanError, match="rr_next 2"):
        check_plan(st, plan, healed)


def test_check_plan_refuses_a_group_missing_an_eligible_backend():
    st = _deployed_with_traffic()
    healed = Heal(2).apply(Fail(2).apply(Pool.initial(4)))
    s = 1 - st.version
    short = [Write(Target.RR_MEMBER, (s, i), b) for i, b in enumerate((1, 3, 4))]
    short += [Write(Target.RR_GROUP, (s,), 3), Write(Target.RR_NEXT, (s,), 0), Write(Target.VIP, (), s)]
    with pytest.raises(PlanError, match="does not list eligible"):
        check_plan(st, short, healed)


def test_p6_sees_a_change_of_last_seen_alone():
    """The encoding's 'record changed' covers all four flow registers: last_seen alone counts (a kept-alive flow)."""
    enc = P4lbEncoding(default_config(4))
    s, s2 = enc.fresh("a"), enc.fresh("b")
    e = enc.step(s, s2, "c")
    k = z3.Const("k", KEY)
    h = enc.place_of(s, k)
    solver = z3.Solver()
    solver.add(*[s2.sw[f] == s.sw[f] for f in ("flow_state", "flow_key", "flow_backend")])
    solver.add(s2.sw["flow_last_seen"][h] != s.sw["flow_last_seen"][h], z3.Not(e.record_changed(k)))
    assert solver.check() == z3.unsat


def test_premises_are_about_the_transition(monkeypatch: pytest.MonkeyPatch):
    """With an empty transition every kind's premises are unsatisfiable: the check reads the transition."""
    step = P4lbEncoding.step

    def empty(self, s, s2, tag, atomic=True):
        e = step(self, s, s2, tag, atomic)
        e.trans = z3.BoolVal(False)
        return e

    monkeypatch.setattr(P4lbEncoding, "step", empty)
    got = premises(Task("p4lb", 4, Prop.P1))
    assert set(got) == set(kinds(True)) and set(got.values()) == {"unsat"}
