"""Each property's 'bad step' as a Z3 formula over one step (pre-state, inputs, outcome, post-state, witnesses)."""

from __future__ import annotations

from dataclasses import dataclass

import z3

from p4lb.model.packet import DropReason
from p4lb.model.spec import SAFE_UPDATE_PROPS, Prop
from p4lb.verify.encoding import FATE_DROP, FATE_LOST, KEY, Out, StepEnc, Sym, any_eligible, eligible, open_at, reason, times


@dataclass
class Witness:
    """Free constants a violation may name: another flow, two backends."""

    key: z3.BitVecRef
    b1: z3.BitVecRef
    b2: z3.BitVecRef

    @classmethod
    def fresh(cls, tag: str) -> Witness:
        return cls(z3.BitVec(f"wkey_{tag}", KEY.size()), z3.BitVec(f"wb1_{tag}", 8), z3.BitVec(f"wb2_{tag}", 8))


def bad(prop: Prop, s: Sym, s2: Sym, e: StepEnc, w: Witness, n: int, timeout: int) -> z3.BoolRef:
    """The step breaks `prop` (P7: one of P1-P4, P6 after some controller write)."""
    if prop is Prop.P7:
        return z3.And(s.spec["wrote"], z3.Or(*[bad(p, s, s2, e, w, n, timeout) for p in SAFE_UPDATE_PROPS]))
    pkt, out, spec = e.pkt, e.out, s.spec
    key, t = pkt.key, pkt.t
    key_open = open_at(spec, key, t, timeout)
    new_syn = z3.And(pkt.syn, z3.Not(key_open))
    sent_new = z3.And(new_syn, out.is_backend())
    other_open = z3.And(w.key != key, open_at(spec, w.key, t, timeout))
    refused = z3.And(out.fate == FATE_DROP, out.reason == reason(DropReason.FLOW_TABLE_FULL))
    cond = {
        Prop.P1: z3.And(sent_new, z3.Not(spec["healthy"][out.backend])),
        Prop.P2: z3.And(sent_new, z3.Or(z3.Not(spec["active"][out.backend]), spec["draining"][out.backend])),
        Prop.P3: z3.Or(z3.And(new_syn, z3.Not(z3.And(e.places_held, refused, e.counted)), _p3_wrong(spec, out, n, w, e.counted)), out.fate == FATE_LOST),
        Prop.P4: z3.And(key_open, z3.Not(pkt.malformed), z3.Not(z3.And(out.is_backend(), out.backend == spec["backend"][key]))),
        Prop.P4b: z3.And(spec["admitted"][key], z3.Not(new_syn), z3.Not(z3.Or(z3.And(out.is_backend(), out.backend == spec["backend"][key]), z3.And(out.fate == FATE_DROP, e.counted)))),
        Prop.P5: z3.And(sent_new, eligible(spec, w.b1, n), eligible(spec, w.b2, n), _unfair(s2.spec, w.b1, w.b2)),
        Prop.P6: z3.And(other_open, e.record_changed(w.key)),
        Prop.P8: z3.And(new_syn, z3.Or(
            z3.And(e.places_held, z3.Not(z3.And(out.fate == FATE_DROP, e.counted))),
            z3.And(other_open, e.record_changed(w.key)),
            z3.And(refused, z3.Not(e.places_held)),
            z3.And(refused, z3.Not(e.counted)),
        )),
    }[prop]
    return z3.And(e.is_packet, cond)


def _unfair(spec: dict[str, z3.ExprRef], b1: z3.BitVecRef, b2: z3.BitVecRef) -> z3.BoolRef:
    """cnt[b1] / w[b1] - cnt[b2] / w[b2] > 1, multiplied out: with all weights 1, the counts differ by 2 or more."""
    c1, c2, w1, w2 = spec["cnt"][b1], spec["cnt"][b2], spec["weight"][b1], spec["weight"][b2]
    return times(c1, w2) - times(c2, w1) > times(times(z3.IntVal(1), w1), w2)


def _p3_wrong(spec: dict[str, z3.ExprRef], out: Out, n: int, w: Witness, counted: z3.BoolRef) -> z3.BoolRef:
    """Not dispatched to an eligible backend while some backend (witness b1) is eligible, or not dropped-and-counted while none is."""
    none_ok = z3.And(out.fate == FATE_DROP, out.reason == reason(DropReason.NO_ELIGIBLE), counted)
    return z3.Or(
        z3.And(eligible(spec, w.b1, n), z3.Not(z3.And(out.is_backend(), eligible(spec, out.backend, n)))),
        z3.And(z3.Not(any_eligible(spec, n)), z3.Not(none_ok)),
    )
