"""Every counterexample the prover finds for the seed, replayed on BMv2 running seed.p4: same step, same fate."""

from __future__ import annotations

import pytest

from p4lb.lab.driver import assert_agree, replay_trace
from p4lb.model.packet import Fate
from p4lb.model.spec import Prop
from p4lb.verify.engine import Task, bmc
from p4lb.verify.results import Verdict


@pytest.fixture(scope="module")
def seed_traces():
    """The prover's minimal counterexample for each property of the seed (the same search `nox -s prove` runs)."""
    out = {}
    for prop in Prop:
        res = bmc(Task("seed", 4, prop))
        assert res.verdict is Verdict.REFUTED and res.trace is not None, f"{prop.name}: {res.verdict} {res.detail}"
        out[prop] = res.trace
    return out


@pytest.mark.parametrize("prop", list(Prop), ids=lambda p: p.name)
def test_seed_counterexample_fails_on_the_switch_as_predicted(seed_sw, seed_traces, prop):
    trace = seed_traces[prop]
    run, cmp = replay_trace(seed_sw, trace)
    assert_agree(cmp)
    at = trace.expect_step if trace.expect_step is not None else len(cmp) - 1
    last = cmp[at]
    broken = {p for p, _ in run.results[at].violations}
    assert prop in broken, f"the model no longer breaks {prop.name} at step {at}"
    assert last.switch is not None and last.model is not None
    print(f"\n{prop.name}: step {last.index} {last.step}: model {last.model}; switch {last.switch}")
    if last.model.fate is Fate.LOST:
        assert last.switch.fate is Fate.LOST  # seen on port 0, where no backend is
