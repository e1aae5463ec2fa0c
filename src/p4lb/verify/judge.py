"""The Z3 formulas as a judge of concrete traces: which properties' `bad` is satisfiable at a trace's last step."""

from __future__ import annotations

import z3

from p4lb.model.spec import Prop
from p4lb.model.trace import Trace
from p4lb.verify.crosscheck import pin
from p4lb.verify.errors import EncodingMismatch
from p4lb.verify.properties import Witness, bad


def z3_judges(trace: Trace) -> set[Prop]:
    """The properties whose `bad` formula holds at the trace's last step for some witnesses (and fairness window)."""
    p = pin(trace.make_design(), trace.pool, trace.steps, free_reset=True)
    if p.solver.check() != z3.sat:
        raise EncodingMismatch("the encoding admits no run for this trace (the executable model ran it)")
    s, s2, e = p.states[-2], p.states[-1], p.steps[-1]
    w = Witness.fresh("judge")
    found = set()
    for prop in Prop:
        p.solver.push()
        p.solver.add(bad(prop, s, s2, e, w, p.enc.n, p.enc.timeout))
        r = p.solver.check()
        p.solver.pop()
        if r == z3.unknown:
            raise EncodingMismatch(f"solver: {p.solver.reason_unknown()} on {prop.name}")
        if r == z3.sat:
            found.add(prop)
    return found


def model_judges(trace: Trace) -> set[Prop]:
    """The properties the executable spec (model.spec) finds broken at the trace's last step."""
    return {prop for prop, _ in trace.run().results[-1].violations}
