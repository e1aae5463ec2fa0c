"""P9, service isolation: the rely query is proven, can fail, and P1-P8's queries may leave its step out."""

from dataclasses import replace

import pytest
import z3

from p4lb.model.design import make_design
from p4lb.model.p4lb import P4LB, Variant
from p4lb.model.spec import Prop
from p4lb.verify import invariants
from p4lb.verify.engine import InductionReport, Task, check_invariant, combined
from p4lb.verify.isolation import prove_isolation
from p4lb.verify.p4lb_enc import RELY, P4lbEncoding
from p4lb.verify.properties import Witness, bad
from p4lb.verify.results import Verdict

CFG = make_design("p4lb", 4).cfg


def test_other_services_never_touch_this_one() -> None:
    assert prove_isolation(CFG).verdict is Verdict.PROVEN


@pytest.mark.parametrize("other", [Variant(evict_on_collision=True), Variant(resyn_redispatch=True, evict_on_collision=True)], ids=["evicts", "evicts and redispatches"])
def test_an_other_service_that_evicts_breaks_p9(other: Variant) -> None:
    """Another service whose program takes a held place when all its candidates are held: it may evict ours."""
    r = prove_isolation(CFG, other)
    assert r.verdict is Verdict.REFUTED, r.detail


@pytest.mark.parametrize("prop", [p for p in Prop if p is not Prop.P7] + [Prop.P7])
def test_p1_p8_violations_are_steps_of_this_service(prop: Prop) -> None:
    """engine.OWN_STEPS: no violation of P1-P8 is another service's packet, so their queries may leave it out."""
    enc = P4lbEncoding(CFG, P4LB)
    s0, s1 = enc.fresh("own_a"), enc.fresh("own_b")
    e = enc.step(s0, s1, "own", atomic=prop is not Prop.P7, others=True)
    s = z3.Solver()
    s.add(e.trans, e.inputs["kind"] == RELY, bad(prop, s0, s1, e, Witness.fresh("own"), enc.n, enc.timeout))
    assert s.check() == z3.unsat


def test_the_invariant_holds_across_other_services_packets_and_needs_k0(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_invariant includes the rely step; without K0 (the spec's flows are this service's) that step breaks it."""
    assert check_invariant(Task("p4lb", 4, Prop.P1)).ok
    full = invariants.key_clauses
    monkeypatch.setattr(invariants, "key_clauses", lambda enc, s, k: [c for c in full(enc, s, k) if not c[0].startswith("K0")])
    r = check_invariant(Task("p4lb", 4, Prop.P1))
    assert not r.ok and r.failed.startswith("other service step breaks"), r.failed


def test_single_writes_lean_on_the_atomic_check_for_shared_steps() -> None:
    """The single-writes invariant check leaves packet steps to the atomic mode's (the same transitions, shown); its
    report then fails when the atomic one failed or is missing."""
    r = check_invariant(Task("p4lb", 4, Prop.P7), shared_elsewhere=True)
    assert r.ok and set(r.shared) == {"packet", "other service"}
    bad_atomic = InductionReport(False, 0.0, 12, "packet step breaks 'K1'")
    assert not combined({True: bad_atomic, False: r})[False].ok
    assert not combined({False: r})[False].ok
    assert combined({True: replace(bad_atomic, ok=True, failed=""), False: r})[False].ok
    assert check_invariant(Task("p4lb", 4, Prop.P7)).shared == ()
