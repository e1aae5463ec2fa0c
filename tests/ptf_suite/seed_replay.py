"""The prover's counterexample for each property of the seed, replayed as a PTF test on a switch running seed.p4.

One test per property (SeedP1 ... SeedP8): the trace's packets are sent and verified where the model says they
leave (a black hole: on port 0), and the model must break the property at the trace's step. The seed's program
is pushed by the test (seed_p4info / seed_bmv2_json test params, default: the package's build).
"""

from __future__ import annotations

from p4lb_ptf_base import P4lbPtfTest

from p4lb.model.spec import Prop
from p4lb.verify.engine import Task, bmc
from p4lb.verify.results import Verdict


class SeedCounterexample(P4lbPtfTest):
    """Base: replay the seed's counterexample for `prop` (no runTest: not a test itself)."""

    program = "seed"
    prop = Prop.P1

    def replay(self) -> None:
        """Find the trace, run it on the model and the switch, and see the property broken where predicted."""
        res = bmc(Task("seed", 4, self.prop))
        self.assertIs(res.verdict, Verdict.REFUTED, f"{self.prop.name}: {res.verdict} {res.detail}")
        trace = res.trace
        assert trace is not None
        run, outs = self.run_steps(trace.steps, trace.pool, trace.make_design())
        at = trace.expect_step if trace.expect_step is not None else len(trace.steps) - 1
        broken = {p for p, _ in run.results[at].violations}
        self.assertIn(self.prop, broken, f"the model no longer breaks {self.prop.name} at step {at}")


def _case(prop: Prop) -> type:
    """The PTF test class of one property."""
    return type(f"Seed{prop.name}", (SeedCounterexample,), {"prop": prop, "runTest": SeedCounterexample.replay, "__doc__": f"The seed breaks {prop.name} ({prop.value}) on the switch as the prover predicts."})


globals().update({f"Seed{p.name}": _case(p) for p in Prop})
