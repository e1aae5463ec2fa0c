"""P9 service isolation, the rely side: another service's packet never changes this service's open flows or state.

The switch's services share the flow table, backend_open and the clock. The compiled program's frame (the
guarantee, verify.bmv2.equivalence, for any service id): a packet of service s changes only s's cells of rr_next,
lb_drops and backend_flows, reads only s's table entries, writes one flow place and moves only the backend_open
cells of the entries that place held and gets. Here, in the single-service encoding with another service's packet
as a kind of step (P4lbEncoding.other_service: the same packet step on that service's arbitrary slice), the query

  Inv /\\ T /\\ another service's packet /\\ (an open flow of this service has its record changed
                                              \\/ this service's dispatch state, counters or spec changed)

is unsat, with the invariant checked over every kind of step including that one (engine.check_invariant). Its
second half holds by construction (the rely step copies this service's slice), which the compiled program's frame
makes true of the switch. So no other service can evict, overwrite, refresh or redirect an open flow of this one,
nor touch its groups, rr_next, counters or operator state; it may take a place this service's flow left (closing or
expired), as this service's own new flows may. Every service is "this service" for some id (SERVICE is any id), so
P9 holds between every pair.
"""

from __future__ import annotations

import time

import z3

from p4lb.model.config import LbConfig
from p4lb.model.p4lb import P4LB, Variant
from p4lb.verify.binding import BindingResult
from p4lb.verify.encoding import open_at
from p4lb.verify.engine import induction_premises
from p4lb.verify.invariants import Watched
from p4lb.verify.p4lb_enc import RELY, SHARED, P4lbEncoding
from p4lb.verify.properties import Witness
from p4lb.verify.results import QUERY_TIMEOUT_MS, Verdict

STEP = "P9: other services' packets"  # its row among the bindings
TAG = "iso"


def isolation_bad(enc: P4lbEncoding, other: Variant = P4LB) -> tuple[list[z3.BoolRef], z3.BoolRef]:
    """(premises: Inv /\\ T with another service's packet possible, bad: that packet breaks P9)."""
    s0, s1 = enc.fresh(f"{TAG}a"), enc.fresh(f"{TAG}b")
    e = enc.step(s0, s1, TAG, atomic=True, others=True, other_variant=other)
    w, watched = Witness.fresh(TAG), Watched.fresh(enc)
    premises = induction_premises(enc, s0, s1, e, w, watched, occupants=False, rely=True)[:2]  # Inv /\ T: Inv' would assume what a bad other service could break
    flow = z3.And(open_at(s0.spec, w.key, e.inputs["other_t"], enc.timeout), e.record_changed(w.key))
    mine = z3.Or(*[s1.sw[k] != s0.sw[k] for k in s0.sw if k not in SHARED], *[s1.spec[k] != s0.spec[k] for k in s0.spec if k != "now"])
    return premises, z3.And(e.inputs["kind"] == RELY, z3.Or(flow, mine))


def prove_isolation(cfg: LbConfig, other: Variant = P4LB) -> BindingResult:
    """P9's rely query: proven, refuted (another service's packet breaks this one) or unknown."""
    start = time.monotonic()
    premises, bad = isolation_bad(P4lbEncoding(cfg, P4LB), other)
    s = z3.Solver()
    s.set("timeout", QUERY_TIMEOUT_MS)
    s.add(*premises, bad)
    r = s.check()
    seconds = time.monotonic() - start
    if r == z3.unsat:
        return BindingResult("p4lb", STEP, Verdict.PROVEN, 0, seconds, "never change this service's open flows, dispatch state or counters")
    verdict = Verdict.UNKNOWN if r == z3.unknown else Verdict.REFUTED
    detail = s.reason_unknown() if r == z3.unknown else "another service's packet changes an open flow or the state of this one"
    return BindingResult("p4lb", STEP, verdict, 0, seconds, detail)
