"""backend_open counts the OPEN flow places per backend: a proof by induction on the encoding (equal to the model).

Claim: in every reachable state, for every cell b (a service ++ a backend id), backend_open[b] = |{places p :
flow_state[p] = OPEN and service(flow_key[p]) ++ flow_backend[p] = b}| =: C_b. Deployment has backend_open = 0 and every place FREE (C_b = 0). The step lemma, proven
here for every state and every step (any packet; an atomic commit, a single controller write, a change of sets):

  (frame) every place but the one the packet reads and writes (`w`: its flow's, or the one a new flow takes) keeps
          its flow_state, flow_key and flow_backend; an operation keeps every place;
  (delta) backend_open[b] changes by [w is OPEN with backend b after] - [w is OPEN with backend b before].

So C_b changes exactly as backend_open[b] does, and they stay equal. Hence 0 <= backend_open[b] <= the number of
places (2^20 in the default build): the bit<32> register never wraps or goes below 0, a decrement only ever gives
back what an OPEN place added. The compiled program makes the model's change modulo 2^32 (verify.bmv2.equivalence),
which with the model's value in [0, 2^32) is the same value. Z3 is never asked about the sum over 2^20 places: the
lemma relates one place to one cell, for a fresh place and backend; the sum is the induction above.
"""

from __future__ import annotations

import time

import z3

from p4lb.model.config import LbConfig
from p4lb.model.p4lb import P4LB, Variant
from p4lb.verify.binding import BindingResult
from p4lb.verify.encoding import Sym
from p4lb.verify.p4lb_enc import OPEN, P4lbEncoding, open_cell
from p4lb.verify.results import QUERY_TIMEOUT_MS, Verdict

STEP = "backend_open = OPEN places"  # its row among the bindings


def _at(s: Sym, place: z3.ExprRef, c: z3.ExprRef) -> z3.ArithRef:
    """1 if `place` holds an OPEN entry of cell c (its key's service ++ its backend) in state s, else 0."""
    sw = s.sw
    return z3.If(z3.And(sw["flow_state"][place] == OPEN, open_cell(sw["flow_key"][place], sw["flow_backend"][place]) == c), z3.IntVal(1), z3.IntVal(0))


def step_lemma(enc: P4lbEncoding, atomic: bool) -> tuple[z3.BoolRef, z3.BoolRef]:
    """(the step relation, frame /\\ delta) for a fresh place j and backend b."""
    tag = f"cnt{int(atomic)}"
    s, s2 = enc.fresh(f"{tag}a"), enc.fresh(f"{tag}b")
    e = enc.step(s, s2, tag, atomic)
    w = e.place  # the place the packet reads and writes (its own, or another service's packet's)
    j, b = z3.BitVec(f"j_{tag}", enc.cfg.flow_table_bits), z3.BitVec(f"b_{tag}", 16)
    frame = z3.Implies(j != w, z3.And(*[s2.sw[k][j] == s.sw[k][j] for k in ("flow_state", "flow_key", "flow_backend")]))
    delta = s2.sw["backend_open"][b] - s.sw["backend_open"][b] == _at(s2, w, b) - _at(s, w, b)
    return e.trans, z3.And(frame, delta)


def prove_open_counts(cfg: LbConfig, variant: Variant = P4LB) -> BindingResult:
    """The step lemma for both modes of the controller (atomic operations, single writes): proven or refuted."""
    start = time.monotonic()
    enc = P4lbEncoding(cfg, variant)
    init = enc.fresh("cnt_init")
    b = z3.BitVec("b_cnt_init", 16)
    goals = [("deployment", enc.init(init), init.sw["backend_open"][b] == 0)]  # every place FREE: C_b = 0
    goals += [(f"step ({'atomic operations' if atomic else 'single writes'})", *step_lemma(enc, atomic)) for atomic in (True, False)]
    for name, premise, claim in goals:
        s = z3.Solver()
        s.set("timeout", QUERY_TIMEOUT_MS)
        s.add(premise, z3.Not(claim))
        r = s.check()
        if r != z3.unsat:
            verdict = Verdict.UNKNOWN if r == z3.unknown else Verdict.REFUTED
            detail = f"{name}: {s.reason_unknown() if r == z3.unknown else 'backend_open moves otherwise than the OPEN places'}"
            return BindingResult("p4lb", STEP, verdict, 0, time.monotonic() - start, detail)
    return BindingResult("p4lb", STEP, Verdict.PROVEN, 0, time.monotonic() - start, "induction: deployment, every step")

