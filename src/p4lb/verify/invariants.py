"""p4lb's inductive invariant: the committed group lists the eligible set by weight, flow slots and the spec agree, fair counts.

Every clause family is universally quantified over a position j, a backend b, a flow key k or a slot s. A query
uses the instances at finitely many terms (the watched ones, the packet's, the witnesses', and what they point
to); using fewer instances of an assumption only weakens it, so an 'unsat' stays a proof. This keeps each query's
size independent of N except for the few O(N) set comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass

import z3

from p4lb.verify.encoding import KEY, SERVICE, StepEnc, Sym, bv8
from p4lb.verify.p4lb_enc import FREE, OPEN, Ghosts, P4lbEncoding, service_of
from p4lb.verify.properties import Witness

Clause = tuple[str, z3.BoolRef]
RELY_ONLY = "K0"  # the clause only other services' packets need: queries without them may leave its instances out


def _ind(i: z3.ExprRef, start: z3.ExprRef, p: z3.ExprRef) -> z3.ExprRef:
    """1 if position i lies in the cyclic interval [start, p), else 0."""
    inside = z3.If(z3.ULE(start, p), z3.And(z3.ULE(start, i), z3.ULT(i, p)), z3.Or(z3.UGE(i, start), z3.ULT(i, p)))
    return z3.If(inside, z3.IntVal(1), z3.IntVal(0))


def global_clauses(enc: P4lbEncoding, s: Sym) -> list[Clause]:
    """Clauses with no quantified variable."""
    sw, spec = s.sw, s.spec
    size, _, nxt = enc.group(s, sw["version"])
    return [
        ("G2 rr_next inside the group", z3.Or(size == 0, z3.ULT(nxt, size))),
        ("G3 window start inside the group", z3.Or(size == 0, z3.ULT(sw["ghost_start"], size))),
        ("G5 switch clock = spec clock", sw["now"] == spec["now"]),
    ]


def position_clauses(enc: P4lbEncoding, s: Sym, j: z3.ExprRef) -> list[Clause]:
    """Position j: holds a copy of an eligible backend recorded at j; its count of new flows is base + [j in [start, rr_next))."""
    sw, pc = s.sw, s.sw["ghost_pc"]
    size, mem, nxt = enc.group(s, sw["version"])
    fair = z3.Implies(z3.ULT(j, size), pc[j] == pc[nxt] + _ind(j, sw["ghost_start"], nxt))
    return [
        ("G1a group position holds an eligible backend's copy", enc.wf_position(size, mem, Ghosts.of(sw), s.spec, j)),
        ("G4 position counts = base + cyclic interval [start, rr_next)", fair),
    ]


def backend_clauses(enc: P4lbEncoding, s: Sym, b: z3.ExprRef) -> list[Clause]:
    """An eligible backend is in the group weight times, at its recorded positions; its count is the sum of theirs."""
    sw, spec = s.sw, s.spec
    size, mem, _ = enc.group(s, sw["version"])
    gh = Ghosts.of(sw)
    w = enc.weight(spec, b)
    total = z3.Sum([z3.If(z3.ULT(bv8(r), w), sw["ghost_pc"][p], z3.IntVal(0)) for r, p in enumerate(gh.copies(b))])
    return [
        ("G1b eligible backend is in the group weight times", enc.wf_backend(size, mem, gh, spec, b)),
        ("G6 a backend's count = its positions' counts", z3.Implies(enc.planned(spec, b), spec["cnt"][b] == total)),
    ]


def key_clauses(enc: P4lbEncoding, s: Sym, k: z3.ExprRef) -> list[Clause]:
    """An open, unexpired flow is exactly what its recorded place holds; a place holding a key holds its admitted backend."""
    sw, spec = s.sw, s.spec
    h = enc.place_of(s, k)
    live = z3.And(spec["open"][k], sw["now"] - spec["last"][k] <= enc.timeout)
    held = z3.And(
        z3.ULT(sw["ghost_cand"][k], enc.places.count),
        sw["flow_state"][h] == OPEN,
        sw["flow_key"][h] == k,
        sw["flow_backend"][h] == spec["backend"][k],
        sw["flow_last_seen"][h] == spec["last"][k],
        z3.UGE(spec["backend"][k], 1),
        z3.ULE(spec["backend"][k], enc.n),
    )
    stored = z3.And(service_of(k) == SERVICE, sw["flow_key"][h] == k, sw["flow_state"][h] != FREE)
    admitted = z3.And(spec["admitted"][k], sw["flow_backend"][h] == spec["backend"][k])
    mine = z3.Implies(z3.Or(spec["open"][k], spec["admitted"][k]), service_of(k) == SERVICE)
    return [("K0 the spec's flows are this service's", mine), ("K1 an open flow owns its recorded place", z3.Implies(live, held)), ("K2 a place holding a key of this service holds its admitted backend", z3.Implies(stored, admitted))]


def slot_clauses(enc: P4lbEncoding, s: Sym, slot: z3.ExprRef) -> list[Clause]:
    """A used place is its key's recorded place (one of its candidates: so at most one place holds a key); a live OPEN one is an open flow's."""
    sw, spec = s.sw, s.spec
    k = sw["flow_key"][slot]
    used = z3.And(sw["flow_state"][slot] != FREE, service_of(k) == SERVICE)  # another service's entries are its own invariant's
    recorded = z3.And(z3.ULT(sw["ghost_cand"][k], enc.places.count), enc.place_of(s, k) == slot)
    live = z3.And(sw["flow_state"][slot] == OPEN, sw["now"] - sw["flow_last_seen"][slot] <= enc.timeout, service_of(k) == SERVICE)
    owner = z3.And(spec["open"][k], spec["last"][k] == sw["flow_last_seen"][slot], spec["backend"][k] == sw["flow_backend"][slot])
    return [("S1 a live place of this service is an open flow's", z3.Implies(live, owner)), ("S2 a used place of this service is its key's recorded place", z3.Implies(used, recorded))]


@dataclass
class Watched:
    """The fresh terms an induction query is about."""

    j: z3.BitVecRef
    b: z3.BitVecRef
    k: z3.BitVecRef
    slot: z3.BitVecRef

    @classmethod
    def fresh(cls, enc: P4lbEncoding) -> Watched:
        return cls(z3.BitVec("j_star", 8), z3.BitVec("b_star", 8), z3.BitVec("k_star", KEY.size()), z3.BitVec("slot_star", enc.cfg.flow_table_bits))


def terms(enc: P4lbEncoding, s: Sym, e: StepEnc, w: Witness, watched: Watched, occupants: bool = True) -> tuple[list[z3.ExprRef], list[z3.ExprRef], list[z3.ExprRef], list[z3.ExprRef]]:
    """Positions, backends, keys and slots to instantiate the clauses of state s at; with `occupants`, the keys held at
    the packet's candidates too (P8 needs them: a refusal says who holds each place). Any subset of instances is sound
    (the invariant holds at every term); fewer make smaller queries."""
    size, mem, nxt = enc.group(s, s.sw["version"])
    i, nxt2 = enc.dispatch_positions(s)
    gh = Ghosts.of(s.sw)
    positions = [watched.j, nxt, i, nxt2]
    backends = [watched.b, w.b1, w.b2, e.out.backend, *[mem[j] for j in positions]]
    positions += [p for b in (w.b1, w.b2) for p in gh.copies(b)]  # P5 bounds b1's and b2's counts by their copies' counts
    keys = [watched.k, e.pkt.key, w.key]
    candidates = list(enc.places.all(e.pkt.key))
    slots = [watched.slot, *candidates, *(enc.place_of(s, k) for k in keys)]
    if occupants:
        keys += [s.sw["flow_key"][sl] for sl in candidates]
    return positions, backends, keys, slots


def clauses_at(enc: P4lbEncoding, s: Sym, positions: list[z3.ExprRef], backends: list[z3.ExprRef], keys: list[z3.ExprRef], slots: list[z3.ExprRef], rely: bool = True) -> list[Clause]:
    """Every clause family at every given term (without `rely`: not K0, which only steps of other services need)."""
    out = list(global_clauses(enc, s))
    for j in positions:
        out += position_clauses(enc, s, j)
    for b in backends:
        out += backend_clauses(enc, s, b)
    for k in keys:
        out += [c for c in key_clauses(enc, s, k) if rely or not c[0].startswith(RELY_ONLY)]
    for sl in slots:
        out += slot_clauses(enc, s, sl)
    return out


def conj(clauses: list[Clause]) -> z3.BoolRef:
    """And of clauses."""
    return z3.And(*[c for _, c in clauses])


def watched_clauses(enc: P4lbEncoding, s: Sym, watched: Watched) -> list[Clause]:
    """The invariant at the watched terms: what an induction step must re-establish."""
    return clauses_at(enc, s, [watched.j], [watched.b], [watched.k], [watched.slot])


def clause_names(enc: P4lbEncoding) -> list[str]:
    """Names of the invariant's clause families."""
    s = enc.fresh("names")
    w = Watched.fresh(enc)
    return [name for name, _ in watched_clauses(enc, s, w)]
