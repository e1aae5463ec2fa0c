"""The seed's ingress in Z3, bit-precise (3-bit selectors, 13-bit index), mirroring model.seed step for step."""

from __future__ import annotations

import z3

from p4lb.model.config import LbConfig
from p4lb.model.packet import DropReason
from p4lb.model.pool import Pool
from p4lb.model.seed import FALLBACKS, SEED_INDEX_BITS
from p4lb.verify.encoding import (
    FATE_BACKEND,
    FATE_DROP,
    FATE_LOST,
    Branch,
    Out,
    PacketIn,
    StepEnc,
    Sym,
    bv8,
    choose,
    fresh_spec,
    init_spec,
    reason,
    spec_after_packet,
    spec_after_pool,
)
from p4lb.verify.hashing import Hash

N = 4
B3 = z3.BitVecSort(3)


class SeedEncoding:
    """Transition system of the seed: packets, set_max writes, set_statusK writes."""

    name = "seed"

    def __init__(self, cfg: LbConfig, real_hash: bool = True) -> None:
        self.cfg = cfg
        self.n = N
        self.timeout = cfg.idle_timeout_us
        self.hash = Hash(SEED_INDEX_BITS, real_hash, cfg)

    def fresh(self, tag: str) -> Sym:
        """A fresh symbolic state."""
        sw = {
            "flowlet_select": z3.Array(f"flowlet_select_{tag}", z3.BitVecSort(SEED_INDEX_BITS), B3),
            "myselect": z3.BitVec(f"myselect_{tag}", 3),
            "mymax": z3.BitVec(f"mymax_{tag}", 3),
            "set_max": z3.BitVec(f"set_max_{tag}", 3),
            **{f"fail{k}": z3.Bool(f"fail{k}_{tag}") for k in range(1, N + 1)},
        }
        return Sym(sw, fresh_spec(tag))

    def init(self, s: Sym) -> z3.BoolRef:
        """cmd.txt loaded: max 4, no server failed, registers zero."""
        sw = s.sw
        return z3.And(
            sw["flowlet_select"] == z3.K(z3.BitVecSort(SEED_INDEX_BITS), z3.BitVecVal(0, 3)),
            sw["myselect"] == 0,
            sw["mymax"] == 0,
            sw["set_max"] == N,
            *[z3.Not(sw[f"fail{k}"]) for k in range(1, N + 1)],
            init_spec(s.spec, Pool.initial(N)),
        )

    def packet(self, s: Sym, pkt: PacketIn) -> tuple[dict[str, z3.ExprRef], Out]:
        """The ingress for one packet to the VIP (see model.seed.seed_packet)."""
        sw = s.sw
        idx = self.hash(pkt.key)
        regs = sw["flowlet_select"]
        m_max = sw["set_max"]
        myreg = z3.If(sw["mymax"] != m_max, z3.BitVecVal(0, 3), sw["myselect"])
        m_flowlet = regs[idx]
        syn = pkt.bit(0x02)
        sel = myreg + 1
        regs = z3.If(syn, z3.Store(regs, idx, sel), regs)
        m_flowlet = z3.If(syn, sel, m_flowlet)
        m_myselect = z3.If(syn, z3.If(sel == m_max, z3.BitVecVal(0, 3), sel), z3.BitVecVal(0, 3))
        myreg = z3.If(syn, z3.If(sel == m_max, z3.BitVecVal(0, 3), sel), myreg)
        dropped = z3.BoolVal(False)
        known = {k: z3.BoolVal(False) for k in range(1, N + 1)}
        for k in range(1, N + 1):
            known[k] = sw[f"fail{k}"]
            cond = z3.And(syn, known[k], m_flowlet == k)
            c_msel, c_mfl, c_reg, c_regs, c_drop = myreg, regs[idx], myreg, regs, z3.BoolVal(True)
            for other, sel_v, fl_v in reversed(FALLBACKS[k]):
                ok = z3.Not(known[other])
                c_msel = z3.If(ok, z3.BitVecVal(sel_v, 3), c_msel)
                c_mfl = z3.If(ok, z3.BitVecVal(fl_v, 3), c_mfl)
                c_reg = z3.If(ok, z3.BitVecVal(sel_v, 3), c_reg)
                c_regs = z3.If(ok, z3.Store(regs, idx, z3.BitVecVal(fl_v, 3)), c_regs)
                c_drop = z3.If(ok, dropped, c_drop)
            m_myselect = z3.If(cond, c_msel, m_myselect)
            m_flowlet = z3.If(cond, c_mfl, m_flowlet)
            myreg = z3.If(cond, c_reg, myreg)
            regs = z3.If(cond, c_regs, regs)
            dropped = z3.If(cond, c_drop, dropped)
        hit = z3.And(z3.UGE(m_flowlet, 1), z3.ULE(m_flowlet, N))
        fate = z3.If(hit, FATE_BACKEND, z3.If(dropped, FATE_DROP, FATE_LOST))
        out = Out(fate, z3.If(fate == FATE_DROP, bv8(0), z3.ZeroExt(5, m_flowlet)), z3.If(fate == FATE_DROP, reason(DropReason.UNCOUNTED), reason(DropReason.NONE)))
        post = dict(sw, flowlet_select=regs, myselect=myreg, mymax=m_max)
        return post, out

    def set_max(self, s: Sym, k: z3.BitVecRef) -> dict[str, z3.ExprRef]:
        """The write set_max := k (the _max parameter of the VIP's set_max entry)."""
        return dict(s.sw, set_max=k)

    def set_status(self, s: Sym, b: z3.BitVecRef, fail: z3.BoolRef) -> dict[str, z3.ExprRef]:
        """The write set_statusB := fail."""
        sw = dict(s.sw)
        for i in range(1, N + 1):
            sw[f"fail{i}"] = z3.If(b == i, fail, s.sw[f"fail{i}"])
        return sw

    def write_step(self, s: Sym, tag: str, target: str) -> tuple[dict[str, z3.ExprRef], z3.BitVecRef, list[z3.BoolRef]]:
        """(post-state, the written value as a bit-vector, assumptions) of one controller write to `target`."""
        if target == "set_max":
            k = z3.BitVec(f"k_{tag}", 3)
            return self.set_max(s, k), k, []
        b = int(target.removeprefix("set_status"))
        fail = z3.BitVec(f"fail_{tag}", 1)
        return self.set_status(s, bv8(b), fail == 1), fail, []

    def step(self, s: Sym, s2: Sym, tag: str, atomic: bool = True, others: bool = False) -> StepEnc:
        """Any packet, or one controller write: set_max := k (0..4) or set_statusB := fail (one service: `others` has no effect)."""
        kind = z3.BitVec(f"kind_{tag}", 2)
        pkt = PacketIn.fresh(tag)
        reset = z3.Bool(f"reset_{tag}")
        k = z3.BitVec(f"k_{tag}", 3)
        b = z3.BitVec(f"b_{tag}", 8)
        fail = z3.Bool(f"fail_{tag}")
        sw_pkt, out = self.packet(s, pkt)
        spec_pkt = spec_after_packet(s.spec, pkt, out, reset, self.timeout)
        is_packet = kind == 0
        branches = [Branch("packet", pkt.t >= s.spec["now"], sw_pkt, spec_pkt)]
        active = s.spec["active"]
        for i in range(1, N + 1):
            active = z3.Store(active, bv8(i), z3.ULE(z3.BitVecVal(i, 3), k))
        # the seed's controller writes only a changed parameter (model.seed.seed_plan): an operation is a real write
        branches.append(Branch("set_max", z3.And(z3.ULE(k, N), k != s.sw["set_max"]), self.set_max(s, k), spec_after_pool(s.spec, {"active": active}, N, True)))
        sw = self.set_status(s, b, fail)
        sets = {"healthy": z3.Store(s.spec["healthy"], b, z3.Not(fail))}
        current = z3.Or(*[z3.And(b == i, s.sw[f"fail{i}"]) for i in range(1, N + 1)])
        branches.append(Branch("set_status", z3.And(z3.UGE(b, 1), z3.ULE(b, N), fail != current), sw, spec_after_pool(s.spec, sets, N, True)))
        trans = choose(kind, s2, branches)
        before, after = s.sw["flowlet_select"], s2.sw["flowlet_select"]
        return StepEnc(
            trans=trans,
            is_packet=is_packet,
            pkt=pkt,
            out=out,
            places_held=z3.BoolVal(False),
            counted=z3.BoolVal(False),
            record_changed=lambda key: before[self.hash(key)] != after[self.hash(key)],
            inputs={"kind": kind, "k": k, "b": b, "fail": fail, "reset": reset},
            branches=branches,
        )
