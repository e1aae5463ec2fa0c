"""Non-vacuity catches an empty or over-constrained transition that would make every proof pass."""

import dataclasses

import pytest
import z3

from p4lb.model.config import table_fields
from p4lb.model.design import make_design
from p4lb.model.spec import Prop
from p4lb.verify.engine import Task, prove
from p4lb.verify.p4lb_enc import P4lbEncoding
from p4lb.verify.results import Verdict
from p4lb.verify.vacuity import check_vacuity, kinds, resolve


class EmptyTransition(P4lbEncoding):
    """A broken encoding: no step is possible at all."""

    def step(self, s, s2, tag, atomic=True, others=True, other_variant=None):
        return dataclasses.replace(super().step(s, s2, tag, atomic, others, other_variant), trans=z3.BoolVal(False))


class NoSyn(P4lbEncoding):
    """A broken encoding: SYNs never arrive (so nothing is ever dispatched)."""

    def step(self, s, s2, tag, atomic=True, others=True, other_variant=None):
        e = super().step(s, s2, tag, atomic, others, other_variant)
        return dataclasses.replace(e, trans=z3.And(e.trans, z3.Not(e.pkt.bit(0x02))))


@pytest.fixture
def broken(monkeypatch):
    """Make every Task use a broken encoding class."""

    def use(cls):
        def encoding(task, real_hash, follow_planner=False):
            cfg = make_design("p4lb", task.n, task.variant, idle_timeout_us=task.idle_timeout_us, **table_fields(task.flow_table)).cfg
            return cls(cfg, task.variant, real_hash=real_hash, follow_planner=follow_planner)

        monkeypatch.setattr(Task, "encoding", encoding)

    return use


def test_the_real_transition_admits_every_kind_of_step():
    reps = resolve([check_vacuity(Task("p4lb", 4, p)) for p in (Prop.P1, Prop.P7)])
    for rep, prop in zip(reps, (Prop.P1, Prop.P7), strict=True):
        assert rep.failures() == []
        assert set(rep.reached) == set(kinds(prop is not Prop.P7))
    assert set(reps[1].premises.values()) >= {"sat as atomic"}


def test_single_writes_alone_leave_the_packet_kinds_unresolved():
    """The single-writes report rests on the atomic one for packet kinds: alone, it is a failure, not a pass."""
    fails = check_vacuity(Task("p4lb", 4, Prop.P7)).failures()
    assert any("'dispatch' steps are checked as in the atomic mode" in f for f in fails)


def test_an_empty_transition_proves_anything_but_fails_non_vacuity(broken):
    broken(EmptyTransition)
    assert prove(Task("p4lb", 4, Prop.P4)).verdict is Verdict.PROVEN  # why the check is needed
    fails = check_vacuity(Task("p4lb", 4, Prop.P4)).failures()
    assert any("dispatch" in f for f in fails) and any("commit" in f for f in fails)


def test_a_transition_without_syns_fails_non_vacuity(broken):
    broken(NoSyn)
    fails = check_vacuity(Task("p4lb", 4, Prop.P1)).failures()
    assert any("'dispatch'" in f for f in fails) and any("'refusal'" in f for f in fails)
    assert not any("'unknown flow'" in f for f in fails)


class NoSynInSingleWrites(P4lbEncoding):
    """A broken encoding: SYNs never arrive, only in the single-writes mode (P7's)."""

    def step(self, s, s2, tag, atomic=True, others=True, other_variant=None):
        e = super().step(s, s2, tag, atomic, others, other_variant)
        return e if atomic else dataclasses.replace(e, trans=z3.And(e.trans, z3.Not(e.pkt.bit(0x02))))


def test_packet_kinds_are_shared_only_when_the_packet_step_is_the_same(broken):
    broken(NoSynInSingleWrites)
    atomic, single = resolve([check_vacuity(Task("p4lb", 4, p)) for p in (Prop.P1, Prop.P7)])
    assert atomic.failures() == []
    fails = single.failures()
    assert any("premises exclude 'dispatch'" in f for f in fails)
