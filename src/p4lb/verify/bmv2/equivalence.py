"""The compiled program (BMv2 JSON) and the model's per-packet step are one function: a Z3 proof per program.

For p4lb.json against `P4lbEncoding.packet` and seed.json against `SeedEncoding.packet`:

(a) every TCP packet from a client to the VIP:port (Ethernet + option-less unfragmented IPv4 with a valid
    header checksum + a complete TCP header, not from the CPU port), in every switch state related to a model
    state, does on the P4 side exactly what the model's step does: fate, egress port and header rewrites,
    counter increments, and every register afterwards (backend_open modulo 2^32, its bit<32> width: verify.counts
    proves the model's value stays in 0..places, so the two are equal);
(b) every other packet (p4lb: not class (a), CPU port excluded) leaves the flow registers, rr_next and
    idle_timeout unchanged, never applies the `backend` table and counts at most lb_drops[MALFORMED], and
    only for a bad IPv4 checksum; CPU-port packets leave the flow registers and counters unchanged and go
    back to the CPU port or are dropped. Seed: IPv4 packets not addressed to the VIP leave every register
    unchanged.
Non-vacuity: the premises are satisfiable and every model branch is reachable on the P4 side.

The model's time is an unbounded Int, the switch's a 48-bit clock: the model's Int terms are translated
exactly into 64-bit bit-vectors (`IntToBv`), under the printed assumptions 0 <= flow_last_seen[slot] <= now
<= t < 2^48.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, cast

import z3

from p4lb.model.config import CPU_PORT, MAX_BACKENDS, P4LB_TABLE_BITS, Backend, LbConfig, default_config
from p4lb.model.crc import ip_str
from p4lb.model.p4lb import P4LB, FlowEntry, P4lbState, SlotState, p4lb_packet
from p4lb.model.packet import SERVICE_SHIFT, DropReason, Fate, Outcome, Packet, flags_str, key_service
from p4lb.model.seed import SEED_INDEX_BITS, SeedState, seed_packet
from p4lb.p4 import entries, p4lb_build
from p4lb.p4.entries import TableEntry
from p4lb.verify import gf2
from p4lb.verify.bmv2.program import FieldRef, HashAlgo, Program, load, load_json
from p4lb.verify.bmv2.symbolic import (
    Arbitrary,
    Choice,
    Cut,
    Entries,
    Entry,
    Environment,
    Function,
    Match,
    PacketInput,
    Result,
    TableContents,
    Unlisted,
    crc16_sym,
    execute,
    fresh_input,
    hash_sym,
)
from p4lb.verify.encoding import B8, KEY, SERVICE, Out, PacketIn, Sym, fresh_spec, uninterpreted
from p4lb.verify.errors import VerifyError
from p4lb.verify.p4lb_enc import CELL, P4lbEncoding
from p4lb.verify.results import QUERY_TIMEOUT_MS
from p4lb.verify.seed_enc import SeedEncoding

log = logging.getLogger(__name__)

ETH_IPV4 = 0x0800
TCP = 6
HEADERS_LEN = 14 + 20 + 20  # Ethernet + IPv4 without options + TCP without options
TIME_BITS = 48
OPEN_BITS = 32  # backend_open's cells: bit<32>
RR_CELLS = z3.BitVecSort(9)  # rr_next: service ++ version
DROP_CELLS = z3.BitVecSort(11)  # lb_drops: service ++ reason
WIDE = 64
PROGRAMS = ("p4lb", "seed")
MAX_FRAME = 1514  # bytes: the lab's veth links carry at most a 1500-byte IPv4 packet
REPLAY_MARGIN_US = 1_000_000  # a replayable counterexample's packet is this far from its slot's idle-timeout edge
PACKET_HEADERS = ("ethernet", "ipv4", "tcp")  # a non-CPU packet's bytes, in the order the parser extracts them


class Verdict(enum.Enum):
    """Outcome of an equivalence check."""

    EQUIVALENT = "equivalent"
    DIFFERS = "differs"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Check:
    """One query: its name, what Z3 answered, what was expected, and seconds."""

    name: str
    answer: str  # sat / unsat / unknown
    expected: str
    seconds: float

    @property
    def ok(self) -> bool:
        """Z3 gave the expected answer."""
        return self.answer == self.expected


@dataclass(frozen=True)
class EquivalenceResult:
    """The verdict for one program, what it rests on, and on DIFFERS a replayable counterexample."""

    program: str
    verdict: Verdict
    seconds: float
    assumptions: tuple[str, ...]
    checks: tuple[Check, ...] = ()
    counterexample: Mapping[str, object] | None = None
    notes: tuple[str, ...] = ()

    def failed(self) -> tuple[Check, ...]:
        """Checks whose answer was not the expected one."""
        return tuple(c for c in self.checks if not c.ok)


# ---- Int terms of the model as exact 64-bit bit-vectors --------------------------------------------------


class IntToBv:
    """Rewrites a term's Int parts into 64-bit two's complement, exactly: every Int value stays below 2^62."""

    LIMIT = 1 << 62

    def __init__(self, mapping: Mapping[z3.ExprRef, tuple[z3.ExprRef, int]]) -> None:
        self.mapping = {k.get_id(): v for k, v in mapping.items()}
        self.memo: dict[int, tuple[z3.ExprRef, int]] = {}

    def __call__(self, e: z3.ExprRef) -> z3.ExprRef:
        """The rewritten term."""
        return self._go(e)[0]

    def _go(self, e: z3.ExprRef) -> tuple[z3.ExprRef, int]:
        key = e.get_id()
        if key not in self.memo:
            self.memo[key] = self.mapping[key] if key in self.mapping else self._rewrite(e)
        return self.memo[key]

    def _rewrite(self, e: z3.ExprRef) -> tuple[z3.ExprRef, int]:
        if z3.is_int_value(e):
            return z3.BitVecVal(e.as_long(), WIDE), abs(e.as_long())
        if z3.is_quantifier(e) or z3.is_var(e):
            raise VerifyError(f"cannot translate {e}")
        kind = e.decl().kind()
        kids = [self._go(c) for c in e.children()]
        terms = [k[0] for k in kids]
        bound = max((k[1] for k in kids), default=0)
        if kind in (z3.Z3_OP_ADD, z3.Z3_OP_SUB) and e.sort() == z3.IntSort():
            out = terms[0]
            for t in terms[1:]:
                out = out + t if kind == z3.Z3_OP_ADD else out - t
            return self._bounded(out, sum(k[1] for k in kids))
        if kind == z3.Z3_OP_UMINUS:
            return -terms[0], bound
        if kind in (z3.Z3_OP_LE, z3.Z3_OP_LT, z3.Z3_OP_GE, z3.Z3_OP_GT) and z3.is_bv(terms[0]):
            self._bounded(terms[0], bound)
            a, b = terms
            return {z3.Z3_OP_LE: a <= b, z3.Z3_OP_LT: a < b, z3.Z3_OP_GE: a >= b, z3.Z3_OP_GT: a > b}[kind], 0
        if kind == z3.Z3_OP_EQ:
            return terms[0] == terms[1], 0
        if kind == z3.Z3_OP_DISTINCT:
            return z3.Distinct(*terms), 0
        if kind == z3.Z3_OP_ITE:
            return z3.If(terms[0], terms[1], terms[2]), max(kids[1][1], kids[2][1])
        if kind == z3.Z3_OP_SELECT:
            return z3.Select(terms[0], *terms[1:]), kids[0][1]
        if kind == z3.Z3_OP_STORE:
            return z3.Store(terms[0], *terms[1:]), max(kids[0][1], kids[-1][1])
        if kind == z3.Z3_OP_CONST_ARRAY:
            return z3.K(e.domain(), terms[0]), kids[0][1]
        if e.sort() == z3.IntSort() or (z3.is_array(e) and e.range() == z3.IntSort()):
            raise VerifyError(f"the model's Int term {e.decl().name()} has no exact bit-vector translation here")
        if all(t.eq(c) for t, c in zip(terms, e.children(), strict=True)):
            return e, 0
        return e.decl()(*terms), 0

    def _bounded(self, t: z3.ExprRef, bound: int) -> tuple[z3.ExprRef, int]:
        if bound >= self.LIMIT:
            raise VerifyError("an Int term of the model may leave the exactly translated range")
        return t, bound


# ---- a class of packets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One symbolic run of the P4 program with its inputs."""

    inp: PacketInput
    res: Result
    prog: Program


def vip_tcp(cfg: LbConfig, inp: PacketInput, res: Result) -> z3.BoolRef:
    """Class (a): Ethernet/IPv4 (no options, unfragmented, valid checksum)/TCP to VIP:port, complete, not from the CPU port."""
    f = inp.field
    return z3.And(
        inp.ingress_port != CPU_PORT,
        z3.UGE(inp.length, HEADERS_LEN),
        f("ethernet", "etherType") == ETH_IPV4,
        f("ipv4", "version") == 4,
        f("ipv4", "ihl") == 5,
        f("ipv4", "flags") & 1 == 0,
        f("ipv4", "fragOffset") == 0,
        f("ipv4", "protocol") == TCP,
        f("ipv4", "dstAddr") == cfg.vip,
        f("tcp", "dstPort") == cfg.vip_port,
        z3.Not(res.checksum_error),
    )


def model_packet(inp: PacketInput, t: z3.ArithRef) -> PacketIn:
    """The model's packet: client address and port, TCP flags, arrival time."""
    return PacketIn(inp.field("ipv4", "srcAddr"), inp.field("tcp", "srcPort"), inp.field("tcp", "flags"), t)


def table_named(prog: Program, short: str) -> str:
    """A table's full name from its last dotted component."""
    for pipe in (prog.ingress, prog.egress):
        for name in pipe.tables:
            if name.rsplit(".", 1)[-1] == short:
                return name
    raise VerifyError(f"{prog.name} has no table {short}")


def action_named(prog: Program, table: str, short: str) -> str:
    """One of a table's actions from its last dotted component."""
    for a in prog.table(table).actions:
        if a.rsplit(".", 1)[-1] == short:
            return a
    raise VerifyError(f"table {table} has no action {short}")


def bound_entry(prog: Program, e: TableEntry) -> tuple[str, Entry]:
    """An entry the controller writes (p4lb.p4.entries) as the program's table and entry: its match fields must be
    the table's keys and its parameters the action's, by name and in order (VerifyError naming the difference)."""
    t = table_named(prog, e.table)
    table = prog.table(t)
    keys, written = tuple(k.name for k in table.keys), tuple(n for n, _ in e.match)
    if written != keys:
        raise VerifyError(f"the controller keys {e.table} entries by ({', '.join(written)}); the program's key is ({', '.join(keys)})")
    a = action_named(prog, t, e.action)
    params, given = tuple(p.name for p in prog.actions[table.action_id(a)].params), tuple(n for n, _ in e.params)
    if given != params:
        raise VerifyError(f"the controller writes {e.action}({', '.join(given)}); the program's action takes ({', '.join(params)})")
    match = tuple(Match(v[0], prefix=v[1]) if isinstance(v, tuple) else Match(v) for _, v in e.match)
    return t, Entry(match, a, tuple(v for _, v in e.params))


def _grouped(bound: Sequence[tuple[str, Entry]]) -> dict[str, TableContents]:
    """Bound entries as each table's contents."""
    out: dict[str, list[Entry]] = {}
    for t, e in bound:
        out.setdefault(t, []).append(e)
    return {t: Entries(es) for t, es in out.items()}


def chosen_when(keys: tuple[z3.BitVecRef, ...], entry: Entry, present: z3.BoolRef) -> Choice:
    """A symbolic table's choice of one exact-match entry: it runs when it is present and every key equals its value."""
    same = [k == (z3.BitVecVal(m.value, k.size()) if isinstance(m.value, int) else m.value) for k, m in zip(keys, entry.match, strict=True)]
    return Choice(z3.And(present, *same), entry.action, entry.params)


def backend_entries(prog: Program, cfg: LbConfig, table: str, action: str, n: int | None = None) -> Entries:
    """The seed's backends 1..n -> action(mac_i, ip_i, port_i), as install_seed writes them (p4lb's: entries.backend)."""
    t = table_named(prog, table)
    a = action_named(prog, t, action)
    return Entries([Entry((Match(b.id),), a, (b.mac, b.ip, b.port)) for b in cfg.backends[:n]])


def rr_cell(service: z3.BitVecRef, version: int) -> z3.BitVecRef:
    """rr_next's cell of a service's version: service * 2 + version."""
    return z3.Concat(service, z3.BitVecVal(version, 1))


def drop_cell(service: z3.BitVecRef, r: int | z3.BitVecRef) -> z3.BitVecRef:
    """lb_drops's cell of a service's drop reason: service * 8 + reason."""
    return z3.Concat(service, z3.BitVecVal(r, 3) if isinstance(r, int) else r)


def backend_of(cfg: LbConfig, b: z3.BitVecRef, pick: Callable[[Backend], z3.ExprRef]) -> z3.ExprRef:
    """An attribute of backend b (1..N) as a term (0 elsewhere)."""
    out = None
    for be in reversed(cfg.backends):
        v = pick(be)
        out = v if out is None else z3.If(b == be.id, v, out)
    return out


def forwards_to(cfg: LbConfig, res: Result, b: z3.BitVecRef) -> z3.BoolRef:
    """The P4 side sent the packet to backend b: its port, its MAC and its address written."""
    return z3.And(
        z3.Not(res.dropped),
        z3.Or(*[b == be.id for be in cfg.backends]),
        res.egress_port == backend_of(cfg, b, lambda be: z3.BitVecVal(be.port, 9)),
        res.field("ethernet", "dstAddr") == backend_of(cfg, b, lambda be: z3.BitVecVal(be.mac, 48)),
        res.field("ipv4", "dstAddr") == backend_of(cfg, b, lambda be: z3.BitVecVal(be.ip, 32)),
    )


# ---- p4lb --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class P4lbSetup:
    """Both sides of p4lb for one symbolic packet and state, and how they are related."""

    cfg: LbConfig
    side: Side
    enc: P4lbEncoding
    model_sw: Mapping[str, z3.ExprRef]
    post: Mapping[str, z3.ExprRef]
    out: Out
    pkt: PacketIn
    to_bv: IntToBv
    last_seen: z3.ArrayRef  # P4 flow_last_seen before the packet (48-bit)
    now: z3.BitVecRef
    relation: tuple[z3.BoolRef, ...]
    slot: z3.BitVecRef  # the P4 side's flow slot
    position: z3.BitVecRef  # the model's round-robin position
    cand: z3.ExprRef  # the model's candidate (8-bit) the packet reads and writes: places.of(key, cand) is its place
    rr_pre: z3.ArrayRef  # rr_next before the packet: the service's (rr_next0, rr_next1), other services' cells arbitrary
    stages: tuple[tuple[CutPoint, ...], ...] = ()  # cut points (multi-way table): flow_probe's masks, then flow_choose's results
    cand_var: z3.ExprRef | None = None  # the model's candidate as the obligations have it after the cuts


@dataclass(frozen=True)
class CutPoint:
    """A program field cut to a fresh variable after its action (symbolic.Cut), and the model's term it stands for.

    Lemma (proven, per bit for a mask): the field's value before the cut equals `model`, under the premises. Then
    the model's `targets` (its terms in their forms in the obligations) are replaced by `replacement` (a term of the
    cut variable). Sound: the main query holds for every value of the cut variable, so for the field's real value,
    and there the program's terms are its real ones and, by the lemma, the replacements equal the model's targets."""

    name: str
    cut: Cut
    model: z3.BitVecRef  # the model's term for the field (as a bit-vector of its width)
    targets: tuple[tuple[z3.ExprRef, z3.ExprRef], ...]  # (model term in the obligations, its replacement)
    per_bit: bool = False  # prove the lemma bit by bit (a mask: bit c is one candidate's test)
    facts: Callable[[z3.ExprRef], list[z3.BoolRef]] | None = None  # shown of the model's term by the lemma, assumed of the variable after
    late: bool = False  # targets replaced after the hash and place lemmas' rewriting (their from-terms rewritten alike)
    bare: bool = False  # the equation (not the facts) needs no premise but the earlier cut variables' facts

    def goals(self) -> list[z3.BoolRef]:
        """Negated lemma, as one goal or one per bit (and one per fact)."""
        x, y = self.cut.original, self.model
        out = [x != y] if not self.per_bit else [z3.Extract(c, c, x) != z3.Extract(c, c, y) for c in range(x.size())]
        return out if self.facts is None else [*out, *[z3.Not(f) for f in self.facts(y)]]

    def premises(self) -> list[z3.BoolRef]:
        """What the lemma lets the main query assume of the cut variable."""
        return [] if self.facts is None else self.facts(self.cut.var)

    def binding(self) -> z3.BoolRef:
        """The cut variable is the model's term (for satisfiability queries and counterexamples)."""
        return self.cut.var == self.model


def _bit(b: z3.BoolRef) -> z3.BitVecRef:
    return z3.If(b, z3.BitVecVal(1, 1), z3.BitVecVal(0, 1))


def _targets(pairs: Sequence[tuple[z3.ExprRef, z3.ExprRef]]) -> tuple[tuple[z3.ExprRef, z3.ExprRef], ...]:
    """Replacement pairs without repeats (a term and its exact form are often the same term)."""
    return tuple({a.get_id(): (a, b) for a, b in reversed(pairs)}.values())


def mask_cut(name: str, cut: Cut, flags: Sequence[z3.BoolRef], exact: Sequence[z3.BoolRef]) -> CutPoint:
    """A per-candidate mask: bit c is the model's test of candidate c (`flags`, `exact` its IntToBv form)."""
    if cut.var.size() != len(flags):
        raise VerifyError(f"the program's {name} has {cut.var.size()} bits, the model's table {len(flags)} candidates")
    model = z3.Concat(*[_bit(f) for f in reversed(exact)]) if len(exact) > 1 else _bit(exact[0])
    bits = [z3.Extract(c, c, cut.var) == 1 for c in range(len(flags))]
    return CutPoint(name, cut, model, _targets([*zip(flags, bits, strict=True), *zip(exact, bits, strict=True)]), per_bit=True)


def stage_cut(name: str, cut: Cut, terms: Sequence[z3.ExprRef], before: Sequence[CutPoint], facts: Callable[[z3.ExprRef], list[z3.BoolRef]] | None = None) -> CutPoint:
    """A flow_choose result: the model's term (its forms in `terms`) after the earlier cuts' replacements."""
    pairs = [pair for c in before for pair in c.targets]
    subst = [z3.substitute(t, *pairs) for t in terms]
    var = cut.var
    if z3.is_bool(terms[0]):
        return CutPoint(name, cut, _bit(subst[-1]), _targets([(t, var == 1) for t in subst]))
    if var.size() != terms[0].size():
        raise VerifyError(f"the program's {name} has {var.size()} bits, the model's {terms[0].size()}")
    return CutPoint(name, cut, subst[-1], _targets([(t, var) for t in subst]), facts=facts)


def p4lb_tables(prog: Program, cfg: LbConfig, sw: Mapping[str, z3.ExprRef], present: Mapping[str, z3.ExprRef], others: TableContents | None, service: z3.BitVecRef = SERVICE) -> dict[str, TableContents]:
    """The controller's tables for one service (any id): vip (VIP:port -> lb_select(service, version)), rr_group /
    rr_member per (service, version), backend (service, 1..N). Entries of other services: see `other_entries`."""
    grp_t, mem_t = table_named(prog, "rr_group"), table_named(prog, "rr_member")
    version = z3.If(sw["version"], z3.BitVecVal(1, 1), z3.BitVecVal(0, 1)) if z3.is_bool(sw["version"]) else sw["version"]
    vip_t, vip = bound_entry(prog, entries.vip(cfg, version, service))
    written = entries.static(cfg, service)  # what install_backends writes: backend entries here, forward and send_frame taken as arbitrary below
    if {e.table for e in written} - entries.STATIC_TABLES:
        raise VerifyError(f"the controller's static entries write {sorted({e.table for e in written} - entries.STATIC_TABLES)}: the proof takes only backend, forward and send_frame from them")
    static = [bound_entry(prog, e) for e in written]
    tables: dict[str, TableContents] = {
        vip_t: Entries([vip]),
        table_named(prog, "backend"): Entries([e for t, e in static if t == table_named(prog, "backend")]),
    }
    set_group, set_member = action_named(prog, grp_t, "set_group"), action_named(prog, mem_t, "set_member")
    other_size, other_member = z3.Function("rr_group_other", B8, z3.BitVecSort(1), B8), z3.Function("rr_member_other", B8, z3.BitVecSort(1), B8, B8)

    def group(keys: tuple[z3.BitVecRef, ...]) -> tuple[Choice, ...]:
        svc, ver = keys
        mine = tuple(chosen_when(keys, bound_entry(prog, entries.rr_group(cfg, v, sw[f"rr_group{v}"], service))[1], present[f"rr_group{v}"]) for v in (0, 1))
        return (*mine, Choice(svc != service, set_group, (other_size(svc, ver),)))  # another service's entry: any size

    def member(keys: tuple[z3.BitVecRef, ...]) -> tuple[Choice, ...]:
        svc, ver, pos = keys
        mine = tuple(chosen_when(keys, bound_entry(prog, entries.rr_member(cfg, v, pos, sw[f"rr_member{v}"][pos], service))[1], present[f"rr_member{v}"][pos]) for v in (0, 1))
        return (*mine, Choice(svc != service, set_member, (other_member(svc, ver, pos),)))  # another service's entry: any backend

    tables[grp_t] = Function(group)
    tables[mem_t] = Function(member)
    for short in ("forward", "send_frame"):
        tables[table_named(prog, short)] = others if others is not None else Arbitrary(prog)
    return tables


def p4lb_setup(prog: Program, cfg: LbConfig, tag: str = "e") -> P4lbSetup:
    """A symbolic packet in a symbolic state on both sides, related as the controller and the data plane keep them."""
    enc = P4lbEncoding(cfg, P4LB, real_hash=True)
    if 1 << cfg.flow_table_bits != prog.register("flow_state").size:
        raise VerifyError(f"the program has {prog.register('flow_state').size} flow slots, the config {1 << cfg.flow_table_bits}")
    sym = enc.fresh(f"m{tag}")
    sw = dict(sym.sw)
    for k, sort in (("lb_drops", z3.BitVecSort(3)), ("backend_flows", B8)):
        if k in sw:
            sw[k] = z3.K(sort, z3.IntVal(0))  # increments are compared: both sides only add to counters
    present = {"rr_group0": z3.Bool(f"g0_present_{tag}"), "rr_group1": z3.Bool(f"g1_present_{tag}"), "rr_member0": z3.Array(f"m0_present_{tag}", B8, z3.BoolSort()), "rr_member1": z3.Array(f"m1_present_{tag}", B8, z3.BoolSort())}
    last_seen = z3.Array(f"flow_last_seen48_{tag}", z3.BitVecSort(cfg.flow_table_bits), z3.BitVecSort(TIME_BITS))
    now = z3.BitVec(f"now48_{tag}", TIME_BITS)
    for reg, sort in (("backend_open", CELL), ("rr_next", RR_CELLS)):
        if prog.register(reg).size != 1 << sort.size():
            raise VerifyError(f"the program's {reg} has {prog.register(reg).size} cells, not one per {sort.size()}-bit (service, id) index")
    opened = z3.Array(f"backend_open32_{tag}", CELL, z3.BitVecSort(OPEN_BITS))  # the model's backend_open is this, zero-extended
    rr_pre = z3.Store(z3.Store(z3.Array(f"rr_next_others_{tag}", RR_CELLS, B8), rr_cell(SERVICE, 0), sw["rr_next0"]), rr_cell(SERVICE, 1), sw["rr_next1"])
    regs = {
        prog.register("rr_next").name: rr_pre,  # the service's two cells; every other service's cells arbitrary
        prog.register("flow_state").name: sw["flow_state"],
        prog.register("flow_key").name: sw["flow_key"],
        prog.register("flow_backend").name: sw["flow_backend"],
        prog.register("flow_last_seen").name: last_seen,
        prog.register("idle_timeout").name: z3.K(z3.BitVecSort(1), z3.BitVecVal(cfg.idle_timeout_us, TIME_BITS)),
        prog.register("backend_open").name: opened,
    }
    inp = fresh_input(prog, f"p{tag}")
    env = Environment(p4lb_tables(prog, cfg, sw, present, None), regs, Unlisted.ERROR)
    probe = next((a.name for a in prog.actions.values() if a.name.rsplit(".", 1)[-1] == "flow_probe"), None)
    choose = next((a.name for a in prog.actions.values() if a.name.rsplit(".", 1)[-1] == "flow_choose"), None)
    cuts = {probe: [("scalars", _scalar(prog, stem)) for stem in MASKS]} if probe is not None and not cfg.shape.one_way else {}
    place = next((a.name for a in prog.actions.values() if a.name.rsplit(".", 1)[-1] == "flow_place"), None)
    if cuts and choose is not None:
        cuts[choose] = [("scalars", _scalar(prog, stem)) for stem in CHOSEN]
        if place is not None and SLOT_CUT:
            cuts[place] = [("scalars", _scalar(prog, "_lb_slot"))]
    res = execute(prog, env, inp, f"x{tag}", cuts)
    t = z3.Int(f"t_{tag}")
    pkt = model_packet(inp, t)
    post, out, _ = enc.packet(Sym(sw, sym.spec), pkt)
    lk = enc.lookup(Sym(sw, sym.spec), pkt.key, pkt.t)  # the very terms packet() built (hash-consed)
    cand = enc.candidate(lk)
    i = z3.BitVec(f"lambda_i_{tag}", cfg.flow_table_bits)
    ib = z3.BitVec(f"lambda_b_{tag}", CELL.size())
    to_bv = IntToBv({
        t: (z3.ZeroExt(WIDE - TIME_BITS, inp.timestamp), 1 << TIME_BITS),
        sw["now"]: (z3.ZeroExt(WIDE - TIME_BITS, now), 1 << TIME_BITS),
        sw["flow_last_seen"]: (z3.Lambda([i], z3.ZeroExt(WIDE - TIME_BITS, last_seen[i])), 1 << TIME_BITS),
        sw["backend_open"]: (z3.Lambda([ib], z3.ZeroExt(WIDE - OPEN_BITS, opened[ib])), 1 << OPEN_BITS),
    })
    slot = z3.Extract(cfg.flow_table_bits - 1, 0, res.field("scalars", _scalar(prog, "_lb_slot")))
    position, _ = enc.dispatch_positions(Sym(sw, sym.spec))
    relation = (
        *[z3.ULE(last_seen[p], now) for p in dict.fromkeys(enc.places.all(pkt.key), None)],  # every candidate place
        z3.ULE(now, inp.timestamp),
        *[z3.Implies(z3.Not(present[f"rr_group{v}"]), sw[f"rr_group{v}"] == 0) for v in (0, 1)],
        *[z3.Implies(z3.Not(present[f"rr_member{v}"][p]), sw[f"rr_member{v}"][p] == 0) for v in (0, 1) for p in (position, res.field("scalars", _scalar(prog, "_lb_position")))],
        *[z3.ULE(sw[f"rr_member{v}"][p], MAX_BACKENDS) for v in (0, 1) for p in (position, res.field("scalars", _scalar(prog, "_lb_position")))],
    )
    stages: list[tuple[CutPoint, ...]] = []
    cand_var: z3.ExprRef | None = None
    if res.cuts:
        masks = tuple(mask_cut(stem.removeprefix("_lb_"), res.cut(stem), flags, [to_bv(f) for f in flags]) for stem, flags in zip(MASKS, (lk.match, lk.held), strict=True))
        stages.append(masks)
        if choose is not None:
            count = len(lk.match)
            facts = (None, None, lambda c: [z3.ULT(c, count)])  # cand is a candidate number
            chosen = tuple(stage_cut(stem.removeprefix("_lb_"), res.cut(stem), [term, to_bv(term)], masks, f) for stem, term, f in zip(CHOSEN, (lk.found, lk.room, cand), facts, strict=True))
            stages.append(chosen)
            cand_var = chosen[-1].cut.var
            if place is not None and SLOT_CUT:  # the place: the model's Places.of(key, cand) (cand cut), in range, its last_seen <= now
                bits = cfg.flow_table_bits
                pcut = res.cut("_lb_slot")
                model_place = enc.places.of(pkt.key, cand_var)

                def place_facts(v: z3.ExprRef) -> list[z3.BoolRef]:
                    return [z3.ULT(v, 1 << bits), z3.ULE(last_seen[z3.Extract(bits - 1, 0, v)], now)]

                wide = z3.ZeroExt(pcut.var.size() - bits, model_place)
                stages.append((CutPoint("slot", pcut, wide, ((model_place, z3.Extract(bits - 1, 0, pcut.var)),), facts=place_facts, late=True, bare=True),))
    return P4lbSetup(cfg, Side(inp, res, prog), enc, sw, post, out, pkt, to_bv, last_seen, now, relation, slot, position, cand, rr_pre, tuple(stages), cand_var)


RESTART_MS = 30_000  # a JSON query's first try; Z3's time on one query has a heavy tail (p4lb at N = 32: backend_open took 124 s with the default seed, 9 and 7 s with seeds 1 and 2)
SEPARATE = ("backend_open",)  # obligations proven in a query of their own: apart / together, one run each: N = 4 4.6 + 4.1 / 19 s, N = 16 6.4 + 4.8 / 15 s, N = 64 7.5 + 7.5 / 12 s. Not the flow registers: apart they took 67 s in a fresh process, together with the rest 4 s
SLOT_CUT = False  # cutting flow_place's slot too: its targets do not yet match the obligations' place terms (main query sat)
MASKS = ("_lb_match_mask", "_lb_held_mask")  # flow_probe's per-candidate results: match (find) and held
CHOSEN = ("_lb_found", "_lb_room", "_lb_cand")  # flow_choose's results: found, room, the flow's candidate


def _scalar(prog: Program, stem: str) -> str:
    """The scalars field p4c made of a metadata field (e.g. `_lb_slot` -> `metadata._lb_slot5`)."""
    found = [f.name for f in prog.header_type("scalars").fields if stem in f.name]
    if len(found) != 1:
        raise VerifyError(f"no single scalar field for {stem} in {prog.name}: {found}")
    return found[0]


P4LB_ASSUMPTIONS = (
    "packet (a): Ethernet + IPv4 (version 4, IHL 5, MF 0, offset 0, valid header checksum, proto 6, dst VIP) + TCP to the VIP port, >= 54 bytes, not from the CPU port (510)",
    "service: any 8-bit id s (a free variable): the packet's flow key is s ++ client address ++ client port; every other service's cells are arbitrary before the packet and compared after it (they must not change: P9's guarantee)",
    "tables as the controller writes them: vip = {(VIP, port) -> lb_select(s, version)}; rr_group[s, v] -> set_group(rr_group{v}) if present (absent: the model has 0); rr_member[s, v, p] -> set_member(rr_member{v}[p]) if present (absent: the model has 0); rr_group and rr_member entries of every other service arbitrary; backend = {(s, i) -> set_backend(mac_i, ip_i, port_i) | i in 1..N}; forward, send_frame arbitrary",
    "rr_member entries hold backend ids <= 128 (MAX_BACKENDS: the controller writes ids 1..N); backend_flows has a cell per (service, 8-bit id)",
    "registers: rr_next[2s + v] = rr_next{v}, other cells arbitrary; flow_state/flow_key/flow_backend = the model's arrays; idle_timeout[0] = cfg idle timeout; flow_last_seen[i] = the model's value (48-bit); backend_open[256 s' + b] = the model's value for every service s' (any 32-bit value), compared after the packet modulo 2^32 (verify.counts: the model's value is always in 0..places < 2^32)",
    "time: ingress_global_timestamp = t; 0 <= flow_last_seen[slot] <= now <= t < 2^48 (the invariant keeps last_seen <= now; the clock is monotone and 48-bit)",
    "hash: BMv2 crc32 of way j's field order (flowtable.WAY_ORDERS[j]) = the model's way-j bucket (hash lemma; one-way table: crc16 of {src, dst, proto, sport, dport}); counters compared by increment",
    "cut points (multi-way table): flow_probe's match_mask / held_mask and flow_choose's found / room / cand are fresh variables in the main query; each cut lemma proves the program's value equal to the model's term (masks bit by bit: bit c = the model's find / held test of candidate c; cand also < 32), so the main query's conclusion holds for the real values",
    "header fields not extracted are unspecified; an out-of-range register/counter index is a failure (shown absent)",
)


def p4lb_obligations(s: P4lbSetup) -> list[tuple[str, z3.BoolRef]]:
    """Everything class-(a) packets must agree on, by name."""
    res, cfg, post, out, bv = s.side.res, s.cfg, s.post, s.out, s.to_bv
    j = z3.BitVec("j_slot", cfg.flow_table_bits)
    r = z3.BitVec("r_reason", DROP_CELLS.size())  # service ++ reason
    b = z3.BitVec("b_backend", CELL.size())  # service ++ backend
    rc = z3.BitVec("c_rr_next", RR_CELLS.size())  # service ++ version
    mine, reason_, backend_ = z3.Extract(10, 3, r) == SERVICE, z3.Extract(2, 0, r), z3.Extract(7, 0, b)
    fate = bv(out.fate)
    ob = [
        ("fate", (fate == int(Fate.BACKEND)) == z3.Not(res.dropped)),
        ("backend port and rewrites", z3.Implies(fate == int(Fate.BACKEND), forwards_to(cfg, res, bv(out.backend)))),
        ("no fault", z3.Not(res.fault())),
    ]
    for k in ("flow_state", "flow_key", "flow_backend"):
        ob.append((k, res.register(k) == bv(post[k])))
    ob.append(("flow_last_seen", z3.ZeroExt(WIDE - TIME_BITS, res.register("flow_last_seen")[j]) == bv(post["flow_last_seen"])[j]))
    after = z3.Store(z3.Store(s.rr_pre, rr_cell(SERVICE, 0), bv(post["rr_next0"])), rr_cell(SERVICE, 1), bv(post["rr_next1"]))
    ob.append(("rr_next", res.register("rr_next")[rc] == after[rc]))  # the service's cells as the model's; no other cell changes
    ob.append(("idle_timeout", res.register("idle_timeout") == z3.K(z3.BitVecSort(1), z3.BitVecVal(cfg.idle_timeout_us, TIME_BITS))))
    drops = res.counter("lb_drops")
    if "lb_drops" in post:
        ob.append(("lb_drops", z3.ZeroExt(WIDE - 32, drops[r]) == z3.If(mine, bv(post["lb_drops"])[reason_], 0)))
    else:
        ob.append(("lb_drops", drops[r] == z3.If(z3.And(mine, fate == int(Fate.DROP), bv(out.reason) == reason_, reason_ != 0, reason_ != int(DropReason.UNCOUNTED)), 1, 0)))
    if "backend_flows" in post:
        ob.append(("backend_flows", z3.ZeroExt(WIDE - 32, res.counter("backend_flows")[b]) == z3.If(z3.Extract(15, 8, b) == SERVICE, bv(post["backend_flows"])[backend_], 0)))
    ob.append(("backend_open", res.register("backend_open")[b] == z3.Extract(OPEN_BITS - 1, 0, bv(post["backend_open"])[b])))
    return ob


def p4lb_branches(s: P4lbSetup) -> list[tuple[str, z3.BoolRef]]:
    """The model's branches, each as a P4-side condition that must be reachable."""
    res, slot = s.side.res, s.slot
    fs0, fs1 = s.model_sw["flow_state"][slot], res.register("flow_state")[slot]
    drops, flows = res.counter("lb_drops"), res.counter("backend_flows")
    new_flow = flows != z3.K(CELL, z3.BitVecVal(0, 32))
    open_, closing = int(SlotState.OPEN), int(SlotState.CLOSING)

    def counted(reason: DropReason) -> z3.BoolRef:
        return drops[drop_cell(SERVICE, int(reason))] == 1

    return [
        ("dispatch", z3.And(z3.Not(res.dropped), new_flow)),
        ("pinned", z3.And(z3.Not(res.dropped), z3.Not(new_flow), fs0 == open_, fs1 == open_)),
        ("close", z3.And(z3.Not(res.dropped), fs0 == open_, fs1 == closing)),
        ("reclaim (a new flow over an OPEN entry)", z3.And(z3.Not(res.dropped), new_flow, fs0 == open_)),
        ("closing", z3.And(z3.Not(res.dropped), fs0 == closing, fs1 == closing)),
        ("refusal", counted(DropReason.FLOW_TABLE_FULL)),
        ("unknown flow", counted(DropReason.UNKNOWN_FLOW)),
        ("malformed", counted(DropReason.MALFORMED)),
        ("no eligible", counted(DropReason.NO_ELIGIBLE)),
        ("backend miss (new flow)", z3.And(counted(DropReason.NO_BACKEND_ENTRY), new_flow)),
        ("backend miss (pinned)", z3.And(counted(DropReason.NO_BACKEND_ENTRY), fs0 == open_)),
    ]


def p4lb_counterexample(s: P4lbSetup, m: z3.ModelRef, failed: Sequence[str], subs: Sequence[tuple[z3.ExprRef, z3.ExprRef]] = ()) -> dict[str, object]:
    """A replayable description of a state and packet where the sides differ."""
    ev = _evaluator(m, subs)
    inp, res, sw, cfg = s.side.inp, s.side.res, s.model_sw, s.cfg
    slot = ev(s.slot)
    t = ev(inp.timestamp)
    version = ev(sw["version"])
    groups = [ev(sw["rr_group0"]), ev(sw["rr_group1"])]
    members = {f"{v},{p}": ev(sw[f"rr_member{v}"][z3.BitVecVal(p, 8)]) for v in (0, 1) for p in range(min(groups[v], 255))}
    entry = {
        "state": ev(sw["flow_state"][z3.BitVecVal(slot, cfg.flow_table_bits)]),
        "key": ev(sw["flow_key"][z3.BitVecVal(slot, cfg.flow_table_bits)]),
        "backend": ev(sw["flow_backend"][z3.BitVecVal(slot, cfg.flow_table_bits)]),
        "last_seen": ev(s.last_seen[z3.BitVecVal(slot, cfg.flow_table_bits)]),
    }
    svc = ev(SERVICE)
    packet = {"src_ip": ev(inp.field("ipv4", "srcAddr")), "src_port": ev(inp.field("tcp", "srcPort")), "flags": ev(inp.field("tcp", "flags")), "time_us": t, "service": svc}
    state = {"version": version, "rr_group": groups, "rr_member": members, "rr_next": [ev(sw["rr_next0"]), ev(sw["rr_next1"])], "flows": {str(slot): entry}, "now": ev(s.now)}
    cells = sorted({svc, key_service(entry["key"])})  # the services whose backend_open cells the packet may move
    post_p4 = _slot_view(ev, res.registers, slot, cfg.flow_table_bits, prog=s.side.prog)
    bv = s.to_bv
    model_side = {
        "fate": Fate(ev(bv(s.out.fate))).name,
        "backend": ev(bv(s.out.backend)),
        "reason": DropReason(ev(bv(s.out.reason))).name,
        "slot_after": {k: ev(bv(s.post[k])[z3.BitVecVal(slot, cfg.flow_table_bits)]) for k in ("flow_state", "flow_key", "flow_backend", "flow_last_seen")},
        "rr_next_after": [ev(bv(s.post["rr_next0"])), ev(bv(s.post["rr_next1"]))],
        "backend_open": open_changes(ev, lambda c: z3.Extract(OPEN_BITS - 1, 0, bv(s.post["backend_open"])[c]), lambda c: z3.Extract(OPEN_BITS - 1, 0, bv(sw["backend_open"])[c]), cells),
    }
    p4_side = {
        "dropped": bool(ev(res.dropped)),
        "egress_port": ev(res.egress_port),
        "eth_dst": ev(res.field("ethernet", "dstAddr")),
        "ip_dst": ip_str(ev(res.field("ipv4", "dstAddr"))),
        "lb_drops": {DropReason(i).name: ev(res.counter("lb_drops")[z3.BitVecVal(svc * 8 + i, 11)]) for i in range(8) if ev(res.counter("lb_drops")[z3.BitVecVal(svc * 8 + i, 11)])},
        "backend_flows": {i: ev(res.counter("backend_flows")[z3.BitVecVal(svc * 256 + i, 16)]) for i in range(cfg.n + 2) if ev(res.counter("backend_flows")[z3.BitVecVal(svc * 256 + i, 16)])},
        "slot_after": post_p4,
        "rr_next_after": [ev(res.register("rr_next")[z3.BitVecVal(svc * 2 + i, 9)]) for i in (0, 1)],
        "backend_open": open_changes(ev, lambda c: res.register("backend_open")[c], lambda c: bv(sw["backend_open"])[c], cells),
    }
    return {"failed": list(failed), "slot": slot, "packet": packet, "flags": flags_str(packet["flags"]), "state": state, "model": model_side, "p4": p4_side, "input": input_values(ev, s.side.prog, inp)}


def open_changes(ev: Callable[[z3.ExprRef], int], after: Callable[[z3.ExprRef], z3.ExprRef], before: Callable[[z3.ExprRef], z3.ExprRef], services: Sequence[int]) -> dict[int, int]:
    """backend_open's changed cells of some services as signed 32-bit changes (-1, +1), by cell (service * 256 + backend)."""
    out = {}
    for i in (svc * 256 + b for svc in services for b in range(1 << B8.size())):
        c = z3.BitVecVal(i, CELL.size())
        d = (ev(after(c)) - ev(before(c))) % (1 << OPEN_BITS)
        if d:
            out[i] = d - (1 << OPEN_BITS) if d >= 1 << (OPEN_BITS - 1) else d
    return out


def _slot_view(ev: Callable[[z3.ExprRef], int], regs: Mapping[str, z3.ArrayRef], slot: int, bits: int, prog: Program) -> dict[str, int]:
    return {k: ev(regs[prog.register(k).name][z3.BitVecVal(slot, bits)]) for k in ("flow_state", "flow_key", "flow_backend", "flow_last_seen")}


def _evaluator(m: z3.ModelRef, subs: Sequence[tuple[z3.ExprRef, z3.ExprRef]] = ()) -> Callable[[z3.ExprRef], int]:
    """Evaluate a term (with the hash substitution applied) in a model, as a Python int."""

    def ev(e: z3.ExprRef) -> int:
        v = m.eval(z3.substitute(e, *subs) if subs else e, model_completion=True)
        if z3.is_true(v) or z3.is_false(v):
            return int(z3.is_true(v))
        return v.as_long() if z3.is_bv_value(v) or z3.is_int_value(v) else int(str(z3.simplify(v)))

    return ev


def replay_p4lb(cx: Mapping[str, Any], cfg: LbConfig | None = None) -> tuple[P4lbState, Outcome]:
    """The executable model's answer for a counterexample's state and packet (post-state, outcome)."""
    cfg = cfg or default_config(4)
    st = cx["state"]
    flows = {int(k): FlowEntry(SlotState(v["state"]) if v["state"] in (0, 1, 2) else v["state"], v["key"], v["backend"], v["last_seen"]) for k, v in st["flows"].items()}
    members: dict[Any, int] = {tuple(int(x) for x in k.split(",")): v for k, v in st["rr_member"].items()}  # keys "v,p" -> (v, p)
    state = P4lbState(version=st["version"], rr_group=tuple(st["rr_group"]), rr_member=members, rr_next=tuple(st["rr_next"]), flows=flows, now=st["now"])
    return p4lb_packet(cfg, P4LB, state, Packet(**cx["packet"]))


# ---- seed --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedSetup:
    """Both sides of the seed for one symbolic packet and state."""

    cfg: LbConfig
    side: Side
    enc: SeedEncoding
    model_sw: Mapping[str, z3.ExprRef]
    post: Mapping[str, z3.ExprRef]
    out: Out
    index: z3.BitVecRef


def seed_tables(prog: Program, cfg: LbConfig, sw: Mapping[str, z3.ExprRef], others: TableContents | None) -> dict[str, TableContents]:
    """install_seed's entries: forward (VIP -> read_flowlet_select, backends and clients -> set_nhop), ecmp_group,
    set_max (VIP -> _max(set_max)), set_statusK (VIP -> _failK(failK)), ecmp_nhop (1..4 -> set_ecmp_nhop)."""
    vip = Match(cfg.vip, prefix=32)
    fwd = table_named(prog, "forward")
    rows = [Entry((vip,), action_named(prog, fwd, "read_flowlet_select"))]
    rows.append(Entry((Match(cfg.client_net, prefix=cfg.client_prefix),), action_named(prog, fwd, "set_nhop"), (cfg.client_mac, cfg.client_port)))
    rows += [Entry((Match(b.ip, prefix=32),), action_named(prog, fwd, "set_nhop"), (b.mac, b.port)) for b in cfg.backends[:4]]
    grp, mx = table_named(prog, "ecmp_group"), table_named(prog, "set_max")
    tables: dict[str, TableContents] = {
        fwd: Entries(rows),
        grp: Entries([Entry((vip,), action_named(prog, grp, "set_ecmp_select"))]),
        mx: Entries([Entry((vip,), action_named(prog, mx, "_max"), (sw["set_max"],))]),
        table_named(prog, "ecmp_nhop"): backend_entries(prog, cfg, "ecmp_nhop", "set_ecmp_nhop", 4),
        table_named(prog, "send_frame"): others if others is not None else Arbitrary(prog),
    }
    for k in range(1, 5):
        t = table_named(prog, f"set_status{k}")
        tables[t] = Entries([Entry((vip,), action_named(prog, t, f"_fail{k}"), (z3.If(sw[f"fail{k}"], z3.BitVecVal(1, 1), z3.BitVecVal(0, 1)),))])
    return tables


def seed_setup(prog: Program, cfg: LbConfig, tag: str = "s") -> SeedSetup:
    """A symbolic packet in a symbolic seed state on both sides."""
    enc = SeedEncoding(cfg, real_hash=True)
    sym = enc.fresh(f"m{tag}")
    sw = dict(sym.sw)
    if prog.register("flowlet_select").size != 1 << SEED_INDEX_BITS:
        raise VerifyError("flowlet_select size differs from the model's")
    one = z3.BitVecSort(1)
    regs = {
        prog.register("flowlet_select").name: sw["flowlet_select"],
        prog.register("myselect").name: z3.K(one, sw["myselect"]),
        prog.register("mymax").name: z3.K(one, sw["mymax"]),
    }
    inp = fresh_input(prog, f"p{tag}")
    res = execute(prog, Environment(seed_tables(prog, cfg, sw, None), regs, Unlisted.ERROR), inp, f"x{tag}")
    pkt = model_packet(inp, z3.Int(f"t_{tag}"))
    post, out = enc.packet(Sym(sw, fresh_spec(f"spec{tag}")), pkt)[:2]
    return SeedSetup(cfg, Side(inp, res, prog), enc, sw, post, out, enc.hash(pkt.key))


SEED_ASSUMPTIONS = (
    "packet (a): Ethernet + IPv4 (version 4, IHL 5, MF 0, offset 0, valid header checksum, proto 6, dst VIP) + TCP to the VIP port, >= 54 bytes, not from the CPU port (510)",
    "tables as install_seed writes them: forward {VIP/32 -> read_flowlet_select, client net and backends -> set_nhop}, ecmp_group {VIP/32 -> set_ecmp_select}, set_max {VIP/32 -> _max(set_max)}, set_statusK {VIP/32 -> _failK(failK)}, ecmp_nhop {1..4 -> set_ecmp_nhop(mac, ip, port)}; send_frame arbitrary",
    "registers: flowlet_select = the model's array; myselect, mymax = the model's values",
    "hash: BMv2 crc16 (CRC-16/ARC) of {src, dst, proto, sport, dport} mod 8192 on both sides",
    "header fields not extracted are unspecified; an out-of-range register index is a failure (shown absent)",
)


def seed_obligations(s: SeedSetup) -> list[tuple[str, z3.BoolRef]]:
    """What class-(a) packets must agree on in the seed."""
    res, cfg, post, out = s.side.res, s.cfg, s.post, s.out
    lost = z3.And(z3.Not(res.dropped), res.egress_port == 0)
    return [
        ("fate backend", z3.Implies(out.fate == int(Fate.BACKEND), forwards_to(cfg, res, out.backend))),
        ("fate drop", (out.fate == int(Fate.DROP)) == res.dropped),
        ("fate lost (port 0)", (out.fate == int(Fate.LOST)) == lost),
        ("flowlet_select", res.register("flowlet_select") == post["flowlet_select"]),
        ("myselect", res.register("myselect")[z3.BitVecVal(0, 1)] == post["myselect"]),
        ("mymax", res.register("mymax")[z3.BitVecVal(0, 1)] == post["mymax"]),
        ("no fault", z3.Not(res.fault())),
    ]


def seed_branches(s: SeedSetup) -> list[tuple[str, z3.BoolRef]]:
    """The seed's behaviours, each reachable on the P4 side."""
    res, sw, cfg = s.side.res, s.model_sw, s.cfg
    syn = s.side.inp.field("tcp", "flags") & 2 != 0
    port = {b.id: b.port for b in cfg.backends[:4]}
    return [
        ("round robin to a backend", z3.And(syn, z3.Not(res.dropped), z3.Or(*[res.egress_port == p for p in port.values()]))),
        ("non-SYN follows flowlet_select", z3.And(z3.Not(syn), z3.Not(res.dropped), res.egress_port == port[3])),
        ("failover (server 1 failed -> 2)", z3.And(syn, sw["fail1"], sw["mymax"] == sw["set_max"], sw["myselect"] == 0, res.egress_port == port[2])),
        ("all failed: mark_to_drop overwritten by ecmp_nhop", z3.And(syn, *[sw[f"fail{k}"] for k in range(1, 5)], z3.Not(res.dropped), z3.Or(*[res.egress_port == p for p in port.values()]))),
        ("lost at port 0", z3.And(z3.Not(res.dropped), res.egress_port == 0)),
        ("set_max change resets myselect", z3.And(sw["mymax"] != sw["set_max"], z3.Not(syn), res.register("myselect")[z3.BitVecVal(0, 1)] == 0, sw["myselect"] != 0)),
    ]


def seed_counterexample(s: SeedSetup, m: z3.ModelRef, failed: Sequence[str], subs: Sequence[tuple[z3.ExprRef, z3.ExprRef]] = ()) -> dict[str, object]:
    """A replayable description of a seed state and packet where the sides differ."""
    ev = _evaluator(m, subs)
    inp, res, sw = s.side.inp, s.side.res, s.model_sw
    idx = ev(s.index)
    packet = {"src_ip": ev(inp.field("ipv4", "srcAddr")), "src_port": ev(inp.field("tcp", "srcPort")), "flags": ev(inp.field("tcp", "flags")), "time_us": 0}
    at = z3.BitVecVal(idx, SEED_INDEX_BITS)
    state = {"flowlet_select": {str(idx): ev(sw["flowlet_select"][at])}, "myselect": ev(sw["myselect"]), "mymax": ev(sw["mymax"]), "set_max": ev(sw["set_max"]), "set_status": [ev(sw[f"fail{k}"]) for k in range(1, 5)]}
    one = z3.BitVecVal(0, 1)
    return {
        "failed": list(failed),
        "index": idx,
        "packet": packet,
        "flags": flags_str(packet["flags"]),
        "state": state,
        "model": {"fate": Fate(ev(s.out.fate)).name, "backend": ev(s.out.backend), "flowlet_after": ev(s.post["flowlet_select"][at]), "myselect_after": ev(s.post["myselect"]), "mymax_after": ev(s.post["mymax"])},
        "p4": {"dropped": bool(ev(res.dropped)), "egress_port": ev(res.egress_port), "flowlet_after": ev(res.register("flowlet_select")[at]), "myselect_after": ev(res.register("myselect")[one]), "mymax_after": ev(res.register("mymax")[one])},
        "input": input_values(ev, s.side.prog, inp),
    }


def replay_seed(cx: Mapping[str, Any], cfg: LbConfig | None = None) -> tuple[SeedState, Outcome]:
    """The executable seed model's answer for a counterexample."""
    cfg = cfg or default_config(4, flow_table_bits=SEED_INDEX_BITS, flow_ways=1, flow_bucket=1)
    st = cx["state"]
    state = SeedState({int(k): v for k, v in st["flowlet_select"].items()}, st["myselect"], st["mymax"], st["set_max"], tuple(st["set_status"]))
    return seed_packet(cfg, state, Packet(**cx["packet"]))


# ---- class (b) -----------------------------------------------------------------------------------------


Other = tuple[str, z3.BoolRef, z3.BoolRef, PacketInput]
Counterexample: TypeAlias = Callable[[Any, z3.ModelRef, Sequence[str], Sequence[tuple[z3.ExprRef, z3.ExprRef]]], dict[str, object]]


def p4lb_others(prog: Program, cfg: LbConfig) -> list[Other]:
    """(name, premise, claim) for the packets outside class (a), p4lb; registers arbitrary."""
    sw = {"version": z3.Bool("version_b"), **{f"rr_group{v}": z3.BitVec(f"rr_group{v}_b", 8) for v in (0, 1)}, **{f"rr_member{v}": z3.Array(f"rr_member{v}_b", B8, B8) for v in (0, 1)}}
    present = {"rr_group0": z3.BoolVal(True), "rr_group1": z3.BoolVal(True), "rr_member0": z3.K(B8, z3.BoolVal(True)), "rr_member1": z3.K(B8, z3.BoolVal(True))}
    inp = fresh_input(prog, "pb")
    env = Environment(p4lb_tables(prog, cfg, sw, present, None), {}, Unlisted.ERROR)
    res = execute(prog, env, inp, "xb")
    pre = {name: z3.Array(f"{name}_xb", z3.BitVecSort(_bits(r.size)), z3.BitVecSort(r.bitwidth)) for name, r in prog.registers.items()}
    same = [res.registers[prog.register(k).name] == pre[prog.register(k).name] for k in ("flow_state", "flow_key", "flow_backend", "flow_last_seen", "backend_open")]
    zero8 = z3.K(CELL, z3.BitVecVal(0, 32))
    none = z3.K(DROP_CELLS, z3.BitVecVal(0, 32))
    drops, bad = res.counter("lb_drops"), res.counter("bad_checksum")
    zero1 = z3.K(bad.domain(), z3.BitVecVal(0, 32))
    one_bad = z3.Store(zero1, z3.BitVecVal(0, bad.domain().size()), z3.BitVecVal(1, 32))
    one_malformed = z3.Store(none, drop_cell(SERVICE, int(DropReason.MALFORMED)), z3.BitVecVal(1, 32))
    to_vip = z3.And(res.valid["tcp"], inp.field("ipv4", "dstAddr") == cfg.vip, inp.field("tcp", "dstPort") == cfg.vip_port)
    counted_bad = z3.If(to_vip, z3.And(drops == one_malformed, bad == zero1), z3.And(drops == none, bad == one_bad))  # its service's MALFORMED, or bad_checksum
    only_malformed = z3.Or(z3.And(drops == none, bad == zero1), z3.And(res.valid["ipv4"], res.checksum_error, counted_bad))
    backend_t = table_named(prog, "backend")
    claim = z3.And(*same, res.register("rr_next") == pre[prog.register("rr_next").name], res.register("idle_timeout") == pre[prog.register("idle_timeout").name], res.counter("backend_flows") == zero8, only_malformed, z3.Not(res.visited(backend_t)), z3.Not(res.fault()))
    not_a = z3.And(inp.ingress_port != CPU_PORT, z3.Not(vip_tcp(cfg, inp, res)))
    cpu = inp.ingress_port == CPU_PORT
    cpu_claim = z3.And(*same, res.counter("backend_flows") == zero8, drops == none, bad == zero1, z3.Or(res.dropped, res.egress_port == CPU_PORT), z3.Not(res.fault()))
    return [("(b) other packets: no flow/backend_open/rr_next/timeout change, no backend; only a bad checksum counted (its service's MALFORMED, or bad_checksum)", not_a, claim, inp), ("(b) CPU-port packets: flow registers, backend_open and counters unchanged, answer to the CPU", cpu, cpu_claim, inp)]


def _bits(size: int) -> int:
    return max(1, (size - 1).bit_length())


def seed_others(prog: Program, cfg: LbConfig) -> list[Other]:
    """(name, premise, claim) for seed packets outside class (a): IPv4 not addressed to the VIP."""
    sw = {"set_max": z3.BitVec("set_max_b", 3), **{f"fail{k}": z3.Bool(f"fail{k}_b") for k in range(1, 5)}}
    inp = fresh_input(prog, "pb")
    res = execute(prog, Environment(seed_tables(prog, cfg, sw, None), {}, Unlisted.ERROR), inp, "xb")
    pre = {name: z3.Array(f"{name}_xb", z3.BitVecSort(_bits(r.size)), z3.BitVecSort(r.bitwidth)) for name, r in prog.registers.items()}
    unchanged = z3.And(*[res.registers[n] == pre[n] for n in pre], z3.Not(res.fault()))
    premise = z3.And(inp.ingress_port != CPU_PORT, res.valid["ipv4"], inp.field("ipv4", "dstAddr") != cfg.vip)
    return [("(b) IPv4 not to the VIP: registers unchanged", premise, unchanged, inp)]


# ---- running the queries ---------------------------------------------------------------------------------


def _solver(timeout_ms: int) -> z3.Solver:
    s = z3.Solver()
    s.set(timeout=timeout_ms)
    return s


def _check(name: str, premises: Sequence[z3.BoolRef], goal: z3.BoolRef, expected: str, timeout_ms: int) -> tuple[Check, z3.ModelRef | None]:
    """Z3's answer on premises /\\ goal within timeout_ms, and its model if sat; a try that times out is asked again
    with another random seed and twice the time (restarts), until the time is spent."""
    t0 = time.monotonic()
    seed, budget = 0, RESTART_MS
    while True:
        left = timeout_ms - int((time.monotonic() - t0) * 1000)
        s = _solver(max(1, min(budget, left)))
        s.set("random_seed", seed)
        s.add(*premises, goal)
        ans = s.check()
        timed_out = ans == z3.unknown and any(why in s.reason_unknown() for why in ("timeout", "canceled"))
        if not timed_out or budget >= left:  # an answer, an unknown for another reason, or the whole time spent
            break
        log.info("%s: no answer within %.0f s with random seed %d: asked again with another", name, budget / 1000, seed)
        seed, budget = seed + 1, 2 * budget
    chk = Check(name, str(ans), expected, time.monotonic() - t0)
    log.info("%s: %s (%.2fs)", name, ans, chk.seconds)
    return chk, (s.model() if ans == z3.sat else None)


def _check_each(name: str, premises: Sequence[z3.BoolRef], goals: Sequence[tuple[z3.BoolRef, bool]], timeout_ms: int, bare: Sequence[z3.BoolRef] = ()) -> Check:
    """unsat for every goal: a lemma proven in parts, each under the premises (or, for a goal marked so, only `bare`)."""
    full, few = _solver(timeout_ms), _solver(timeout_ms)
    full.add(*premises)
    few.add(*bare)
    t0 = time.monotonic()
    ans = z3.unsat
    for g, needs in goals:
        s = full if needs else few
        s.push()
        s.add(g)
        ans = s.check()
        s.pop()
        if ans != z3.unsat:
            break
    chk = Check(name, str(ans), "unsat", time.monotonic() - t0)
    log.info("%s: %s (%.2fs)", name, ans, chk.seconds)
    return chk


def _prove(setup: P4lbSetup | SeedSetup, premises: Sequence[z3.BoolRef], obligations: list[tuple[str, z3.BoolRef]], cex: Counterexample, subs: Sequence[tuple[z3.ExprRef, z3.ExprRef]], timeout_ms: int, replayable: Callable[[], list[z3.BoolRef]] | None = None, binds: Sequence[z3.BoolRef] = (), name: str = "(a) equivalence") -> tuple[Check, dict[str, object] | None]:
    """UNSAT of premises and a broken obligation; on SAT, the counterexample with the obligations it breaks.

    A counterexample is re-solved with the hash bound again (h = the program's crc16 of the packet), so
    the packet, the slot and the state it shows are consistent and replay on the executable model; then once
    more with `replayable()` (a state BMv2 can be driven into, a packet the lab can send), kept if Z3 finds one.
    Only a differing program pays for these solves (and for building `replayable()`).
    """
    goal = z3.Not(z3.And(*[o for _, o in obligations]))
    chk, m = _check(name, premises, goal, "unsat", timeout_ms)
    if m is None:
        return chk, None
    bound = [a == b for a, b in subs if a.size() == b.size() and not z3.is_const(a)]
    # The hash's inputs (the packet's key fields) pinned to the first model's values: the crcs are then constants,
    # and Z3 only rearranges the state around the places they give (searching keys through four crc32 networks
    # took minutes); without a counterexample for that key, the key is left free. The replayable solve keeps the
    # key as the counterexample has it (another key is not searched: minutes again, for time-edge differences).
    keys = {c.get_id(): c for a, _ in subs if not z3.is_const(a) for c in uninterpreted([a])}
    keys.pop(SERVICE.get_id(), None)  # in the key, but not a hash input: left free for the replayable solve's id
    pins = [c == m.eval(c, model_completion=True) for c in keys.values()]
    s = _solver(timeout_ms)
    s.add(*premises, goal, *bound, *binds)  # binds: cut variables = what they stand for, so the state is a real one
    s.push()
    s.add(*pins)
    t0 = time.monotonic()
    pinned = s.check() == z3.sat
    if not pinned:
        s.pop()
    if pinned or s.check() == z3.sat:
        m = s.model()
    log.info("counterexample with the hash bound (key %s): %.2fs", "pinned" if pinned else "free", time.monotonic() - t0)
    found = "none asked"
    if replayable is not None:
        t0 = time.monotonic()
        rep = [z3.substitute(r, *subs) for r in replayable()]
        s.add(*rep)
        answer = s.check()
        log.info("replayable counterexample (key %s): %s %.2fs", "pinned" if pinned else "free", answer, time.monotonic() - t0)
        found = str(answer)
        if answer == z3.sat:
            m = s.model()
    failed = [name for name, o in obligations if z3.is_false(m.eval(o, model_completion=True))]
    out = cex(setup, m, failed, subs)
    out["replayable"] = found == "sat"
    if found != "sat":
        out["replay_note"] = f"no counterexample in a state BMv2 can be driven into (Z3: {found}): the replay reaches the nearest it can"
    return chk, out


def p4lb_replayable(s: P4lbSetup) -> list[z3.BoolRef]:
    """A counterexample the lab can replay: sent from the client port as one frame; its slot FREE and never
    written, or OPEN / CLOSING with a key of the replayed service (REPLAY_SERVICE, 0) whose SYN goes there in an
    otherwise empty table (one-way: the key's crc16 slot; multi-way: its first candidate, way 0's bucket's first
    place), so one packet can put it there,
    and a backend the backend_flows counter holds; its age at least REPLAY_MARGIN_US from the idle-timeout edge
    (BMv2's clock cannot be set, only waited on)."""
    cfg, inp, slot = s.cfg, s.side.inp, s.slot
    fs, fk, fb, last = s.model_sw["flow_state"][slot], s.model_sw["flow_key"][slot], s.model_sw["flow_backend"][slot], s.last_seen[slot]
    crc = crc16_sym([z3.Extract(47, 16, fk), z3.BitVecVal(cfg.vip, 32), z3.BitVecVal(TCP, 8), z3.Extract(15, 0, fk), z3.BitVecVal(cfg.vip_port, 16)])
    age, timeout = inp.timestamp - last, cfg.idle_timeout_us
    far = z3.Or(z3.ULE(age, max(0, timeout - REPLAY_MARGIN_US)), z3.UGE(age, timeout + REPLAY_MARGIN_US))
    return [
        SERVICE == 0,  # the service a replay installs (verify.bmv2.cex.REPLAY_SERVICE)
        inp.ingress_port == cfg.client_port,
        z3.ULE(inp.length, MAX_FRAME),
        z3.ULE(fs, int(SlotState.CLOSING)),
        z3.Implies(fs == int(SlotState.FREE), z3.And(fk == 0, fb == 0, last == 0)),
        z3.Implies(fs != int(SlotState.FREE), z3.And(z3.Extract(cfg.flow_table_bits - 1, 0, crc) == slot if cfg.shape.one_way else slot == s.enc.places.at(fk, 0), z3.ULE(fb, MAX_BACKENDS), far)),
        z3.Implies(fs != int(SlotState.FREE), z3.Extract(fk.size() - 1, SERVICE_SHIFT, fk) == 0),  # the slot's key is the replayed service's: its SYN can put it there
    ]


def seed_replayable(s: SeedSetup) -> list[z3.BoolRef]:
    """A seed counterexample the lab can replay: from the client port, one frame, in registers packets can
    produce (flowlet_select[cell], myselect, mymax among those a search on the executable model reaches)."""
    from p4lb.verify.bmv2.reach import seed_reachable  # noqa: PLC0415  (searched only when a seed JSON differs)

    inp, sw = s.side.inp, s.model_sw
    regs = (sw["flowlet_select"][s.index], sw["myselect"], sw["mymax"])
    reachable = z3.Or(*[z3.And(*[r == v for r, v in zip(regs, key, strict=True)]) for key in sorted(seed_reachable())])
    return [inp.ingress_port == s.cfg.client_port, z3.ULE(inp.length, MAX_FRAME), reachable]


def class_constants(cfg: LbConfig, inp: PacketInput) -> list[tuple[z3.ExprRef, z3.ExprRef]]:
    """The fields class (a) pins to constants (destination address, protocol, destination port)."""
    return [(inp.field("ipv4", "dstAddr"), z3.BitVecVal(cfg.vip, 32)), (inp.field("ipv4", "protocol"), z3.BitVecVal(TCP, 8)), (inp.field("tcp", "dstPort"), z3.BitVecVal(cfg.vip_port, 16))]


HashPair = tuple[str, z3.BitVecRef, z3.ExprRef]  # (what it is, the program's hash value, the model's term it must cut to)


def hash_pairs(program: str, s: P4lbSetup | SeedSetup) -> list[HashPair]:
    """Which hash the program computes stands for which of the model's terms.

    p4lb's multi-way table: the program's crc32 uses, in program order, are ways 0, 1, ... (their field orders are
    the model's WAY_ORDERS: the lemma checks it), each cut to the model's `Places.bucket_of(way, key)`; the one-way
    table and the seed: every crc16 is the model's slot."""
    res = s.side.res
    if isinstance(s, P4lbSetup) and not s.cfg.shape.one_way:
        crcs = list({u.value.get_id(): u.value for u in res.hashes if u.algo is HashAlgo.CRC32}.values())
        ways = s.cfg.shape.ways
        if len(crcs) != ways:
            raise VerifyError(f"{s.side.prog.name} computes {len(crcs)} crc32 hashes, the model's table has {ways} ways: one per way")
        return [(f"way {j} bucket", crcs[j], s.enc.places.bucket_of(j, s.pkt.key)) for j in range(ways)]
    model_slot = s.enc.places.at(s.pkt.key, 0) if isinstance(s, P4lbSetup) else s.index
    crcs = list({u.value.get_id(): u.value for u in res.hashes if u.algo is HashAlgo.CRC16}.values())
    return [("slot", c, model_slot) for c in crcs]


def bind_hash(pairs: Sequence[HashPair], fixed: Sequence[tuple[z3.ExprRef, z3.ExprRef]], timeout_ms: int) -> tuple[Check, list[tuple[z3.ExprRef, z3.ExprRef]]]:
    """Lemma: on class (a), every hash the program computes, cut to its model term's width, is that term
    (p4lb: one crc32 per way = the way's bucket; the seed: crc16 = the slot).

    Proven on the terms with the class's constant fields substituted, bit by bit: both sides are XOR networks
    (CRCs are affine over GF(2)), whose normal forms (`gf2`: each bit's set of input bits and constant) are
    compared without a solver; equal forms are a proof for every key. A bit outside the affine fragment or whose
    forms differ becomes a Z3 goal (one query per bit: sat on a real difference, with its model). The returned
    substitution then replaces each program hash by one fresh variable h and its model term by h's low bits,
    which is sound (the rest of the proof holds for every h, so for the crc) and keeps the XOR networks out of
    the main queries.
    """
    goals: list[z3.BoolRef] = []
    subs: list[tuple[z3.ExprRef, z3.ExprRef]] = []
    fresh: dict[int, z3.BitVecRef] = {}  # one h per model term: every crc16 of the seed's slot is the same h
    norm, normalized = gf2.Normalizer(), 0
    t0 = time.monotonic()
    for _name, crc, model in pairs:
        bits = model.size()
        h = fresh.get(model.get_id())
        if h is None:
            h = fresh[model.get_id()] = z3.BitVec(f"{'crc16' if crc.size() == 16 else 'crc32'}_h{len(fresh)}", crc.size())
            if not z3.is_bv_value(model):
                subs.append((model, z3.Extract(bits - 1, 0, h)))
        subs.append((crc, h))
        if z3.is_bv_value(model):  # a way of one bucket: its bucket index is the constant 0 on both sides
            continue
        prog_side, model_side = z3.substitute(z3.Extract(bits - 1, 0, crc), *fixed), z3.substitute(model, *fixed)
        try:
            open_bits = gf2.differing_bits(prog_side, model_side, norm)
            normalized += bits - len(open_bits)
        except gf2.NotAffine:
            open_bits = list(range(bits))
        goals += [z3.Extract(i, i, prog_side) != z3.Extract(i, i, model_side) for i in open_bits]
    answer = "unsat"
    for g in goals:  # only bits the normal forms did not prove equal
        s = _solver(timeout_ms)
        s.add(g)
        answer = str(s.check())
        if answer != "unsat":
            break
    algos = sorted({"crc16" if c.size() == 16 else "crc32" for _, c, _ in pairs}) or ["no hash"]
    how = f"{normalized} bits by GF(2) normal form" + (f", {len(goals)} by Z3" if goals else "")
    chk = Check(f"hash lemma: program {'/'.join(algos)} = model ({len(pairs)} uses; {how})", answer, "unsat", time.monotonic() - t0)
    log.info("%s: %s (%.2fs)", chk.name, chk.answer, chk.seconds)
    return chk, subs


def canonical_places(s: P4lbSetup, subs: Sequence[tuple[z3.ExprRef, z3.ExprRef]], formulas: Sequence[z3.ExprRef], timeout_ms: int, cand: z3.ExprRef | None = None) -> tuple[Check, list[tuple[z3.ExprRef, z3.ExprRef]]]:
    """Lemma: every place term either side computes from the hashes alone is one candidate's canonical place.

    After the hash substitution both sides' places are functions of the per-way h's, built differently: the program's
    ((j * BUCKETS + h_j % BUCKETS) * 8 + k) & mask in 32 bits, the model's (j * per_way + h_j) * bucket + k in place
    bits and `Places.of(key, cand)` for the place it writes. Each maximal hash-only term is matched (by evaluation)
    to candidate c's canonical place Concat(j, h_j's bucket bits, k), proven equal to it, and replaced by it; the
    model's Places.of(key, cand) is proven equal, for every cand, to If(cand == 0, place 0, ...) and replaced. Sound
    (equals for equals); it lets Z3 see one index term per candidate instead of reasoning about index equalities
    between 2 x 32 x 3 register reads."""
    shape, bits, key = s.cfg.shape, s.cfg.flow_table_bits, s.pkt.key
    wb, kb = (shape.ways - 1).bit_length(), (shape.bucket - 1).bit_length()
    t0 = time.monotonic()
    buckets = [z3.substitute(s.enc.places.bucket_of(j, key), *subs) for j in range(shape.ways)]

    def canon(c: int) -> z3.BitVecRef:
        j, k = divmod(c, shape.bucket)
        parts = ([z3.BitVecVal(j, wb)] if wb else []) + ([buckets[j]] if bits - wb - kb else []) + ([z3.BitVecVal(k, kb)] if kb else [])
        return parts[0] if len(parts) == 1 else z3.Concat(*parts)

    places = [canon(c) for c in range(shape.ways * shape.bucket)]
    x = z3.BitVec("cand_x", 8)

    def chain(cand: z3.ExprRef, last: z3.ExprRef) -> z3.ExprRef:
        out = last
        for c in range(len(places) - 1, -1, -1):
            out = z3.If(cand == c, places[c], out)
        return out

    of_x = z3.substitute(s.enc.places.of(key, x), *subs)
    lemmas: list[z3.BoolRef] = [of_x != chain(x, of_x)]
    model_cand = s.cand if cand is None else cand  # the model's candidate term, or the variable it was cut to
    target = z3.substitute(s.to_bv(s.enc.places.of(key, model_cand)), *subs)
    cand = z3.substitute(s.to_bv(model_cand), *subs)
    first = [(target, chain(cand, target))]
    formulas = [z3.substitute(f, *first) for f in formulas]
    hvars = {h.get_id() for b in buckets for h in uninterpreted([b])}
    matched = _hash_only_terms(formulas, hvars)
    hs = sorted({h.get_id(): h for b in buckets for h in uninterpreted([b])}.values(), key=str)
    gen = random.Random(1)
    samples = [[(h, z3.BitVecVal(gen.getrandbits(h.size()), h.size())) for h in hs] for _ in range(3)]
    want = [[z3.simplify(z3.substitute(p, *smp)).as_long() for smp in samples] for p in places]
    out = list(first)
    for t in matched:
        if t.size() < bits:
            continue
        got = [z3.simplify(z3.substitute(t, *smp)) for smp in samples]
        if not all(z3.is_bv_value(g) for g in got):
            continue
        for c, w in enumerate(want):
            if [g.as_long() for g in got] == w:
                p = places[c] if t.size() == bits else z3.ZeroExt(t.size() - bits, places[c])
                if not t.eq(p):
                    lemmas.append(t != p)
                    out.append((t, p))
                break
    sol = _solver(timeout_ms)
    sol.add(z3.Or(*lemmas))
    chk = Check(f"place lemma: {len(out) - 1} hash-only place terms and Places.of = canonical candidate places", str(sol.check()), "unsat", time.monotonic() - t0)
    log.info("%s: %s (%.2fs)", chk.name, chk.answer, chk.seconds)
    return chk, out


def _hash_only_terms(formulas: Sequence[z3.ExprRef], hvars: set[int]) -> list[z3.BitVecRef]:
    """The maximal bit-vector subterms whose only constants are the hash variables (and at least one of them)."""
    pure: dict[int, bool | None] = {}  # True: hash-only; False: mentions something else; None: no constant at all

    def kind(e: z3.ExprRef) -> bool | None:
        k = e.get_id()
        if k in pure:
            return pure[k]
        if z3.is_const(e) and e.decl().kind() == z3.Z3_OP_UNINTERPRETED:
            r: bool | None = k in hvars
        elif z3.is_quantifier(e) or z3.is_var(e):
            r = False
        else:
            r = None
            for c in e.children():
                ck = kind(c)
                if ck is False:
                    r = False
                    break
                if ck:
                    r = True
        pure[k] = r
        return r

    found: dict[int, z3.BitVecRef] = {}
    stack, done = list(formulas), set()
    while stack:
        e = stack.pop()
        if e.get_id() in done:
            continue
        done.add(e.get_id())
        if kind(e) is True:
            if z3.is_bv(e) and not z3.is_bv_value(e):
                found[e.get_id()] = e
            continue
        stack.extend(e.children())
    return list(found.values())


def check_equivalence(program: str, n: int = 4, data: dict[str, Any] | None = None, timeout_ms: int = QUERY_TIMEOUT_MS, reachability: bool = True, others: bool = True, flow_table_bits: int = P4LB_TABLE_BITS) -> EquivalenceResult:
    """Prove the compiled `program` (p4lb or seed; `data`: its JSON dict, e.g. mutated) equal to the model's packet step.
    p4lb: on a flow table of 2**flow_table_bits places, the committed build of that size unless `data` is given
    (P4LB_SMALL_TABLE_BITS: p4lb_small.json)."""
    if program not in PROGRAMS:
        raise VerifyError(f"no model for {program!r}: use one of {', '.join(PROGRAMS)}")
    t0 = time.monotonic()
    if data is None and program == "p4lb":
        try:
            data = load_json(p4lb_build(flow_table_bits))
        except ValueError as exc:
            raise VerifyError(str(exc)) from None
    prog = load(program, data)
    s: P4lbSetup | SeedSetup
    branches: list[tuple[str, z3.BoolRef]]
    cex: Counterexample
    assumptions: tuple[str, ...]
    extra: Callable[[Program, LbConfig], list[Other]] | None
    if program == "p4lb":
        cfg = default_config(n, flow_table_bits=flow_table_bits)
        s = p4lb_setup(prog, cfg)
        premises = [vip_tcp(cfg, s.side.inp, s.side.res), *s.relation]
        obligations, branches, cex, assumptions = p4lb_obligations(s), p4lb_branches(s), p4lb_counterexample, P4LB_ASSUMPTIONS
        extra = p4lb_others if others else None
    else:
        cfg = default_config(4, flow_table_bits=SEED_INDEX_BITS, flow_ways=1, flow_bucket=1)
        s = seed_setup(prog, cfg)
        premises = [vip_tcp(cfg, s.side.inp, s.side.res)]
        obligations, branches, cex, assumptions = seed_obligations(s), seed_branches(s), seed_counterexample, SEED_ASSUMPTIONS
        extra = seed_others if others else None
    checks, notes = [], []
    stages = s.stages if isinstance(s, P4lbSetup) else ()
    for stage in stages:  # the model's terms := the cut variables (sound: see CutPoint)
        obligations = [(name, z3.substitute(o, *[pair for c in stage if not c.late for pair in c.targets])) for name, o in obligations]
    cut_points = [c for stage in stages for c in stage]
    late = [pair for c in cut_points if c.late for pair in c.targets]
    cut_facts = [p for c in cut_points for p in c.premises()]
    # (name, all goals, [(goal, needs the premises)])
    mask_goals = [(f"cut lemma: {c.cut.action.rsplit('.', 1)[-1]} {c.name} = the model's{' (per bit)' if c.per_bit else ''}", z3.Or(*c.goals()), [(g, not (c.bare and i < len(c.goals()) - len(c.premises()))) for i, g in enumerate(c.goals())]) for c in cut_points]
    binds = [c.binding() for c in cut_points]
    premises = [*premises, *cut_facts]
    lemma, subs = bind_hash(hash_pairs(program, s), class_constants(cfg, s.side.inp), timeout_ms)
    checks.append(lemma)

    def rewrite(pairs: Sequence[tuple[z3.ExprRef, z3.ExprRef]]) -> None:
        nonlocal premises, obligations, branches, mask_goals, binds, late, cut_facts
        premises = [z3.substitute(p, *pairs) for p in premises]
        late = [(z3.substitute(a, *pairs), b) for a, b in late]
        cut_facts = [z3.substitute(p, *pairs) for p in cut_facts]
        obligations = [(name, z3.substitute(o, *pairs)) for name, o in obligations]
        branches = [(name, z3.substitute(b, *pairs)) for name, b in branches]
        mask_goals = [(name, z3.substitute(g, *pairs), [(z3.substitute(x, *pairs), full) for x, full in each]) for name, g, each in mask_goals]
        binds = [z3.substitute(b, *pairs) for b in binds]

    rewrite(subs)
    if isinstance(s, P4lbSetup) and not cfg.shape.one_way:
        placed, canon = canonical_places(s, subs, [*premises, *[o for _, o in obligations], *[b for _, b in branches], *[g for _, g, _ in mask_goals], *binds], timeout_ms, s.cand_var)
        checks.append(placed)
        for part in (canon[:1], canon[1:]):  # Places.of first (its inside holds hash-only terms too), then the rest
            if part:
                rewrite(part)
    if late:
        obligations = [(name, z3.substitute(o, *late)) for name, o in obligations]
    sat_chk, _ = _check("premises satisfiable", [*premises, *binds], z3.BoolVal(True), "sat", timeout_ms)
    checks.append(sat_chk)
    for name, _, each in mask_goals:
        checks.append(_check_each(name, premises, each, timeout_ms, cut_facts))
    setup = s
    replayable = (lambda: p4lb_replayable(setup)) if isinstance(setup, P4lbSetup) else (lambda: seed_replayable(setup))
    proven, counterexample = True, None
    for name, part in (("(a) equivalence", [o for o in obligations if o[0] not in SEPARATE]), ("(a) equivalence: " + ", ".join(SEPARATE), [o for o in obligations if o[0] in SEPARATE])):
        if not part:
            continue
        main, counterexample = _prove(s, premises, part, cex, subs, timeout_ms, replayable, binds, name)
        checks.append(main)
        proven = proven and main.ok
        if counterexample is not None or not main.ok:
            break
    if reachability and proven:
        checks += reachable(branches, [*premises, *binds], timeout_ms)
    if extra is not None and proven:
        for name, premise, claim, inp in extra(prog, cfg):
            chk, m = _check(name, [premise], z3.Not(claim), "unsat", timeout_ms)
            checks.append(chk)
            if m is not None and counterexample is None:
                counterexample = other_counterexample(name, prog, inp, m)
    verdict = _verdict(checks, counterexample)
    if program == "p4lb":
        notes.append("forward and send_frame are arbitrary (any entries): class (a) never applies forward; send_frame only rewrites the IPv4 source")
    if program == "seed":
        notes.append("seed: the model's DROP is unreachable for class (a): mark_to_drop in a failover block is always overwritten by ecmp_nhop (the selector is then 1..4)")
        notes.append("seed: packets to the VIP address that are not TCP to the VIP port still run read_flowlet_select/set_max (the seed's tables match the address only), so they can reset myselect/mymax; outside the model's scope")
    return EquivalenceResult(program, verdict, time.monotonic() - t0, assumptions, tuple(checks), counterexample, tuple(notes))


def reachable(branches: Sequence[tuple[str, z3.BoolRef]], premises: Sequence[z3.BoolRef], timeout_ms: int) -> list[Check]:
    """'sat' for each branch the premises admit: one query per branch no earlier model already shows (a model of the
    premises where a later branch's condition holds is its witness too), each in a scope of one solver that holds
    the premises (it keeps what it learnt of them: p4lb's 11 branches take 1.6 s, 5 s with a solver each)."""
    checks: list[Check] = []
    models: list[z3.ModelRef] = []
    solver = _solver(timeout_ms)
    solver.add(*premises)
    for name, cond in branches:
        if any(z3.is_true(m.eval(cond, model_completion=True)) for m in models):
            checks.append(Check(f"reachable: {name}", "sat", "sat", 0.0))
            continue
        solver.push()
        solver.add(cond)
        t0 = time.monotonic()
        ans = solver.check()
        checks.append(Check(f"reachable: {name}", str(ans), "sat", time.monotonic() - t0))
        log.info("reachable: %s: %s (%.2fs)", name, ans, checks[-1].seconds)
        models += [solver.model()] if ans == z3.sat else []
        solver.pop()
    return checks


SHOWN = (("ethernet", "etherType"), ("ipv4", "version"), ("ipv4", "ihl"), ("ipv4", "flags"), ("ipv4", "fragOffset"), ("ipv4", "protocol"), ("ipv4", "srcAddr"), ("ipv4", "dstAddr"), ("ipv4", "hdrChecksum"), ("tcp", "srcPort"), ("tcp", "dstPort"), ("tcp", "flags"))


def other_counterexample(name: str, prog: Program, inp: PacketInput, m: z3.ModelRef) -> dict[str, object]:
    """A class-(b) packet that breaks the claim: its port, length and main header fields (and its whole input)."""
    ev = _evaluator(m)
    packet = {f"{h}.{f}": ev(inp.field(h, f)) for h, f in SHOWN if (h, f) in inp.fields}
    return {"failed": [name], "ingress_port": ev(inp.ingress_port), "length": ev(inp.length), "packet": packet, "input": input_values(ev, prog, inp)}


def input_values(ev: Callable[[z3.ExprRef], int], prog: Program, inp: PacketInput) -> dict[str, object]:
    """The packet as a counterexample gives it: ingress port, length, time, and the fields of the headers it carries."""
    port = ev(inp.ingress_port)
    headers = ("cpu_out",) if port == CPU_PORT else PACKET_HEADERS
    fields = {f"{h}.{f.name}": ev(inp.field(h, f.name)) for h in headers if h in prog.headers for f in prog.header_type(h).fields}
    return {"ingress_port": port, "length": ev(inp.length), "timestamp": ev(inp.timestamp), "headers": [h for h in headers if h in prog.headers], "fields": fields}


def _verdict(checks: Sequence[Check], counterexample: Mapping[str, object] | None) -> Verdict:
    if any(c.answer == "unknown" for c in checks):
        return Verdict.UNKNOWN
    if counterexample is not None or any(c.expected == "unsat" and not c.ok for c in checks):
        return Verdict.DIFFERS
    if any(not c.ok for c in checks):
        return Verdict.UNKNOWN  # vacuous premises or an unreachable branch: nothing proven
    return Verdict.EQUIVALENT


# ---- concrete runs (the executor on concrete values, for differential tests) --------------------------------


def concrete_input(prog: Program, values: Mapping[tuple[str, str], int], length: int, port: int, ts: int) -> PacketInput:
    """A concrete packet: given fields, every other header bit 0."""
    fields = {}
    for h in prog.headers.values():
        if h.metadata:
            continue
        for f in prog.header_types[h.type_name].fields:
            fields[(h.name, f.name)] = z3.BitVecVal(values.get((h.name, f.name), 0), f.width)
    return PacketInput(fields, z3.BitVecVal(length, 32), z3.BitVecVal(port, 9), z3.BitVecVal(ts, TIME_BITS))


def tcp_to_vip(prog: Program, cfg: LbConfig, src_ip: int, src_port: int, flags: int, ts: int, port: int = 1) -> PacketInput:
    """A well-formed TCP packet from a client to the VIP (valid IPv4 header checksum)."""
    v = {
        ("ethernet", "etherType"): ETH_IPV4,
        ("ipv4", "version"): 4,
        ("ipv4", "ihl"): 5,
        ("ipv4", "totalLen"): 40,
        ("ipv4", "ttl"): 64,
        ("ipv4", "protocol"): TCP,
        ("ipv4", "srcAddr"): src_ip,
        ("ipv4", "dstAddr"): cfg.vip,
        ("tcp", "srcPort"): src_port,
        ("tcp", "dstPort"): cfg.vip_port,
        ("tcp", "dataOffset"): 5,
        ("tcp", "flags"): flags,
    }
    calc = next(c for c in prog.calculations.values() if c.algo.value == "csum16" and not c.uses_payload)
    parts = [z3.BitVecVal(v.get((e.header, e.field), 0), prog.field_type(e).width) for e in cast("tuple[FieldRef, ...]", calc.inputs)]  # the IPv4 checksum reads header fields only
    v[("ipv4", "hdrChecksum")] = z3.simplify(hash_sym(calc.algo, parts)).as_long()
    return concrete_input(prog, v, HEADERS_LEN, port, ts)


def concrete_p4lb_env(prog: Program, cfg: LbConfig, st: P4lbState, service: int = 0) -> Environment:
    """Tables and registers of a concrete model state: `service`'s slice (other services have no entries)."""
    bits = cfg.flow_table_bits
    idx = z3.BitVecSort(bits)
    svc = z3.BitVecVal(service, 8)
    regs = {
        "rr_next": z3.Store(z3.Store(z3.K(RR_CELLS, z3.BitVecVal(0, 8)), rr_cell(svc, 0), z3.BitVecVal(st.rr_next[0], 8)), rr_cell(svc, 1), z3.BitVecVal(st.rr_next[1], 8)),
        "idle_timeout": z3.K(z3.BitVecSort(1), z3.BitVecVal(cfg.idle_timeout_us, TIME_BITS)),
    }
    for k, width, get in (("flow_state", 2, lambda e: int(e.state)), ("flow_key", KEY.size(), lambda e: e.key), ("flow_backend", 8, lambda e: e.backend), ("flow_last_seen", TIME_BITS, lambda e: e.last_seen)):
        arr = z3.K(idx, z3.BitVecVal(0, width))
        for slot, e in st.flows.items():
            arr = z3.Store(arr, z3.BitVecVal(slot, bits), z3.BitVecVal(get(e), width))
        regs[k] = arr
    opened = z3.K(CELL, z3.BitVecVal(0, OPEN_BITS))
    for b, c in st.backend_open.items():
        opened = z3.Store(opened, z3.BitVecVal(b, CELL.size()), z3.BitVecVal(c % (1 << OPEN_BITS), OPEN_BITS))
    regs["backend_open"] = opened
    regs = {prog.register(k).name: v for k, v in regs.items()}
    written = [entries.vip(cfg, st.version, service), *(entries.rr_group(cfg, v, st.rr_group[v], service) for v in (0, 1))]
    written += [entries.rr_member(cfg, v, p, b, service) for (v, p), b in st.rr_member.items()]
    written += [e for e in entries.static(cfg, service) if e.table == "backend"]
    tables = _grouped([bound_entry(prog, e) for e in written])
    return Environment(tables, regs, Unlisted.EMPTY)


@dataclass(frozen=True)
class ConcreteRun:
    """What the P4 side did with one concrete packet, read back as Python values."""

    dropped: bool
    egress_port: int
    eth_dst: int
    ip_dst: int
    registers: Mapping[str, Callable[[int], int]]
    counters: Mapping[str, dict[int, int]] = field(default_factory=dict)


def run_concrete(prog: Program, env: Environment, inp: PacketInput, counter_sizes: Mapping[str, int]) -> ConcreteRun:
    """Execute and simplify every output to a constant."""
    res = execute(prog, env, inp, "c")

    def val(e: z3.ExprRef) -> int:
        v = z3.simplify(e)
        if z3.is_true(v) or z3.is_false(v):
            return int(z3.is_true(v))
        if not z3.is_bv_value(v):
            raise VerifyError(f"not concrete: {v}")
        return int(v.as_long())

    def reader(arr: z3.ArrayRef) -> Callable[[int], int]:
        return lambda i: val(arr[z3.BitVecVal(i, arr.domain().size())])

    regs = {k.rsplit(".", 1)[-1]: reader(a) for k, a in res.registers.items()}
    ctrs = {}
    for k, size in counter_sizes.items():
        arr = res.counter(k)
        ctrs[k] = {i: c for i in range(size) if (c := val(arr[z3.BitVecVal(i, arr.domain().size())]))}
    return ConcreteRun(bool(val(res.dropped)), val(res.egress_port), val(res.field("ethernet", "dstAddr")), val(res.field("ipv4", "dstAddr")), regs, ctrs)

