"""Shared pieces of the Z3 encoding: symbolic states, packet inputs, the spec's ghost state and its update."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import z3

from p4lb.model.packet import DropReason, Fate
from p4lb.model.pool import MAX_WEIGHT, Pool

B8 = z3.BitVecSort(8)
KEY = z3.BitVecSort(56)  # a flow key: service (8) ++ client address (32) ++ client port (16), as model.packet.flow_key
SERVICE = z3.BitVec("service", 8)  # the service of every packet the proofs send: any id (one constant, so P1-P8 hold for each)
INT = z3.IntSort()
BOOL = z3.BoolSort()

FATE_BACKEND, FATE_DROP, FATE_LOST = (z3.BitVecVal(int(f), 2) for f in Fate)


def bv8(x: int) -> z3.BitVecRef:
    """An 8-bit constant."""
    return z3.BitVecVal(x, 8)


def subterms(exprs: Sequence[z3.ExprRef]) -> Iterator[z3.ExprRef]:
    """Every subterm of some terms, each once, in the order first met."""
    seen: set[int] = set()
    todo = list(exprs)
    while todo:
        x = todo.pop()
        if x.get_id() in seen:
            continue
        seen.add(x.get_id())
        yield x
        todo.extend(x.children())


def uninterpreted(exprs: Sequence[z3.ExprRef]) -> list[z3.ExprRef]:
    """The uninterpreted constants in some terms, each once, in the order first met."""
    return [x for x in subterms(exprs) if z3.is_const(x) and x.decl().kind() == z3.Z3_OP_UNINTERPRETED]


def reason(r: DropReason) -> z3.BitVecRef:
    """A drop reason constant."""
    return z3.BitVecVal(int(r), 3)


COUNTED = tuple(r for r in DropReason if r.counted)  # the lb_drops indices the switch increments (model.packet)


@dataclass
class Sym:
    """A symbolic state: switch variables and spec (ghost) variables, each a Z3 term by name."""

    sw: dict[str, z3.ExprRef]
    spec: dict[str, z3.ExprRef]

    def all(self) -> dict[str, z3.ExprRef]:
        """Every variable, prefixed by its part."""
        return {**{f"sw.{k}": v for k, v in self.sw.items()}, **{f"spec.{k}": v for k, v in self.spec.items()}}


def equal(a: dict[str, z3.ExprRef], b: dict[str, z3.ExprRef]) -> z3.BoolRef:
    """All named terms equal."""
    return z3.And([a[k] == b[k] for k in a])


def fresh_spec(tag: str) -> dict[str, z3.ExprRef]:
    """Ghost state: operator sets, admitted flows, fairness counts, whether the controller has written."""
    return {
        "active": z3.Array(f"active_{tag}", B8, BOOL),
        "healthy": z3.Array(f"healthy_{tag}", B8, BOOL),
        "draining": z3.Array(f"draining_{tag}", B8, BOOL),
        "weight": z3.Array(f"weight_{tag}", B8, B8),
        "open": z3.Array(f"open_{tag}", KEY, BOOL),
        "backend": z3.Array(f"fbackend_{tag}", KEY, B8),
        "admitted": z3.Array(f"admitted_{tag}", KEY, BOOL),
        "last": z3.Array(f"flast_{tag}", KEY, INT),
        "cnt": z3.Array(f"cnt_{tag}", B8, INT),
        "wrote": z3.Bool(f"wrote_{tag}"),
        "now": z3.Int(f"now_{tag}"),
    }


def pool_terms(pool: Pool) -> dict[str, z3.ExprRef]:
    """A concrete pool as three arrays and the weights."""
    def arr(members: frozenset[int]) -> z3.ArrayRef:
        a = z3.K(B8, z3.BoolVal(False))
        for b in sorted(members):
            a = z3.Store(a, bv8(b), z3.BoolVal(True))
        return a

    weights = z3.K(B8, bv8(1))
    for b in range(1, pool.n + 1):
        weights = z3.Store(weights, bv8(b), bv8(pool.weight(b)))
    return {"active": arr(pool.active), "healthy": arr(pool.healthy), "draining": arr(pool.draining), "weight": weights}


def pool_spec(spec: dict[str, z3.ExprRef], pool: Pool) -> z3.BoolRef:
    """The spec's operator sets and weights are `pool`'s (backends 0..N)."""
    sets = pool_terms(pool)
    return z3.And(*[spec[k][bv8(b)] == sets[k][bv8(b)] for k in sets for b in range(pool.n + 1)])


def init_spec(spec: dict[str, z3.ExprRef], pool: Pool) -> z3.BoolRef:
    """No flow open, counts zero, nothing written yet, the deployed pool."""
    return z3.And(pool_spec(spec, pool), no_flows_spec(spec))


def no_flows_spec(spec: dict[str, z3.ExprRef]) -> z3.BoolRef:
    """No flow open or admitted, counts zero, nothing written yet, the clock at 0 (the pool unconstrained)."""
    return z3.And(
        spec["open"] == z3.K(KEY, z3.BoolVal(False)),
        spec["admitted"] == z3.K(KEY, z3.BoolVal(False)),
        spec["cnt"] == z3.K(B8, z3.IntVal(0)),
        z3.Not(spec["wrote"]),
        spec["now"] == 0,
    )


def eligible(spec: dict[str, z3.ExprRef], b: z3.ExprRef, n: int) -> z3.BoolRef:
    """Backend b (a term) is in 1..n, active, healthy and not draining."""
    return z3.And(z3.UGE(b, 1), z3.ULE(b, n), spec["active"][b], spec["healthy"][b], z3.Not(spec["draining"][b]))


def any_eligible(spec: dict[str, z3.ExprRef], n: int) -> z3.BoolRef:
    """Some backend is eligible."""
    return z3.Or(*[eligible(spec, bv8(b), n) for b in range(1, n + 1)])


def shares_changed(old: dict[str, z3.ExprRef], new: dict[str, z3.ExprRef], n: int) -> z3.BoolRef:
    """The eligible set, or the weight of an eligible backend, differs (P5's run starts again)."""
    return z3.Or(*[z3.Or(eligible(old, bv8(b), n) != eligible(new, bv8(b), n), z3.And(eligible(new, bv8(b), n), old["weight"][bv8(b)] != new["weight"][bv8(b)])) for b in range(1, n + 1)])


def weights_ok(spec: dict[str, z3.ExprRef], n: int) -> z3.BoolRef:
    """Every backend's weight is in 1..MAX_WEIGHT."""
    return z3.And(*[z3.And(z3.UGE(spec["weight"][bv8(b)], 1), z3.ULE(spec["weight"][bv8(b)], MAX_WEIGHT)) for b in range(1, n + 1)])


def times(c: z3.ArithRef, w: z3.BitVecRef) -> z3.ArithRef:
    """c * w for a weight w in 0..MAX_WEIGHT, as a sum of If terms (linear: no nonlinear arithmetic in the queries)."""
    return z3.Sum([z3.If(z3.UGT(w, k), c, z3.IntVal(0)) for k in range(MAX_WEIGHT)])


@dataclass
class PacketIn:
    """A packet's symbolic fields."""

    src_ip: z3.BitVecRef
    src_port: z3.BitVecRef
    flags: z3.BitVecRef
    t: z3.ArithRef
    service: z3.BitVecRef = SERVICE

    @classmethod
    def fresh(cls, tag: str) -> PacketIn:
        return cls(z3.BitVec(f"src_{tag}", 32), z3.BitVec(f"sport_{tag}", 16), z3.BitVec(f"flags_{tag}", 8), z3.Int(f"t_{tag}"))

    @property
    def key(self) -> z3.BitVecRef:
        return z3.Concat(self.service, self.src_ip, self.src_port)

    def bit(self, mask: int) -> z3.BoolRef:
        return self.flags & mask != 0

    @property
    def syn(self) -> z3.BoolRef:
        """FlagClass.SYN."""
        return z3.And(self.bit(0x02), z3.Not(self.bit(0x10)), z3.Not(self.bit(0x05)))

    @property
    def close(self) -> z3.BoolRef:
        """FlagClass.CLOSE."""
        return z3.And(self.bit(0x05), z3.Not(self.bit(0x02)))

    @property
    def malformed(self) -> z3.BoolRef:
        """FlagClass.MALFORMED."""
        return z3.And(self.bit(0x02), self.bit(0x05))


@dataclass
class Out:
    """A packet's symbolic outcome."""

    fate: z3.BitVecRef
    backend: z3.BitVecRef
    reason: z3.BitVecRef

    def is_backend(self) -> z3.BoolRef:
        return self.fate == FATE_BACKEND


def open_at(spec: dict[str, z3.ExprRef], key: z3.ExprRef, t: z3.ArithRef, timeout: int) -> z3.BoolRef:
    """The flow is open at time t."""
    return z3.And(spec["open"][key], t - spec["last"][key] <= timeout)


def spec_after_packet(spec: dict[str, z3.ExprRef], pkt: PacketIn, out: Out, reset: z3.BoolRef, timeout: int) -> dict[str, z3.ExprRef]:
    """The spec's ghost state after a packet (mirrors model.spec.spec_packet)."""
    key, t = pkt.key, pkt.t
    is_open = open_at(spec, key, t, timeout)
    admitted = z3.And(z3.Not(is_open), pkt.syn, out.is_backend())
    refresh = z3.Or(z3.And(is_open, z3.Not(pkt.close), z3.Not(pkt.malformed)), admitted)
    cnt = z3.If(reset, z3.K(B8, z3.IntVal(0)), spec["cnt"])
    new = dict(spec)
    new["open"] = z3.If(z3.And(is_open, pkt.close), z3.Store(spec["open"], key, False), z3.If(admitted, z3.Store(spec["open"], key, True), spec["open"]))
    new["last"] = z3.If(refresh, z3.Store(spec["last"], key, t), spec["last"])
    new["backend"] = z3.If(admitted, z3.Store(spec["backend"], key, out.backend), spec["backend"])
    new["admitted"] = z3.If(admitted, z3.Store(spec["admitted"], key, True), spec["admitted"])
    new["cnt"] = z3.If(admitted, z3.Store(cnt, out.backend, cnt[out.backend] + 1), cnt)
    new["now"] = t
    return new


def spec_after_pool(spec: dict[str, z3.ExprRef], sets: dict[str, z3.ExprRef], n: int, wrote: bool) -> dict[str, z3.ExprRef]:
    """The spec after the operator's sets change (a commit or a change that needs no write)."""
    new = dict(spec)
    new.update(sets)
    new["cnt"] = z3.If(shares_changed(spec, new, n), z3.K(B8, z3.IntVal(0)), spec["cnt"])
    if wrote:
        new["wrote"] = z3.BoolVal(True)
    return new


@dataclass
class Branch:
    """One kind of step: when it can happen and the post-state it produces."""

    name: str
    guard: z3.BoolRef
    sw: dict[str, z3.ExprRef]
    spec: dict[str, z3.ExprRef]
    weak: Callable[[list[Any], list[Any]], z3.BoolRef] | None = None  # (positions, backends) -> a weaker guard, instantiated only at those terms (for induction)

    def guard_at(self, positions: list[Any], backends: list[Any]) -> z3.BoolRef:
        """The guard for an induction query: exact, or its instances at the given terms (weaker, so still sound)."""
        return self.guard if self.weak is None else self.weak(positions, backends)


def choose(kind: z3.BitVecRef, s2: Sym, branches: list[Branch]) -> z3.BoolRef:
    """The transition relation: branch i when kind == i."""
    return z3.Or(*[z3.And(kind == i, b.guard, equal(s2.sw, b.sw), equal(s2.spec, b.spec)) for i, b in enumerate(branches)])


@dataclass
class StepEnc:
    """One symbolic step: its transition formula and what the property checks read."""

    trans: z3.BoolRef
    is_packet: z3.BoolRef
    pkt: PacketIn
    out: Out
    places_held: z3.BoolRef  # every place the packet's flow could take holds another open flow (designs that store keys)
    counted: z3.BoolRef  # the lb_drops counter at the outcome's reason went up by one (False for designs without counters)
    record_changed: Callable[[z3.ExprRef], z3.BoolRef]  # key term -> BoolRef: that key's per-flow record differs between pre and post
    inputs: dict[str, z3.ExprRef] = field(default_factory=dict)
    branches: list[Branch] = field(default_factory=list)
    place: z3.ExprRef | None = None  # the one flow place the step may write (p4lb: the packet's, or another service's packet's)
