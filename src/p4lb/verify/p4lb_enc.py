"""p4lb (and its mutants) in Z3, mirroring model.p4lb: versioned group tables, keyed flow slots, staged updates."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import z3

from p4lb.model.config import LbConfig
from p4lb.model.p4lb import P4LB, FlowEntry, SlotState, Variant
from p4lb.model.packet import DropReason
from p4lb.model.pool import MAX_POSITIONS, MAX_WEIGHT, Pool
from p4lb.verify.encoding import (
    B8,
    BOOL,
    COUNTED,
    FATE_BACKEND,
    FATE_DROP,
    INT,
    KEY,
    SERVICE,
    Branch,
    Out,
    PacketIn,
    StepEnc,
    Sym,
    bv8,
    choose,
    fresh_spec,
    no_flows_spec,
    open_at,
    pool_spec,
    reason,
    spec_after_packet,
    spec_after_pool,
    weights_ok,
)
from p4lb.verify.hashing import Places

ST = z3.BitVecSort(2)
CELL = z3.BitVecSort(16)  # backend_open cells: service ++ backend id
R3 = z3.BitVecSort(3)
FREE, OPEN, CLOSING = (z3.BitVecVal(int(x), 2) for x in SlotState)


VB = z3.BitVecSort(16)  # a backend's copy: backend ++ rank


@dataclass(frozen=True)
class Ghosts:
    """The proof's record of the committed group: pos[b ++ r] is where backend b's r-th copy sits, rank[j] which copy position j is."""

    pos: z3.ArrayRef
    rank: z3.ArrayRef

    def copies(self, b: z3.ExprRef) -> list[z3.ExprRef]:
        """The positions of backend b's copies 0..MAX_WEIGHT-1 (those below its weight are used)."""
        return [self.pos[z3.Concat(b, bv8(r))] for r in range(MAX_WEIGHT)]

    @classmethod
    def of(cls, sw: dict[str, z3.ExprRef]) -> Ghosts:
        """The ghosts of a state."""
        return cls(sw["ghost_pos"], sw["ghost_rank"])


def pick(ver: z3.BoolRef, v0: z3.ExprRef, v1: z3.ExprRef) -> z3.ExprRef:
    """The version-`ver` copy of a per-version variable."""
    return z3.If(ver, v1, v0)


@dataclass(frozen=True)
class Lookup:
    """A packet's view of its candidates: the one holding its key (found, c), the one a new flow takes (room, new)."""

    places: list[z3.ExprRef]
    found: z3.BoolRef
    c: z3.ExprRef
    room: z3.BoolRef
    new: z3.ExprRef
    others_open: z3.BoolRef  # every candidate holds another flow that the spec says is open
    match: tuple[z3.BoolRef, ...] = ()  # per candidate: it holds the key (model.p4lb.find's test)
    held: tuple[z3.BoolRef, ...] = ()  # per candidate: another open flow holds it (model.p4lb.held)


def _first(flags: list[z3.BoolRef], n: int) -> tuple[z3.BoolRef, z3.ExprRef]:
    """(some flag is set, the index of the first set flag as an 8-bit term)."""
    idx = bv8(n - 1)
    for i in range(n - 2, -1, -1):
        idx = z3.If(flags[i], bv8(i), idx)
    return z3.Or(*flags), idx


def service_of(key: z3.ExprRef) -> z3.BitVecRef:
    """A flow key's service (its top 8 bits: model.packet.key_service)."""
    return z3.Extract(KEY.size() - 1, KEY.size() - 8, key)


def open_cell(key: z3.ExprRef, b: z3.ExprRef) -> z3.BitVecRef:
    """backend_open's cell of an entry with flow key `key` and backend b: its service ++ b (model.p4lb.open_cell)."""
    return z3.Concat(service_of(key), b)


RELY = 4  # the kind of step of another service's packet
SHARED = ("flow_state", "flow_key", "flow_backend", "flow_last_seen", "backend_open", "now")  # what every service's packets share


def _count(flags: list[z3.BoolRef]) -> z3.ExprRef:
    """How many flags are set, as an 8-bit term."""
    return z3.Sum([z3.If(f, bv8(1), bv8(0)) for f in flags]) if len(flags) > 1 else z3.If(flags[0], bv8(1), bv8(0))


class P4lbEncoding:
    """Transition system of p4lb: packets, and controller operations as atomic commits (A) or single writes (B)."""

    name = "p4lb"

    def __init__(self, cfg: LbConfig, variant: Variant = P4LB, real_hash: bool = False, follow_planner: bool = False) -> None:
        self.cfg = cfg
        self.n = cfg.n
        self.var = variant
        self.follow_planner = follow_planner  # an atomic commit of weight-1 groups lists the model planner's order (see in_place)
        self.timeout = cfg.idle_timeout_us
        self.places = Places(cfg, real_hash)
        self.idx = z3.BitVecSort(cfg.flow_table_bits)

    # ---- state -----------------------------------------------------------------------------------------

    def fresh(self, tag: str) -> Sym:
        """A fresh symbolic state (sw includes the proof's ghosts: pos, rank, pc and start)."""
        sw = {
            "version": z3.Bool(f"version_{tag}"),
            "rr_group0": z3.BitVec(f"rr_group0_{tag}", 8),
            "rr_group1": z3.BitVec(f"rr_group1_{tag}", 8),
            "rr_member0": z3.Array(f"rr_member0_{tag}", B8, B8),
            "rr_member1": z3.Array(f"rr_member1_{tag}", B8, B8),
            "rr_next0": z3.BitVec(f"rr_next0_{tag}", 8),
            "rr_next1": z3.BitVec(f"rr_next1_{tag}", 8),
            "flow_state": z3.Array(f"flow_state_{tag}", self.idx, ST),
            "flow_key": z3.Array(f"flow_key_{tag}", self.idx, KEY),
            "flow_backend": z3.Array(f"flow_backend_{tag}", self.idx, B8),
            "flow_last_seen": z3.Array(f"flow_last_seen_{tag}", self.idx, INT),
            "now": z3.Int(f"now_sw_{tag}"),
            "lb_drops": z3.Array(f"lb_drops_{tag}", R3, INT),
            "backend_flows": z3.Array(f"backend_flows_{tag}", B8, INT),
            "backend_open": z3.Array(f"backend_open_{tag}", CELL, INT),
            "ghost_pos": z3.Array(f"ghost_pos_{tag}", VB, B8),
            "ghost_rank": z3.Array(f"ghost_rank_{tag}", B8, B8),
            "ghost_pc": z3.Array(f"ghost_pc_{tag}", B8, INT),
            "ghost_start": z3.BitVec(f"ghost_start_{tag}", 8),
            "ghost_cand": z3.Array(f"ghost_cand_{tag}", KEY, B8),
        }
        return Sym(sw, fresh_spec(tag))

    def group(self, s: Sym, ver: z3.BoolRef) -> tuple[z3.ExprRef, z3.ExprRef, z3.ExprRef]:
        """(rr_group, rr_member, rr_next) of a version."""
        sw = s.sw
        return pick(ver, sw["rr_group0"], sw["rr_group1"]), pick(ver, sw["rr_member0"], sw["rr_member1"]), pick(ver, sw["rr_next0"], sw["rr_next1"])

    def planned(self, spec: dict[str, z3.ExprRef], b: z3.ExprRef) -> z3.BoolRef:
        """The set the planner lists (the eligible set, or a mutant's wrong set)."""
        rng = z3.And(z3.UGE(b, 1), z3.ULE(b, self.n))
        if self.var.eligible_ignores_health:
            return z3.And(rng, spec["active"][b], z3.Not(spec["draining"][b]))
        if self.var.eligible_ignores_active:
            return z3.And(rng, spec["healthy"][b], z3.Not(spec["draining"][b]))
        return z3.And(rng, spec["active"][b], spec["healthy"][b], z3.Not(spec["draining"][b]))

    def weight(self, spec: dict[str, z3.ExprRef], b: z3.ExprRef) -> z3.BitVecRef:
        """How many times the planner lists backend b (its weight; 1 for the mutant that ignores weights)."""
        return bv8(1) if self.var.ignores_weights else spec["weight"][b]

    def wf_position(self, size: z3.ExprRef, mem: z3.ExprRef, gh: Ghosts, spec: dict[str, z3.ExprRef], j: z3.ExprRef) -> z3.BoolRef:
        """Position j of the group (if used) holds a planned backend b as its copy rank[j] < weight(b), recorded at pos[b, rank[j]]."""
        m, r = mem[j], gh.rank[j]
        return z3.Implies(z3.ULT(j, size), z3.And(self.planned(spec, m), z3.ULT(r, self.weight(spec, m)), gh.pos[z3.Concat(m, r)] == j))

    def wf_backend(self, size: z3.ExprRef, mem: z3.ExprRef, gh: Ghosts, spec: dict[str, z3.ExprRef], b: z3.ExprRef) -> z3.BoolRef:
        """A planned backend b has weight 1..MAX_WEIGHT and its r-th copy (r < weight) sits at position pos[b, r] with rank r."""
        w = self.weight(spec, b)
        copies = [z3.Implies(z3.ULT(bv8(r), w), z3.And(z3.ULT(p, size), mem[p] == b, gh.rank[p] == r)) for r, p in enumerate(gh.copies(b))]
        return z3.Implies(self.planned(spec, b), z3.And(z3.UGE(w, 1), z3.ULE(w, MAX_WEIGHT), *copies))

    def wellformed(self, size: z3.ExprRef, mem: z3.ExprRef, gh: Ghosts, spec: dict[str, z3.ExprRef], positions: list[z3.ExprRef] | None = None, backends: list[z3.ExprRef] | None = None) -> z3.BoolRef:
        """The group lists each planned backend weight times (all positions and backends, or only the given terms)."""
        positions = [bv8(i) for i in range(min(self.n * MAX_WEIGHT, MAX_POSITIONS))] if positions is None else positions
        backends = [bv8(b) for b in range(1, self.n + 1)] if backends is None else backends
        return z3.And(
            *[self.wf_position(size, mem, gh, spec, j) for j in positions],
            *[self.wf_backend(size, mem, gh, spec, b) for b in backends],
        )

    def dispatch_positions(self, s: Sym) -> tuple[z3.ExprRef, z3.ExprRef]:
        """(position a new flow would take, rr_next after it) in the committed version."""
        size, _, nxt = self.group(s, s.sw["version"])
        wrap = not self.var.no_pointer_wrap
        i = z3.If(z3.And(z3.UGE(nxt, size), z3.BoolVal(wrap)), bv8(0), nxt)
        return i, z3.If(z3.And(z3.UGE(i + 1, size), z3.BoolVal(wrap)), bv8(0), i + 1)

    def planned_changed(self, old: dict[str, z3.ExprRef], new: dict[str, z3.ExprRef]) -> z3.BoolRef:
        """The planner's group differs (for p4lb: the eligible set or an eligible backend's weight changed)."""
        def differs(b: z3.BitVecRef) -> z3.BoolRef:
            return z3.Or(self.planned(old, b) != self.planned(new, b), z3.And(self.planned(new, b), self.weight(old, b) != self.weight(new, b)))

        return z3.Or(*[differs(bv8(b)) for b in range(1, self.n + 1)])

    def init(self, s: Sym) -> z3.BoolRef:
        """Deployed: version 0 lists backends 1..N, version 1 empty, every slot free, nothing open."""
        sw = s.sw
        return z3.And(
            self.deployed_groups(s),
            sw["ghost_pc"] == z3.K(B8, z3.IntVal(0)),
            sw["flow_state"] == z3.K(self.idx, FREE),
            sw["now"] == 0,
            sw["lb_drops"] == z3.K(R3, z3.IntVal(0)),
            sw["backend_flows"] == z3.K(B8, z3.IntVal(0)),
            sw["backend_open"] == z3.K(CELL, z3.IntVal(0)),
            no_flows_spec(s.spec),  # the pool: deployed_groups
        )

    def deployed_groups(self, s: Sym) -> z3.BoolRef:
        """The group tables and the pool as deployed (version 0 lists backends 1..N, version 1 empty); flows unconstrained."""
        sw, n = s.sw, self.n
        return z3.And(
            z3.Not(sw["version"]),
            sw["rr_group0"] == n,
            *[sw["rr_member0"][bv8(i)] == i + 1 for i in range(n)],
            *[sw["ghost_pos"][z3.Concat(bv8(b), bv8(0))] == b - 1 for b in range(1, n + 1)],
            *[sw["ghost_rank"][bv8(i)] == 0 for i in range(n)],
            sw["rr_group1"] == 0,
            sw["rr_next0"] == 0,
            sw["rr_next1"] == 0,
            sw["ghost_start"] == 0,
            pool_spec(s.spec, Pool.initial(n)),
        )

    # ---- packets ---------------------------------------------------------------------------------------

    def has_entry(self, b: z3.ExprRef) -> z3.BoolRef:
        """The `backend` table has entries 1..N only; a miss is dropped and counted as NO_BACKEND_ENTRY."""
        return z3.And(z3.UGE(b, 1), z3.ULE(b, self.n))

    def lookup(self, s: Sym, key: z3.ExprRef, t: z3.ExprRef) -> Lookup:
        """The packet's candidates (model.p4lb.find, held and flowtable.choose): the one holding the key, the one a new flow takes."""
        sw, shape = s.sw, self.cfg.shape
        places = self.places.all(key)
        fs = [sw["flow_state"][p] for p in places]
        fk = [sw["flow_key"][p] for p in places]
        fl = [sw["flow_last_seen"][p] for p in places]
        match = [z3.And(f != FREE, k == key) for f, k in zip(fs, fk, strict=True)]
        held = [f != FREE if self.var.refuse_stale else z3.And(f == OPEN, t - last <= self.timeout) for f, last in zip(fs, fl, strict=True)]
        found, c = _first(match, len(places))
        way, best = bv8(0), _count(held[0 : shape.bucket])
        for j in range(1, shape.ways):
            load = _count(held[j * shape.bucket : (j + 1) * shape.bucket])
            way, best = z3.If(z3.ULT(load, best), bv8(j), way), z3.If(z3.ULT(load, best), load, best)
        free = [z3.Or(*[z3.And(way == j, z3.Not(held[j * shape.bucket + i])) for j in range(shape.ways)]) for i in range(shape.bucket)]
        room, i = _first(free, shape.bucket)
        others_open = z3.And(*[z3.And(f != FREE, k != key, self.open_flow(s, f, k, last, t)) for f, k, last in zip(fs, fk, fl, strict=True)])
        return Lookup(places, found, c, room, way * shape.bucket + i, others_open, tuple(match), tuple(held))

    def open_flow(self, s: Sym, state: z3.ExprRef, k: z3.ExprRef, last: z3.ExprRef, t: z3.ExprRef) -> z3.BoolRef:
        """The entry (state, key k, last seen) is an open flow at time t: this service's by its spec; another service's
        by the table (OPEN, not idle longer than the timeout: what its own invariant makes its spec say)."""
        return z3.If(service_of(k) == SERVICE, open_at(s.spec, k, t, self.timeout), z3.And(state == OPEN, t - last <= self.timeout))

    @staticmethod
    def candidate(lk: Lookup) -> z3.ExprRef:
        """The candidate a packet's step reads and writes: the one holding its key, else the one a new flow takes (0 if none)."""
        return z3.If(lk.found, lk.c, z3.If(lk.room, lk.new, bv8(0)))

    def packet(self, s: Sym, pkt: PacketIn, reset: z3.BoolRef | None = None) -> tuple[dict[str, z3.ExprRef], Out, z3.BoolRef]:
        """The ingress for one packet (see model.p4lb.p4lb_packet); also returns 'every candidate holds another open flow'.

        `reset` (the proof's choice to start P5's window here) clears the per-position counts before this dispatch.
        """
        sw, var, key, t = s.sw, self.var, pkt.key, pkt.t
        lk = self.lookup(s, key, t)
        refuse = z3.And(pkt.syn, z3.Not(lk.found), z3.Not(lk.room)) if not var.evict_on_collision else z3.BoolVal(False)
        cand = self.candidate(lk)
        slot = self.places.of(key, cand)
        fs, fb, fl = sw["flow_state"][slot], sw["flow_backend"][slot], sw["flow_last_seen"][slot]
        live = z3.And(lk.found, t - fl <= self.timeout)
        established = z3.And(live, fs == OPEN, z3.Not(pkt.syn) if var.resyn_redispatch else z3.BoolVal(True))
        ver = sw["version"]
        size, mem, _ = self.group(s, ver)
        i, nxt2 = self.dispatch_positions(s)
        b = mem[i]
        dispatch = z3.And(pkt.syn, z3.Not(refuse), size != 0)
        closing = z3.And(live, fs == CLOSING)
        advance = z3.Or(dispatch, z3.And(refuse, size != 0)) if var.advance_on_refuse else dispatch
        # branch order as in the executable model
        c_mal, c_est = pkt.malformed, z3.And(z3.Not(pkt.malformed), established)
        c_syn = z3.And(z3.Not(pkt.malformed), z3.Not(established), pkt.syn)
        c_close = z3.And(z3.Not(pkt.malformed), z3.Not(established), z3.Not(pkt.syn), closing)
        full = reason(DropReason.UNCOUNTED if var.refuse_uncounted else DropReason.FLOW_TABLE_FULL)
        c_pick = z3.And(z3.BoolVal(var.midflow_pickup), z3.Not(pkt.malformed), z3.Not(established), z3.Not(pkt.syn), z3.Not(closing), size != 0)
        sent = z3.Or(c_est, c_close, z3.And(c_syn, dispatch), c_pick)
        to = z3.If(z3.Or(c_est, c_close), fb, b)
        miss = z3.And(sent, z3.Not(self.has_entry(to)))
        fate = z3.If(z3.And(sent, z3.Not(miss)), FATE_BACKEND, FATE_DROP)
        rsn = z3.If(c_mal, reason(DropReason.MALFORMED), z3.If(miss, reason(DropReason.NO_BACKEND_ENTRY), z3.If(c_syn, z3.If(refuse, full, reason(DropReason.UNKNOWN_FLOW if var.no_eligible_as_unknown else DropReason.NO_ELIGIBLE)), reason(DropReason.UNKNOWN_FLOW))))
        out = Out(fate, z3.If(fate == FATE_BACKEND, to, bv8(0)), z3.If(fate == FATE_DROP, rsn, reason(DropReason.NONE)))
        new_flow = z3.And(c_syn, dispatch)
        new_state = z3.If(c_est, z3.If(pkt.close, CLOSING, OPEN), z3.If(new_flow, OPEN, fs))
        touch = z3.Or(c_est, c_close, new_flow)
        post = dict(sw)
        post["flow_state"] = z3.If(touch, z3.Store(sw["flow_state"], slot, new_state), sw["flow_state"])
        post["flow_key"] = z3.If(new_flow, z3.Store(sw["flow_key"], slot, key), sw["flow_key"])
        post["flow_backend"] = z3.If(new_flow, z3.Store(sw["flow_backend"], slot, b), sw["flow_backend"])
        post["flow_last_seen"] = z3.If(touch, z3.Store(sw["flow_last_seen"], slot, t), sw["flow_last_seen"])
        post["ghost_cand"] = z3.If(new_flow, z3.Store(sw["ghost_cand"], key, cand), sw["ghost_cand"])
        moved = z3.Or(z3.And(c_syn, advance), c_pick)
        pc = sw["ghost_pc"] if reset is None else z3.If(reset, z3.K(B8, z3.IntVal(0)), sw["ghost_pc"])
        post["ghost_pc"] = z3.If(moved, z3.Store(pc, i, pc[i] + 1), pc)
        post["rr_next0"] = z3.If(z3.And(moved, z3.Not(ver)), nxt2, sw["rr_next0"])
        post["rr_next1"] = z3.If(z3.And(moved, ver), nxt2, sw["rr_next1"])
        post["now"] = t
        counted = z3.And(z3.BoolVal(not var.uncounted_drops), fate == FATE_DROP, z3.Or(*[rsn == reason(r) for r in COUNTED]))
        post["lb_drops"] = z3.If(counted, z3.Store(sw["lb_drops"], rsn, sw["lb_drops"][rsn] + 1), sw["lb_drops"])
        post["backend_flows"] = z3.If(new_flow, z3.Store(sw["backend_flows"], b, sw["backend_flows"][b] + 1), sw["backend_flows"])
        # backend_open (model.p4lb._put): -1 for the place's OPEN entry a close turns CLOSING or a new flow reclaims, +1 for a new flow
        # cells service * 256 + backend (model.p4lb.open_cell): the place's entry's own service, the packet's for a new flow
        opened = sw["backend_open"]
        gone = z3.Or(z3.And(c_est, pkt.close), z3.And(new_flow, fs == OPEN, z3.BoolVal(not var.reclaim_keeps_open)))
        held, mine = open_cell(sw["flow_key"][slot], fb), open_cell(key, b)
        opened = z3.If(gone, z3.Store(opened, held, opened[held] - 1), opened)
        post["backend_open"] = z3.If(new_flow, z3.Store(opened, mine, opened[mine] + 1), opened)
        return post, out, lk.others_open

    def place_of(self, s: Sym, key: z3.ExprRef) -> z3.ExprRef:
        """The place the proof's ghost records for a key (where its flow was last admitted)."""
        return self.places.of(key, s.sw["ghost_cand"][key])

    # ---- controller -----------------------------------------------------------------------------------

    def new_sets(self, tag: str) -> dict[str, z3.ExprRef]:
        """Fresh operator sets for an operation."""
        sets: dict[str, z3.ExprRef] = {k: z3.Array(f"{k}_op_{tag}", B8, BOOL) for k in ("active", "healthy", "draining")}
        return sets | {"weight": z3.Array(f"weight_op_{tag}", B8, B8)}

    def commit(self, s: Sym, tag: str, atomic: bool) -> Branch:
        """Commit a new group for new sets: atomic (stage+commit at once) or of what single writes staged."""
        sw, n = s.sw, self.n
        sets = self.new_sets(tag)
        spec2 = spec_after_pool(s.spec, sets, n, True)
        target = z3.Bool(f"cver_{tag}")
        gh = Ghosts(z3.Array(f"pos_{tag}", VB, B8), z3.Array(f"rank_{tag}", B8, B8))
        post = dict(sw)
        if atomic:
            size, mem = z3.BitVec(f"size_{tag}", 8), z3.Array(f"mem_{tag}", B8, B8)
            for v in (0, 1):
                sel = target if v else z3.Not(target)
                post[f"rr_group{v}"] = z3.If(sel, size, sw[f"rr_group{v}"])
                post[f"rr_member{v}"] = z3.If(sel, mem, sw[f"rr_member{v}"])
                post[f"rr_next{v}"] = z3.If(sel, bv8(0), sw[f"rr_next{v}"])
            ready = self.in_place(s, spec2, size, mem, gh) if self.follow_planner else z3.BoolVal(True)  # the proofs: any order
        else:
            size, mem, nxt = self.group(s, target)
            ready = nxt == 0
        staged = target == z3.Not(sw["version"])
        post.update(version=target, ghost_pos=gh.pos, ghost_rank=gh.rank, ghost_pc=z3.K(B8, z3.IntVal(0)), ghost_start=bv8(0))
        base = z3.And(staged if not self.var.in_place_updates else z3.BoolVal(True), self.planned_changed(s.spec, spec2), weights_ok(sets, n))
        guard = z3.And(base, ready, self.wellformed(size, mem, gh, spec2))
        ready_weak = ready if not atomic else z3.BoolVal(True)

        def weak(positions: list[z3.ExprRef], backends: list[z3.ExprRef]) -> z3.BoolRef:
            return z3.And(base, ready_weak, self.wellformed(size, mem, gh, spec2, positions, backends))

        return Branch("commit", guard, post, spec2, weak)

    def in_place(self, s: Sym, spec2: dict[str, z3.ExprRef], size: z3.ExprRef, mem: z3.ExprRef, gh: Ghosts) -> z3.BoolRef:
        """With every weight 1 before and after, the new group is model.pool.in_place of the live one: a kept member
        stays, the holes take in ascending order the movers (kept members at or past the new size, the last first),
        then the new backends by id (where each one lands is read from the new group's ghosts). Bounded model
        checking follows the planner, so its traces replay; the proofs allow any order."""
        m, live, _ = self.group(s, s.sw["version"])
        pos, ids = [bv8(i) for i in range(self.n)], [bv8(b) for b in range(1, self.n + 1)]  # weight-1 groups: at most n positions
        ones = z3.And(*[z3.Implies(self.planned(sp, b), self.weight(sp, b) == 1) for sp in (s.spec, spec2) for b in ids])
        kept = [z3.And(z3.ULT(i, m), self.planned(spec2, live[i])) for i in pos]
        stay = [z3.Implies(z3.And(z3.ULT(i, size), k), mem[i] == live[i]) for i, k in zip(pos, kept, strict=True)]
        new = [z3.And(self.planned(spec2, b), *[z3.Or(z3.UGE(i, m), live[i] != b) for i in pos]) for b in ids]
        fill = [(z3.And(k, z3.UGE(i, size)), live[i]) for i, k in zip(pos, kept, strict=True)][::-1] + list(zip(new, ids, strict=True))
        at = [gh.pos[z3.Concat(b, bv8(0))] for _, b in fill]
        order = [z3.Implies(z3.And(fill[x][0], fill[y][0]), z3.ULT(at[x], at[y])) for x in range(len(fill)) for y in range(x + 1, len(fill))]
        return z3.Implies(ones, z3.And(*stay, *order))

    def unchanged_eligibility(self, s: Sym, tag: str) -> Branch:
        """An operation that changes the sets but not the eligible set: no switch write at all."""
        sets = self.new_sets(tag)
        spec2 = spec_after_pool(s.spec, sets, self.n, False)
        return Branch("sets only", z3.And(z3.Not(self.planned_changed(s.spec, spec2)), weights_ok(sets, self.n)), dict(s.sw), spec2)

    def stage_write(self, s: Sym, tag: str) -> Branch:
        """One write to the staged version: a member, the group size, or rr_next (any position, any value)."""
        sw = s.sw
        ver, what, idx, val = z3.Bool(f"wver_{tag}"), z3.BitVec(f"what_{tag}", 2), z3.BitVec(f"widx_{tag}", 8), z3.BitVec(f"wval_{tag}", 8)
        post = dict(sw)
        for v in (0, 1):
            sel = ver if v else z3.Not(ver)
            post[f"rr_member{v}"] = z3.If(z3.And(sel, what == 0), z3.Store(sw[f"rr_member{v}"], idx, val), sw[f"rr_member{v}"])
            post[f"rr_group{v}"] = z3.If(z3.And(sel, what == 1), val, sw[f"rr_group{v}"])
            post[f"rr_next{v}"] = z3.If(z3.And(sel, what == 2), val, sw[f"rr_next{v}"])
        spec2 = dict(s.spec, wrote=z3.BoolVal(True))
        guard = z3.And(ver == z3.Not(sw["version"]) if not self.var.in_place_updates else z3.BoolVal(True), z3.ULE(what, 2))
        return Branch("stage write", guard, post, spec2)

    def other_service(self, s: Sym, tag: str, variant: Variant | None = None) -> tuple[Branch, z3.ExprRef, z3.ArithRef]:
        """Rely: a packet of another service, and the place it may write. It is this very packet step (`packet`, equal
        to the model and to the compiled program for any service id) run on that service's slice, fresh and
        unconstrained (its groups, rr_next, counters, spec: anything), with its own hash, sharing the flow table,
        backend_open and the clock. This service's slice and spec stay as they are (the compiled program's frame:
        verify.bmv2.equivalence), but for the clock. `variant`: the other service's program (default this one's).
        Returns the branch, the place, and the packet's time."""
        other = P4lbEncoding(self.cfg, variant or self.var)
        other.places = Places(self.cfg, False, "_other")
        mine = other.fresh(f"o{tag}")
        sw = mine.sw | {k: s.sw[k] for k in SHARED}
        pkt = PacketIn(z3.BitVec(f"osrc_{tag}", 32), z3.BitVec(f"osport_{tag}", 16), z3.BitVec(f"oflags_{tag}", 8), z3.Int(f"ot_{tag}"), z3.BitVec(f"oservice_{tag}", 8))
        post, _, _ = other.packet(Sym(sw, mine.spec), pkt)
        guard = z3.And(pkt.service != SERVICE, pkt.t >= s.spec["now"], pkt.t >= s.sw["now"])
        place = other.places.of(pkt.key, other.candidate(other.lookup(Sym(sw, mine.spec), pkt.key, pkt.t)))
        return Branch("other service", guard, s.sw | {k: post[k] for k in SHARED}, dict(s.spec, now=pkt.t)), place, pkt.t

    def step(self, s: Sym, s2: Sym, tag: str, atomic: bool = True, others: bool = True, other_variant: Variant | None = None) -> StepEnc:
        """Any packet, or an operation (atomic commit) / a single controller write (atomic=False), or (`others`) a
        packet of another service (kind RELY, its program `other_variant`, default this one's)."""
        kind = z3.BitVec(f"kind_{tag}", 3)
        pkt = PacketIn.fresh(tag)
        reset = z3.Bool(f"reset_{tag}")
        sw_pkt, out, held = self.packet(s, pkt, reset)
        _, _, nxt = self.group(s, s.sw["version"])
        sw_pkt["ghost_start"] = z3.If(reset, nxt, s.sw["ghost_start"])
        spec_pkt = spec_after_packet(s.spec, pkt, out, reset, self.timeout)
        is_packet = kind == 0
        branches = [
            Branch("packet", z3.And(pkt.t >= s.spec["now"], pkt.t >= s.sw["now"]), sw_pkt, spec_pkt),
            self.commit(s, tag, atomic),
            self.unchanged_eligibility(s, tag),
        ]
        branches.append(self.stage_write(s, tag) if not atomic else Branch("stage write", z3.BoolVal(False), dict(s.sw), dict(s.spec)))
        place = self.places.of(pkt.key, self.candidate(self.lookup(s, pkt.key, pkt.t)))
        inputs = {"kind": kind, "reset": reset}
        if others:
            rely, other_place, inputs["other_t"] = self.other_service(s, tag, other_variant)
            branches.append(rely)
            place = z3.If(kind == RELY, other_place, place)
        trans = choose(kind, s2, branches)
        fields = tuple(f"flow_{f.name}" for f in dataclasses.fields(FlowEntry))  # all four registers of a flow slot

        def changed(key: z3.ExprRef) -> z3.BoolRef:
            h = self.place_of(s, key)
            return z3.Or(*[s.sw[f][h] != s2.sw[f][h] for f in fields])

        counted = sw_pkt["lb_drops"][out.reason] == s.sw["lb_drops"][out.reason] + 1
        return StepEnc(trans, is_packet, pkt, out, held, counted, changed, inputs, branches, place)
