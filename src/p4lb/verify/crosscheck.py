"""Run concrete steps through the Z3 encoding, to compare with the executable model packet by packet."""

from __future__ import annotations

import z3

from p4lb.model.design import Design
from p4lb.model.ops import Fail, Heal, Scale
from p4lb.model.p4lb import planned_members
from p4lb.model.packet import DropReason, Fate, Outcome, Packet
from p4lb.model.pool import Pool
from p4lb.model.trace import OpStep, Step
from p4lb.verify.encoding import bv8
from p4lb.verify.errors import EncodingMismatch
from p4lb.verify.p4lb_enc import P4lbEncoding
from p4lb.verify.seed_enc import SeedEncoding


def encoding_for(design: Design) -> SeedEncoding | P4lbEncoding:
    """The Z3 encoding of an executable design, with BMv2's real crc16."""
    if design.is_seed:
        return SeedEncoding(design.cfg, real_hash=True)
    return P4lbEncoding(design.cfg, design.variant, real_hash=True)


def _pin_op(enc: SeedEncoding | P4lbEncoding, design: Design, e, tag: str, before: Pool, after: Pool, op) -> list[z3.BoolRef]:
    inp = e.inputs
    if isinstance(enc, SeedEncoding):
        if isinstance(op, Scale):
            return [inp["kind"] == 1, inp["k"] == op.active]
        if isinstance(op, Fail | Heal):
            return [inp["kind"] == 2, inp["b"] == op.backend, inp["fail"] == isinstance(op, Fail)]
        raise EncodingMismatch(f"the seed has no operation {op}")
    changed = planned_members(design.variant, before) != planned_members(design.variant, after)
    cons = [inp["kind"] == (1 if changed else 2)]
    for name, members in (("active", after.active), ("healthy", after.healthy), ("draining", after.draining)):
        arr = z3.Array(f"{name}_op_{tag}", z3.BitVecSort(8), z3.BoolSort())
        cons += [arr[bv8(b)] == (b in members) for b in range(1, after.n + 1)]
    return cons


def z3_outcomes(design: Design, pool: Pool, steps: list[Step]) -> list[Outcome | None]:
    """The encoding's outcome for each packet step (None for operations)."""
    enc = encoding_for(design)
    states = [enc.fresh("c0")]
    solver = z3.Solver()
    solver.add(enc.init(states[0]))
    encs = []
    for i, step in enumerate(steps):
        tag = f"c{i}"
        states.append(enc.fresh(f"c{i + 1}"))
        e = enc.step(states[-2], states[-1], tag, True)
        encs.append(e)
        solver.add(e.trans, z3.Not(e.inputs["reset"]))
        if isinstance(step, Packet):
            p = e.pkt
            solver.add(e.inputs["kind"] == 0, p.src_ip == step.src_ip, p.src_port == step.src_port, p.flags == step.flags, p.t == step.time_us)
        else:
            assert isinstance(step, OpStep)
            after = step.op.apply(pool)
            solver.add(*_pin_op(enc, design, e, tag, pool, after, step.op))
            pool = after
    if solver.check() != z3.sat:
        raise EncodingMismatch("the encoding admits no run for these steps (the executable model ran them)")
    m = solver.model()
    outs: list[Outcome | None] = []
    for step, e in zip(steps, encs, strict=True):
        if not isinstance(step, Packet):
            outs.append(None)
            continue
        fate = Fate(m.eval(e.out.fate, model_completion=True).as_long())
        backend = m.eval(e.out.backend, model_completion=True).as_long()
        reason = DropReason(m.eval(e.out.reason, model_completion=True).as_long())
        outs.append(Outcome(fate, backend if fate is not Fate.DROP else 0, reason))
    return outs


def comparable(o: Outcome) -> tuple:
    """What both sides must agree on."""
    return (o.fate, o.backend if o.fate is not Fate.DROP else 0, o.reason)
