"""Symbolic execution of a BMv2 JSON program (simple_switch / v1model semantics) into Z3 bit-vectors.

One packet through parser, checksum verification, ingress, the after-ingress decision, egress and the
after-egress decision. Control flow is a DAG of parser states and pipeline nodes; every node is executed
once on the merge (an `If` per differing value) of the states flowing into it, so the result is one term
per output, not one per path.

Semantics followed (BMv2 `simple_switch`):
* Expressions are evaluated on unbounded integers as BMv2 does (p4c adds the `& mask` wraps); here every
  integer is a two's-complement bit-vector wide enough never to overflow, truncated when stored in a field.
* The packet: each header instance's bytes are free variables (`PacketInput.fields`) - exact because an
  instance is extracted at most once per path and instances extracted on one path do not overlap; the
  length is a symbolic byte count. An extract past the end sets parser_error = PacketTooShort, leaves the
  header invalid and ends parsing; the packet still goes through ingress (v1model does not drop it).
* Fields of headers that were not extracted hold unspecified values (BMv2 does not clear them), except that
  setValid (add_header) zeroes an invalid header's fields, as BMv2 does; metadata starts at 0;
  standard_metadata holds ingress_port, packet_length and ingress_global_timestamp.
* verify checksums over header fields are computed (csum16 / crc16); one that reads the payload makes
  checksum_error a free input. Update checksums and the deparser do not influence any decision and are
  not executed.
* mark_to_drop sets egress_spec := 511 (and mcast_grp := 0); after ingress, egress_spec == 511 drops the
  packet, otherwise egress_port := egress_spec and egress runs; egress_spec == 511 after egress drops it.
* Registers are Z3 arrays indexed by ceil(log2 size) bits; counters record increments (arrays from 0).
  An index out of range is recorded as a fault (BMv2 does not define the access), never silently used.
* Table contents are given per table (`TableContents`); a keyless table always runs its default entry.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import reduce
from typing import TypeAlias, TypeVar

import z3

from p4lb.verify.bmv2.program import (
    Action,
    Binary,
    BoolConst,
    Calculation,
    Const,
    Expr,
    FieldRef,
    HashAlgo,
    HeaderRef,
    MatchKind,
    Named,
    ObjectKind,
    Param,
    ParserOp,
    ParserOpKind,
    Pipeline,
    Primitive,
    PrimitiveOp,
    Program,
    Table,
    TableKey,
    Ternary,
    TransitionKind,
    Unary,
)
from p4lb.verify.errors import VerifyError

log = logging.getLogger(__name__)

DROP_PORT = 511
PACKET_TOO_SHORT = "PacketTooShort"
STD = "standard_metadata"
LEN_BITS = 32


class Unsupported(VerifyError):
    """The program uses something the executor does not model."""


# ---- hashes ----------------------------------------------------------------------------------------


def crc16_arc(data: bytes) -> int:
    """CRC-16/ARC (reflected poly 0x8005, init 0, no final xor): BMv2's `crc16`. check('123456789') = 0xBB3D.

    Deliberately not model.crc.crc16: this is the switch's side, written from BMv2's definition, and the
    equivalence's hash lemma proves the two agree on every flow key (a wrong model crc is caught there)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _bits_msb_first(parts: Sequence[z3.BitVecRef]) -> z3.BitVecRef:
    """The concatenation of the parts, zero-padded at the end to whole bytes (BMv2's byte buffer)."""
    whole = parts[0] if len(parts) == 1 else z3.Concat(*parts)
    pad = -whole.size() % 8
    return z3.Concat(whole, z3.BitVecVal(0, pad)) if pad else whole


def crc16_sym(parts: Sequence[z3.BitVecRef]) -> z3.BitVecRef:
    """CRC-16/ARC of the concatenated bits, symbolically: with init 0 it is GF(2)-linear, one column per input bit."""
    data = _bits_msb_first(parts)
    n = data.size()
    terms = []
    for i in range(n):  # bit i counted from the most significant bit of the first byte
        column = crc16_arc((1 << (n - 1 - i)).to_bytes(n // 8, "big"))
        if column:
            bit = z3.Extract(n - 1 - i, n - 1 - i, data)
            terms.append(z3.RepeatBitVec(16, bit) & z3.BitVecVal(column, 16))
    return reduce(lambda a, b: a ^ b, terms, z3.BitVecVal(0, 16))


def crc32_ieee(data: bytes) -> int:
    """CRC-32 (reflected poly 0xEDB88320, init 0xFFFFFFFF, final xor 0xFFFFFFFF): BMv2's `crc32`, zlib's crc32.
    check('123456789') = 0xCBF43926. Written from the definition (the switch's side), as crc16_arc."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xEDB88320 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def crc32_sym(parts: Sequence[z3.BitVecRef]) -> z3.BitVecRef:
    """CRC-32 of the concatenated bits, symbolically: affine over GF(2) for a fixed length, so crc(x) is crc(0...0)
    XOR one column per set input bit (column i = crc(e_i) ^ crc(0), e_i the input with only bit i set)."""
    data = _bits_msb_first(parts)
    n = data.size()
    zero = crc32_ieee(bytes(n // 8))
    terms = [z3.BitVecVal(zero, 32)]
    for i in range(n):  # bit i counted from the most significant bit of the first byte
        column = crc32_ieee((1 << (n - 1 - i)).to_bytes(n // 8, "big")) ^ zero
        if column:
            bit = z3.Extract(n - 1 - i, n - 1 - i, data)
            terms.append(z3.RepeatBitVec(32, bit) & z3.BitVecVal(column, 32))
    return reduce(lambda a, b: a ^ b, terms)


def csum16_sym(parts: Sequence[z3.BitVecRef]) -> z3.BitVecRef:
    """The Internet checksum (ones' complement of the ones' complement sum of 16-bit words), as BMv2's csum16."""
    data = _bits_msb_first(parts)
    if data.size() % 16:
        data = z3.Concat(data, z3.BitVecVal(0, 8))
    n = data.size() // 16
    width = 16 + max(1, n.bit_length())
    total = reduce(lambda a, b: a + b, [z3.ZeroExt(width - 16, z3.Extract(data.size() - 1 - 16 * k, data.size() - 16 - 16 * k, data)) for k in range(n)])
    for _ in range(2 + width // 16):
        total = (total & 0xFFFF) + z3.LShR(total, 16)
    return ~z3.Extract(15, 0, total)


def hash_sym(algo: HashAlgo, parts: Sequence[z3.BitVecRef]) -> z3.BitVecRef:
    """A calculation's value over the given input bit-vectors."""
    if algo is HashAlgo.CRC16:
        return crc16_sym(parts)
    if algo is HashAlgo.CRC32:
        return crc32_sym(parts)
    if algo is HashAlgo.CSUM16:
        return csum16_sym(parts)
    if algo is HashAlgo.IDENTITY:
        return _bits_msb_first(parts)
    raise Unsupported(f"hash algorithm {algo.value}")


# ---- integers ------------------------------------------------------------------------------------------

Value: TypeAlias = z3.BitVecRef | z3.BoolRef
_K = TypeVar("_K")


def sign_width(x: z3.BitVecRef, w: int) -> z3.BitVecRef:
    """Two's-complement x widened (sign-extended) to w bits."""
    return x if x.size() >= w else z3.SignExt(w - x.size(), x)


def num_const(v: int) -> z3.BitVecRef:
    """A signed bit-vector holding the integer v."""
    return z3.BitVecVal(v, max(v.bit_length(), (-v - 1).bit_length() if v < 0 else 0) + 1)


def as_num(v: Value) -> z3.BitVecRef:
    """Booleans become 0/1 (b2d)."""
    if z3.is_bool(v):
        return z3.If(v, z3.BitVecVal(1, 2), z3.BitVecVal(0, 2))
    return v


def as_bool(v: Value) -> z3.BoolRef:
    """Integers become (v != 0) (d2b)."""
    if z3.is_bool(v):
        return v
    return v != 0


def align(a: z3.BitVecRef, b: z3.BitVecRef, extra: int = 0) -> tuple[z3.BitVecRef, z3.BitVecRef]:
    """Both operands at a common width (plus `extra` bits of headroom)."""
    w = max(a.size(), b.size()) + extra
    return sign_width(a, w), sign_width(b, w)


def to_field(v: Value, width: int) -> z3.BitVecRef:
    """An integer stored in a field of `width` bits (truncation, two's complement for negatives)."""
    if z3.is_app_of(v, z3.Z3_OP_ZERO_EXT) and v.arg(0).size() == width:
        return v.arg(0)  # a field's value stored back at its own width
    x = sign_width(as_num(v), width)
    return x if x.size() == width else z3.Extract(width - 1, 0, x)


def from_field(x: z3.BitVecRef, signed: bool = False) -> z3.BitVecRef:
    """A field's value as an integer (unsigned fields get a zero sign bit)."""
    return x if signed else z3.ZeroExt(1, x)


def value_max(x: z3.BitVecRef, memo: dict[int, tuple[z3.ExprRef, int]]) -> int:
    """An upper bound of x read as unsigned, from the term's shape: constants, extensions, concatenations, extracts,
    if-then-else, and/or/xor, additions and constant shifts, multiplications and remainders that cannot wrap;
    2**size - 1 where the shape does not tell. `memo` (id -> (term, bound)) keeps each term it names alive."""
    key = x.get_id()
    if key not in memo:
        memo[key] = (x, min((1 << x.size()) - 1, _shape_max(x, memo)))
    return memo[key][1]


_BOUNDED = frozenset({z3.Z3_OP_ZERO_EXT, z3.Z3_OP_SIGN_EXT, z3.Z3_OP_CONCAT, z3.Z3_OP_EXTRACT, z3.Z3_OP_BAND, z3.Z3_OP_BOR, z3.Z3_OP_BXOR, z3.Z3_OP_BADD, z3.Z3_OP_BSHL, z3.Z3_OP_BLSHR, z3.Z3_OP_BUREM, z3.Z3_OP_BUREM_I, z3.Z3_OP_BMUL})


def _shape_max(x: z3.BitVecRef, memo: dict[int, tuple[z3.ExprRef, int]]) -> int:
    full: int = (1 << int(x.size())) - 1
    if z3.is_bv_value(x):
        return int(x.as_long())
    k, args = x.decl().kind(), x.children()
    if k == z3.Z3_OP_ITE:
        return max(value_max(args[1], memo), value_max(args[2], memo))
    if k not in _BOUNDED:
        return full
    tops = [value_max(a, memo) for a in args]
    if k == z3.Z3_OP_ZERO_EXT:
        return tops[0]
    if k == z3.Z3_OP_SIGN_EXT:  # a zero sign bit extends with zeros
        return tops[0] if tops[0] >> (args[0].size() - 1) == 0 else full
    if k == z3.Z3_OP_CONCAT:
        top = 0
        for a, t in zip(args, tops, strict=True):
            top = (top << a.size()) + t if top else t
        return top
    if k == z3.Z3_OP_EXTRACT:
        hi, lo = x.params()
        return tops[0] >> lo if tops[0] >> (hi + 1) == 0 else full
    if k == z3.Z3_OP_BAND:
        return min(tops)
    if k in (z3.Z3_OP_BOR, z3.Z3_OP_BXOR):
        return (1 << max(tops).bit_length()) - 1
    if k == z3.Z3_OP_BADD:
        return sum(tops)  # above 2**size - 1 (it may wrap): value_max caps it at the full range
    by = _constant(args[1]) if len(args) == 2 else None
    if by is None:
        return full
    if k == z3.Z3_OP_BSHL:
        return tops[0] << by if (tops[0] << by) <= full else full
    if k == z3.Z3_OP_BLSHR:
        return tops[0] >> by
    if k in (z3.Z3_OP_BUREM, z3.Z3_OP_BUREM_I) and by > 0:
        return min(tops[0], by - 1)
    if k == z3.Z3_OP_BMUL:
        return tops[0] * by if tops[0] * by <= full else full
    return full


def _constant(x: z3.BitVecRef) -> int | None:
    """The unsigned value of a constant, or of a zero- or sign-extended one; None for any other term."""
    if z3.is_bv_value(x):
        return int(x.as_long())
    if x.decl().kind() in (z3.Z3_OP_ZERO_EXT, z3.Z3_OP_SIGN_EXT) and z3.is_bv_value(x.arg(0)):
        inner = x.arg(0)
        v = inner.as_long()
        negative = x.decl().kind() == z3.Z3_OP_SIGN_EXT and v >> (inner.size() - 1)
        return int(v + ((1 << x.size()) - (1 << inner.size())) if negative else v)
    return None


def index_bits(size: int) -> int:
    """Index width of an array of `size` cells."""
    return max(1, (size - 1).bit_length())


# ---- inputs, tables ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PacketInput:
    """A packet as the parser can see it: every header instance's bits, the length, port and arrival time."""

    fields: Mapping[tuple[str, str], z3.BitVecRef]
    length: z3.BitVecRef  # bytes, 32 bits
    ingress_port: z3.BitVecRef  # 9 bits
    timestamp: z3.BitVecRef  # ingress_global_timestamp, 48 bits (microseconds)

    def field(self, header: str, name: str) -> z3.BitVecRef:
        """One header field's input value."""
        return self.fields[(header, name)]


def fresh_input(prog: Program, tag: str) -> PacketInput:
    """Free variables for every field of every (non-metadata) header instance."""
    fields = {}
    for h in prog.headers.values():
        if h.metadata:
            continue
        for f in prog.header_types[h.type_name].fields:
            fields[(h.name, f.name)] = z3.BitVec(f"{h.name}.{f.name}_{tag}", f.width)
    return PacketInput(fields, z3.BitVec(f"pkt_len_{tag}", LEN_BITS), z3.BitVec(f"ingress_port_{tag}", 9), z3.BitVec(f"ts_{tag}", 48))


@dataclass(frozen=True)
class Choice:
    """A table lookup result: when `when` holds, `action` runs with `params` (the entry that matched)."""

    when: z3.BoolRef
    action: str
    params: tuple[z3.BitVecRef | int, ...]


class TableContents:
    """What the control plane installed in one table: a function of the key values to mutually exclusive choices."""

    def lookup(self, table: Table, keys: tuple[z3.BitVecRef, ...], tag: str) -> tuple[Choice, ...]:
        """The matching entries (mutually exclusive); none holds on a miss."""
        raise NotImplementedError


class Empty(TableContents):
    """No entries: every lookup misses."""

    def lookup(self, table: Table, keys: tuple[z3.BitVecRef, ...], tag: str) -> tuple[Choice, ...]:
        return ()


class Arbitrary(TableContents):
    """Any contents at all: each application hits or misses freely, with any of the table's actions and data."""

    def __init__(self, program: Program) -> None:
        self.program = program

    def lookup(self, table: Table, keys: tuple[z3.BitVecRef, ...], tag: str) -> tuple[Choice, ...]:
        hit = z3.Bool(f"{table.name}.hit_{tag}")
        sel = z3.BitVec(f"{table.name}.action_{tag}", 8)
        out = []
        for i, (name, aid) in enumerate(zip(table.actions, table.action_ids, strict=True)):
            act = self.program.actions[aid]
            params = tuple(z3.BitVec(f"{table.name}.{name}.{p.name}_{tag}", p.width) for p in act.params)
            last = i == len(table.actions) - 1
            out.append(Choice(z3.And(hit, z3.UGE(sel, i) if last else sel == i), name, params))
        return tuple(out)


@dataclass(frozen=True)
class Match:
    """One key element of an entry: exact (prefix None, mask None), lpm (prefix) or ternary (mask)."""

    value: int | z3.BitVecRef
    prefix: int | None = None
    mask: int | None = None


@dataclass(frozen=True)
class Entry:
    """One table entry."""

    match: tuple[Match, ...]
    action: str
    params: tuple[z3.BitVecRef | int, ...] = ()
    priority: int = 0


class Entries(TableContents):
    """A list of entries, matched as BMv2 does: longest prefix first for lpm, highest priority for ternary."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = tuple(entries)

    def _cond(self, keys: tuple[z3.BitVecRef, ...], e: Entry) -> z3.BoolRef:
        conds = []
        for k, m in zip(keys, e.match, strict=True):
            v = z3.BitVecVal(m.value, k.size()) if isinstance(m.value, int) else m.value
            mask = m.mask
            if m.prefix is not None:
                mask = ((1 << m.prefix) - 1) << (k.size() - m.prefix)
            conds.append(k == v if mask is None else k & mask == v & mask)
        return z3.And(*conds) if conds else z3.BoolVal(True)

    def _rank(self, e: Entry) -> int:
        return sum(m.prefix or 0 for m in e.match) + e.priority

    def lookup(self, table: Table, keys: tuple[z3.BitVecRef, ...], tag: str) -> tuple[Choice, ...]:
        out: list[Choice] = []
        earlier: list[z3.BoolRef] = []
        for e in sorted(self.entries, key=self._rank, reverse=True):
            c = self._cond(keys, e)
            out.append(Choice(z3.And(c, *[z3.Not(x) for x in earlier]), e.action, e.params))
            earlier.append(c)
        return tuple(out)


class Function(TableContents):
    """Contents given as a function of the key values (symbolic tables mirroring a model's state)."""

    def __init__(self, fn: Callable[[tuple[z3.BitVecRef, ...]], tuple[Choice, ...]]) -> None:
        self.fn = fn

    def lookup(self, table: Table, keys: tuple[z3.BitVecRef, ...], tag: str) -> tuple[Choice, ...]:
        return self.fn(keys)


class Unlisted(enum.Enum):
    """What a keyed table missing from `Environment.tables` holds."""

    EMPTY = "empty"
    ARBITRARY = "arbitrary"
    ERROR = "error"


@dataclass(frozen=True)
class Environment:
    """Everything besides the packet: table contents and register contents before the packet."""

    tables: Mapping[str, TableContents] = field(default_factory=dict)
    registers: Mapping[str, z3.ArrayRef] = field(default_factory=dict)
    unlisted: Unlisted = Unlisted.ERROR


# ---- state ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """The PHV, registers and counter increments along one (merged) path."""

    fields: Mapping[tuple[str, str], z3.BitVecRef]
    valid: Mapping[str, z3.BoolRef]
    registers: Mapping[str, z3.ArrayRef]
    counters: Mapping[str, z3.ArrayRef]
    exited: z3.BoolRef
    offset: z3.BitVecRef  # parser: bytes consumed
    done: z3.BoolRef  # parser: stopped on an error


def _same(a: z3.ExprRef, b: z3.ExprRef) -> bool:
    """The same term: Z3 shares equal terms, so their pointers are equal (a merge compares some 300,000 pairs)."""
    return bool(a.ast.value == b.ast.value)


def _ite(c: z3.BoolRef, a: z3.ExprRef, b: z3.ExprRef) -> z3.ExprRef:
    """If(c, a, b) for a and b of one sort, without z3.If's coercions (a merge builds some 80,000 of them)."""
    ctx = a.ctx
    return z3.z3._to_expr_ref(z3.z3core.Z3_mk_ite(ctx.ref(), c.as_ast(), a.as_ast(), b.as_ast()), ctx)


def _merge_values(edges: Sequence[tuple[z3.BoolRef, z3.ExprRef]]) -> z3.ExprRef:
    """One term for values that differ by incoming edge (the last edge's value is the fallback)."""
    first = edges[0][1]
    if all(_same(v, first) for _, v in edges[1:]):
        return first
    out = edges[-1][1]
    for pc, v in reversed(edges[:-1]):
        out = v if _same(v, out) else _ite(pc, v, out)
    return out


def _merge_maps(edges: Sequence[tuple[z3.BoolRef, Mapping[_K, z3.ExprRef]]]) -> dict[_K, z3.ExprRef]:
    keys = edges[0][1].keys()
    return {k: _merge_values([(pc, m[k]) for pc, m in edges]) for k in keys}


def merge(edges: Sequence[tuple[z3.BoolRef, State]]) -> State:
    """The state at a join: per component, the value of the edge that was taken."""
    if len(edges) == 1:
        return edges[0][1]
    return State(
        fields=_merge_maps([(pc, s.fields) for pc, s in edges]),
        valid=_merge_maps([(pc, s.valid) for pc, s in edges]),
        registers=_merge_maps([(pc, s.registers) for pc, s in edges]),
        counters=_merge_maps([(pc, s.counters) for pc, s in edges]),
        exited=_merge_values([(pc, s.exited) for pc, s in edges]),
        offset=_merge_values([(pc, s.offset) for pc, s in edges]),
        done=_merge_values([(pc, s.done) for pc, s in edges]),
    )


def _or(pcs: Sequence[z3.BoolRef]) -> z3.BoolRef:
    live = [p for p in pcs if not z3.is_false(p)]
    if not live:
        return z3.BoolVal(False)
    if any(z3.is_true(p) for p in live):
        return z3.BoolVal(True)
    return live[0] if len(live) == 1 else z3.Or(*live)


def _and(a: z3.BoolRef, b: z3.BoolRef) -> z3.BoolRef:
    if z3.is_true(a):
        return b
    if z3.is_true(b):
        return a
    if z3.is_false(a) or z3.is_false(b):
        return z3.BoolVal(False)
    return z3.And(a, b)


def _fold(c: z3.BoolRef) -> z3.BoolRef:
    """Constant-fold a branch condition when it is closed (concrete runs prune the branch not taken)."""
    s = z3.simplify(c)
    return s if z3.is_true(s) or z3.is_false(s) else c


def _key_folder(keys: Sequence[z3.BitVecRef]) -> Callable[[z3.BoolRef], z3.BoolRef]:
    """_fold for a table's entry conditions with each key simplified once, not once per entry (a big symbolic key
    took BMv2's `backend` table 64 simplifications of it): keys that all simplify to values (concrete runs) fold each
    condition as _fold does; a symbolic key leaves the conditions as they are (the symbolic runs are not pruned)."""
    values = {k.get_id(): (k, z3.simplify(k)) for k in keys}
    if not all(z3.is_bv_value(v) for _, v in values.values()):
        return lambda c: c

    def fold(c: z3.BoolRef) -> z3.BoolRef:
        f = z3.simplify(z3.substitute(c, *values.values()))
        return f if z3.is_true(f) or z3.is_false(f) else c

    return fold


# ---- result --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HashUse:
    """One hash computed by the program: the calculation, its input bit-vectors and its value."""

    calculation: str
    algo: HashAlgo
    parts: tuple[z3.BitVecRef, ...]
    value: z3.BitVecRef


@dataclass(frozen=True)
class Cut:
    """A cut point: after `action` ran, field (header, name) held `original` and the run went on with `var` instead.

    Whatever the run computes afterwards is a function of `var`; a proof that uses it must show `original` equal to
    the term it puts for `var` (a lemma) and may then reason about `var` alone."""

    action: str
    header: str
    name: str
    var: z3.BitVecRef
    original: z3.BitVecRef
    when: z3.BoolRef


@dataclass(frozen=True)
class Result:
    """What one packet did: decision, final header fields, registers, counter increments, faults, visits."""

    dropped: z3.BoolRef
    egress_port: z3.BitVecRef
    fields: Mapping[tuple[str, str], z3.BitVecRef]
    valid: Mapping[str, z3.BoolRef]
    registers: Mapping[str, z3.ArrayRef]
    counters: Mapping[str, z3.ArrayRef]
    faults: tuple[tuple[z3.BoolRef, str], ...]
    visits: Mapping[str, z3.BoolRef]  # node name (and "table/action") -> condition under which it ran
    checksum_error: z3.BoolRef
    parser_error: z3.BitVecRef
    hashes: tuple[HashUse, ...] = ()
    cuts: tuple[Cut, ...] = ()

    def cut(self, name: str) -> Cut:
        """The cut of a field, by its name or a part of it (e.g. `_lb_match_mask`)."""
        found = [c for c in self.cuts if name in c.name]
        if len(found) != 1:
            raise KeyError(name)
        return found[0]

    def field(self, header: str, name: str) -> z3.BitVecRef:
        """A final header field."""
        return self.fields[(header, name)]

    def register(self, short: str) -> z3.ArrayRef:
        """A register's final contents, by full or last dotted name."""
        return self.registers[_full(self.registers, short)]

    def counter(self, short: str) -> z3.ArrayRef:
        """A counter's increments, by full or last dotted name."""
        return self.counters[_full(self.counters, short)]

    def visited(self, name: str) -> z3.BoolRef:
        """When node (or table/action) `name` ran (False if never)."""
        return self.visits.get(name, z3.BoolVal(False))

    def fault(self) -> z3.BoolRef:
        """Some access was out of range."""
        return _or([c for c, _ in self.faults])


def _full(items: Mapping[str, object], short: str) -> str:
    if short in items:
        return short
    found = [k for k in items if k.rsplit(".", 1)[-1] == short]
    if len(found) != 1:
        raise KeyError(short)
    return found[0]


# ---- the executor --------------------------------------------------------------------------------------


class Executor:
    """Runs one packet of `program` symbolically in `env`."""

    def __init__(self, program: Program, env: Environment, inp: PacketInput, tag: str = "x", cuts: Mapping[str, Sequence[tuple[str, str]]] | None = None) -> None:
        self.p = program
        self.cut_at = dict(cuts or {})
        self.cuts: list[Cut] = []
        self.env = env
        self.inp = inp
        self.tag = tag
        self.faults: list[tuple[z3.BoolRef, str]] = []
        self.visits: dict[str, z3.BoolRef] = {}
        self.hashes: list[HashUse] = []
        self.applied = 0
        self.bounds: dict[int, tuple[z3.ExprRef, int]] = {}  # value_max's memo: index terms share most of their parts

    # ---- state helpers ----

    def initial(self) -> State:
        """Headers invalid with their input bits, metadata 0, standard metadata from the input, registers from env."""
        fields, valid = {}, {}
        for h in self.p.headers.values():
            ht = self.p.header_types[h.type_name]
            valid[h.name] = z3.BoolVal(h.metadata)
            for f in ht.fields:
                fields[(h.name, f.name)] = self.inp.fields[(h.name, f.name)] if not h.metadata else z3.BitVecVal(0, f.width)
        std = {"ingress_port": self.inp.ingress_port, "ingress_global_timestamp": self.inp.timestamp}
        for name, v in std.items():
            if (STD, name) in fields:
                fields[(STD, name)] = v
        if (STD, "packet_length") in fields:
            fields[(STD, "packet_length")] = to_field(z3.ZeroExt(1, self.inp.length), self.p.field_type(FieldRef(STD, "packet_length")).width)
        regs = {}
        for r in self.p.registers.values():
            given = self.env.registers.get(r.name)
            if given is None:
                given = z3.Array(f"{r.name}_{self.tag}", z3.BitVecSort(index_bits(r.size)), z3.BitVecSort(r.bitwidth))
            regs[r.name] = given
        ctrs = {c.name: z3.K(z3.BitVecSort(index_bits(c.size)), z3.BitVecVal(0, 32)) for c in self.p.counters.values()}
        return State(fields, valid, regs, ctrs, z3.BoolVal(False), z3.BitVecVal(0, LEN_BITS), z3.BoolVal(False))

    def set_field(self, st: State, ref: FieldRef, v: Value) -> State:
        """header.field := v (unless the path has exited)."""
        if ref.field == "$valid$":
            return self.set_valid(st, ref.header, as_bool(v))
        ft = self.p.field_type(ref)
        new = to_field(v, ft.width)
        if not z3.is_false(st.exited):
            new = z3.If(st.exited, st.fields[(ref.header, ref.field)], new)
        return replace(st, fields={**st.fields, (ref.header, ref.field): new})

    def set_valid(self, st: State, header: str, v: z3.BoolRef) -> State:
        """Mark a header valid / invalid."""
        if not z3.is_false(st.exited):
            v = z3.If(st.exited, st.valid[header], v)
        return replace(st, valid={**st.valid, header: v})

    # ---- expressions ----

    def eval(self, e: Expr, st: State, params: Sequence[z3.BitVecRef] = ()) -> Value:
        """An expression's value: a Bool, or an integer as a wide-enough two's-complement bit-vector."""
        if isinstance(e, FieldRef):
            if e.field == "$valid$":
                return as_num(st.valid[e.header])
            ft = self.p.field_type(e)
            return from_field(st.fields[(e.header, e.field)], ft.signed)
        if isinstance(e, Const):
            return num_const(e.value)
        if isinstance(e, BoolConst):
            return z3.BoolVal(e.value)
        if isinstance(e, Param):
            return from_field(params[e.index])
        if isinstance(e, Ternary):
            c = as_bool(self.eval(e.cond, st, params))
            a, b = self.eval(e.then, st, params), self.eval(e.otherwise, st, params)
            if z3.is_bool(a) and z3.is_bool(b):
                return z3.If(c, a, b)
            a, b = align(as_num(a), as_num(b))
            return z3.If(c, a, b)
        if isinstance(e, Unary):
            return self._unary(e, st, params)
        if isinstance(e, Binary):
            return self._binary(e, st, params)
        raise Unsupported(f"expression {e!r}")

    def _unary(self, e: Unary, st: State, params: Sequence[z3.BitVecRef]) -> Value:
        if e.op == "valid":
            if not isinstance(e.operand, HeaderRef):
                raise Unsupported(f"valid of {e.operand!r}")
            return st.valid[e.operand.name]
        x = self.eval(e.operand, st, params)
        if e.op == "not":
            return z3.Not(as_bool(x))
        if e.op == "d2b":
            return as_bool(x)
        if e.op == "b2d":
            return as_num(x)
        if e.op == "~":
            return ~as_num(x)
        if e.op == "-":
            v = sign_width(as_num(x), as_num(x).size() + 1)
            return -v
        raise Unsupported(f"unary operator {e.op}")

    def _binary(self, e: Binary, st: State, params: Sequence[z3.BitVecRef]) -> Value:
        op = e.op
        if op in ("and", "or"):
            a, b = as_bool(self.eval(e.left, st, params)), as_bool(self.eval(e.right, st, params))
            return z3.And(a, b) if op == "and" else z3.Or(a, b)
        if op == "two_comp_mod":
            width = e.right
            if not isinstance(width, Const):
                raise Unsupported("two_comp_mod with a symbolic width")
            x = as_num(self.eval(e.left, st, params))
            return z3.SignExt(1, to_field(x, width.value))
        a, b = self.eval(e.left, st, params), self.eval(e.right, st, params)
        if op in ("==", "!=") and z3.is_bool(a) and z3.is_bool(b):
            return a == b if op == "==" else a != b
        a, b = as_num(a), as_num(b)
        if op in ("<<", ">>"):
            return self._shift(op, a, b)
        return _arith(op, a, b)

    def _shift(self, op: str, a: z3.BitVecRef, b: z3.BitVecRef) -> z3.BitVecRef:
        k = z3.simplify(b)
        if not z3.is_bv_value(k):
            raise Unsupported("shift by a symbolic amount")
        n = k.as_signed_long()
        if op == "<<":
            return sign_width(a, a.size() + n) << n if n else a
        return a >> n

    # ---- primitives ----

    def run_action(self, st: State, action: Action, params: Sequence[z3.BitVecRef], pc: z3.BoolRef) -> State:
        """All primitives of an action, in order (then the action's cut points, if it has any)."""
        for prim in action.primitives:
            st = self.primitive(st, prim, params, pc)
        for header, name in self.cut_at.get(action.name, ()):
            if any(c.header == header and c.name == name for c in self.cuts):
                raise Unsupported(f"cut point {header}.{name} after {action.name}: the action runs more than once")
            var = z3.BitVec(f"cut_{name}_{self.tag}", self.p.field_type(FieldRef(header, name)).width)
            self.cuts.append(Cut(action.name, header, name, var, st.fields[(header, name)], pc))
            st = replace(st, fields={**st.fields, (header, name): var})
        return st

    def primitive(self, st: State, prim: Primitive, params: Sequence[z3.BitVecRef], pc: z3.BoolRef) -> State:
        """One primitive."""
        op, args = prim.op, prim.args
        if op in (PrimitiveOp.ASSIGN, PrimitiveOp.MODIFY_FIELD):
            return self.set_field(st, _field(args[0]), self.eval(args[1], st, params))
        if op is PrimitiveOp.ADD_HEADER:
            return self._add_header(st, _header(args[0]))
        if op is PrimitiveOp.REMOVE_HEADER:
            return self.set_valid(st, _header(args[0]), z3.BoolVal(False))
        if op is PrimitiveOp.ASSIGN_HEADER:
            return self._assign_header(st, _header(args[0]), _header(args[1]))
        if op in (PrimitiveOp.MARK_TO_DROP, PrimitiveOp.DROP):
            st = self.set_field(st, FieldRef(STD, "egress_spec"), num_const(DROP_PORT))
            return self.set_field(st, FieldRef(STD, "mcast_grp"), num_const(0)) if op is PrimitiveOp.MARK_TO_DROP and (STD, "mcast_grp") in st.fields else st
        if op is PrimitiveOp.REGISTER_READ:
            return self._register_read(st, args, params, pc)
        if op is PrimitiveOp.REGISTER_WRITE:
            return self._register_write(st, args, params, pc)
        if op is PrimitiveOp.COUNT:
            return self._count(st, args, params, pc)
        if op is PrimitiveOp.HASH:
            return self._hash(st, args, params)
        if op is PrimitiveOp.EXIT:
            return replace(st, exited=z3.BoolVal(True))
        if op in (PrimitiveOp.NO_OP, PrimitiveOp.LOG_MSG):
            return st
        if op in (PrimitiveOp.ASSUME, PrimitiveOp.ASSERT):
            cond = as_bool(self.eval(args[0], st, params))
            self.faults.append((_and(pc, z3.Not(cond)), f"{op.value} failed"))
            return st
        raise Unsupported(f"primitive {op.value}")

    def _add_header(self, st: State, header: str) -> State:
        """setValid: BMv2's add_header zeroes the fields of a header that was invalid, then marks it valid."""
        was = st.valid[header]
        for f in self.p.header_type(header).fields:
            old = st.fields[(header, f.name)]
            st = self.set_field(st, FieldRef(header, f.name), from_field(z3.If(was, old, z3.BitVecVal(0, old.size()))))
        return self.set_valid(st, header, z3.BoolVal(True))

    def _assign_header(self, st: State, dst: str, src: str) -> State:
        for f in self.p.header_type(dst).fields:
            st = self.set_field(st, FieldRef(dst, f.name), from_field(st.fields[(src, f.name)]))
        return self.set_valid(st, dst, st.valid[src])

    def _index(self, size: int, idx: Value, pc: z3.BoolRef, what: str) -> z3.BitVecRef:
        """An array index, recording a fault when it can be out of range."""
        i = as_num(idx)
        bits = index_bits(size)
        wide = sign_width(i, max(i.size(), bits + 2))
        oob = z3.Or(wide < 0, wide >= size)
        in_range = value_max(i, self.bounds) < min(size, 1 << (i.size() - 1))  # non-negative, below size: no simplify of a big term
        if not in_range and not z3.is_false(z3.simplify(oob)):
            self.faults.append((_and(pc, oob), f"{what}: index out of range"))
        return z3.Extract(bits - 1, 0, wide)

    def _register_read(self, st: State, args: tuple[Expr, ...], params: Sequence[z3.BitVecRef], pc: z3.BoolRef) -> State:
        dst, reg = _field(args[0]), self.p.registers[_named(args[1])]
        i = self._index(reg.size, self.eval(args[2], st, params), pc, f"register_read {reg.name}")
        return self.set_field(st, dst, z3.ZeroExt(1, st.registers[reg.name][i]))

    def _register_write(self, st: State, args: tuple[Expr, ...], params: Sequence[z3.BitVecRef], pc: z3.BoolRef) -> State:
        reg = self.p.registers[_named(args[0])]
        i = self._index(reg.size, self.eval(args[1], st, params), pc, f"register_write {reg.name}")
        v = to_field(self.eval(args[2], st, params), reg.bitwidth)
        arr = st.registers[reg.name]
        new = z3.Store(arr, i, v)
        if not z3.is_false(st.exited):
            new = z3.If(st.exited, arr, new)
        return replace(st, registers={**st.registers, reg.name: new})

    def _count(self, st: State, args: tuple[Expr, ...], params: Sequence[z3.BitVecRef], pc: z3.BoolRef) -> State:
        ctr = self.p.counters[_named(args[0])]
        i = self._index(ctr.size, self.eval(args[1], st, params), pc, f"count {ctr.name}")
        arr = st.counters[ctr.name]
        new = z3.Store(arr, i, arr[i] + 1)
        if not z3.is_false(st.exited):
            new = z3.If(st.exited, arr, new)
        return replace(st, counters={**st.counters, ctr.name: new})

    def calc_inputs(self, calc: Calculation, st: State, params: Sequence[z3.BitVecRef] = ()) -> list[z3.BitVecRef]:
        """The input bit-vectors of a calculation (fields at their widths, constants at theirs)."""
        parts = []
        for e in calc.inputs:
            if isinstance(e, FieldRef):
                parts.append(st.fields[(e.header, e.field)] if e.field != "$valid$" else to_field(st.valid[e.header], 1))
            elif isinstance(e, Const) and e.width:
                parts.append(z3.BitVecVal(e.value, e.width))
            else:
                raise Unsupported(f"calculation {calc.name} input {e!r}")
        return parts

    def _hash(self, st: State, args: tuple[Expr, ...], params: Sequence[z3.BitVecRef]) -> State:
        dst, base, calc, size = _field(args[0]), self.eval(args[1], st, params), self.p.calculations[_named(args[2])], self.eval(args[3], st, params)
        parts = self.calc_inputs(calc, st, params)
        value = hash_sym(calc.algo, parts)
        self.hashes.append(HashUse(calc.name, calc.algo, tuple(parts), value))
        h = z3.ZeroExt(1, value)
        size_v = z3.simplify(as_num(size))
        if not z3.is_bv_value(size_v) or size_v.as_signed_long() <= 0:
            raise Unsupported("hash with a non-constant or non-positive size")
        h, m = align(h, as_num(size_v))
        base_n, off = align(as_num(base), z3.URem(h, m), 1)
        return self.set_field(st, dst, base_n + off)

    # ---- parser ----

    def parse(self, st: State) -> State:
        """The parser, state by state in topological order, merging at every state."""
        order = _topo(self.p.parser.init_state, lambda s: tuple(t.next_state for t in self.p.parser.states[s].transitions if t.next_state))
        incoming: dict[str, list[tuple[z3.BoolRef, State]]] = {self.p.parser.init_state: [(z3.BoolVal(True), st)]}
        accepted: list[tuple[z3.BoolRef, State]] = []
        for name in order:
            edges = [(pc, s) for pc, s in incoming.pop(name, []) if not z3.is_false(pc)]
            if not edges:
                continue
            pc = _or([e[0] for e in edges])
            self.visits[f"parser:{name}"] = pc
            out = self._parse_state(name, merge(edges), pc)
            for cond, nxt, s in out:
                target = accepted if nxt is None else incoming.setdefault(nxt, [])
                target.append((cond, s))
        return merge(accepted)

    def _parse_state(self, name: str, st: State, pc: z3.BoolRef) -> list[tuple[z3.BoolRef, str | None, State]]:
        ps = self.p.parser.states[name]
        for op in ps.ops:
            st = self._parser_op(st, op, pc)
        out: list[tuple[z3.BoolRef, str | None, State]] = []
        stopped = st.done
        if not z3.is_false(stopped):
            out.append((_and(pc, stopped), None, st))
        go = _and(pc, z3.Not(stopped)) if not z3.is_false(stopped) else pc
        key = self._select_key(ps.key, st)
        earlier: list[z3.BoolRef] = []
        for t in ps.transitions:
            if t.kind is TransitionKind.DEFAULT:
                m = z3.BoolVal(True)
            elif t.kind is TransitionKind.VALUE:
                mask = t.mask if t.mask is not None else (1 << key.size()) - 1
                assert t.value is not None  # a VALUE transition has a value
                m = _fold(key & mask == t.value & mask)
            else:
                raise Unsupported("parser value sets")
            local = _fold(z3.And(m, *[z3.Not(x) for x in earlier])) if earlier else m
            cond = _and(go, local)
            if not z3.is_false(cond):
                out.append((cond, t.next_state, st))
            earlier.append(m)
            if t.kind is TransitionKind.DEFAULT:
                break
        else:
            if not ps.transitions:
                out.append((go, None, st))
            else:  # no case matched: BMv2 raises NoMatch
                out.append((_and(go, z3.Not(_or(earlier))), None, self._parser_error(st, "NoMatch", z3.BoolVal(True))))
        return out

    def _select_key(self, key: tuple[Expr, ...], st: State) -> z3.BitVecRef:
        """The select key as BMv2 builds it: each element padded to whole bytes, concatenated."""
        parts = []
        for e in key:
            if not isinstance(e, FieldRef):
                raise Unsupported(f"parser select on {e!r}")
            v = st.fields[(e.header, e.field)] if e.field != "$valid$" else to_field(st.valid[e.header], 1)
            pad = -v.size() % 8
            parts.append(z3.ZeroExt(pad, v) if pad else v)
        if not parts:
            return z3.BitVecVal(0, 8)
        return parts[0] if len(parts) == 1 else z3.Concat(*parts)

    def _parser_error(self, st: State, error: str, when: z3.BoolRef) -> State:
        ref = FieldRef(STD, "parser_error")
        if (STD, "parser_error") in st.fields:
            code = self.p.errors.get(error, 0)
            st = replace(st, fields={**st.fields, (STD, "parser_error"): z3.If(when, z3.BitVecVal(code, self.p.field_type(ref).width), st.fields[(STD, "parser_error")])})
        return replace(st, done=z3.Or(st.done, when) if not z3.is_false(st.done) else when)

    def _parser_op(self, st: State, op: ParserOp, pc: z3.BoolRef) -> State:
        if z3.is_true(st.done):
            return st
        if op.kind is ParserOpKind.EXTRACT:
            return self._extract(st, op.args[0])
        if op.kind is ParserOpKind.SET:
            return self._guarded(st, lambda s: self.set_field(s, _field(op.args[0]), self.eval(op.args[1], s)))
        if op.kind is ParserOpKind.PRIMITIVE:
            prim = op.primitive
            assert prim is not None  # a PRIMITIVE parser op carries its primitive
            return self._guarded(st, lambda s: self.primitive(s, prim, (), pc))
        if op.kind is ParserOpKind.VERIFY:
            ok = as_bool(self.eval(op.args[0], st))
            err = self.eval(op.args[1], st)
            code = z3.simplify(as_num(err))
            name = next((k for k, v in self.p.errors.items() if z3.is_bv_value(code) and v == code.as_signed_long()), "verify")
            return self._parser_error(st, name, z3.And(z3.Not(st.done), z3.Not(ok)))
        raise Unsupported(f"parser op {op.kind.value}")

    def _guarded(self, st: State, fn: Callable[[State], State]) -> State:
        """Run fn, keeping the old values where parsing already stopped."""
        if z3.is_false(st.done):
            return fn(st)
        new = fn(st)
        return merge([(st.done, st), (z3.BoolVal(True), new)])

    def _extract(self, st: State, target: Expr) -> State:
        if not isinstance(target, HeaderRef):
            raise Unsupported(f"extract into {target!r} (header stacks' next)")
        h = target.name
        size = self.p.header_type(h).bits // 8
        end = st.offset + size
        short = z3.UGT(z3.ZeroExt(1, end), z3.ZeroExt(1, self.inp.length))
        ok = z3.And(z3.Not(st.done), z3.Not(short)) if not z3.is_false(st.done) else z3.Not(short)
        valid = z3.Or(st.valid[h], ok) if not z3.is_false(st.valid[h]) else ok
        st = replace(st, valid={**st.valid, h: valid}, offset=z3.If(ok, end, st.offset))
        return self._parser_error(st, PACKET_TOO_SHORT, z3.And(z3.Not(st.done), short) if not z3.is_false(st.done) else short)

    # ---- checksums ----

    def verify_checksums(self, st: State) -> tuple[State, z3.BoolRef]:
        """checksum_error := 1 if a verify checksum (whose condition holds) does not match."""
        err = z3.BoolVal(False)
        for ck in self.p.checksums:
            if not ck.verify:
                continue
            calc = self.p.calculations[ck.calculation]
            cond = as_bool(self.eval(ck.condition, st)) if ck.condition is not None else z3.BoolVal(True)
            if calc.uses_payload:
                bad = z3.Bool(f"{ck.name}.payload_mismatch_{self.tag}")
            else:
                got, target = align(z3.ZeroExt(1, hash_sym(calc.algo, self.calc_inputs(calc, st))), from_field(st.fields[(ck.target.header, ck.target.field)]))
                bad = got != target
            err = z3.Or(err, z3.And(cond, bad))
        if (STD, "checksum_error") in st.fields:
            st = self.set_field(st, FieldRef(STD, "checksum_error"), as_num(err))
        return st, err

    # ---- pipelines ----

    def pipeline(self, pipe: Pipeline, st: State, pc: z3.BoolRef) -> State:
        """A control: nodes in topological order, merging at each; exited paths skip to the end."""
        if pipe.init is None:
            return st
        order = _topo(pipe.init, pipe.successors)
        incoming: dict[str, list[tuple[z3.BoolRef, State]]] = {pipe.init: [(pc, st)]}
        finished: list[tuple[z3.BoolRef, State]] = []
        for name in order:
            edges = [(c, s) for c, s in incoming.pop(name, []) if not z3.is_false(c)]
            if not edges:
                continue
            here = _or([e[0] for e in edges])
            self.visits[name] = _or([here, self.visits[name]]) if name in self.visits else here
            outs = self._node(pipe, name, merge(edges), here)
            for cond, nxt, s in outs:
                if z3.is_false(cond):
                    continue
                if not z3.is_false(s.exited) and nxt is not None:
                    finished.append((_and(cond, s.exited), s))
                    cond = _and(cond, z3.Not(s.exited))
                (finished if nxt is None else incoming.setdefault(nxt, [])).append((cond, s))
        if not finished:
            return st
        return merge(finished) if len(finished) > 1 else finished[0][1]

    def _node(self, pipe: Pipeline, name: str, st: State, pc: z3.BoolRef) -> list[tuple[z3.BoolRef, str | None, State]]:
        if name in pipe.conditionals:
            c = pipe.conditionals[name]
            cond = _fold(as_bool(self.eval(c.expr, st)))
            return [(_and(pc, cond), c.true_next, st), (_and(pc, z3.Not(cond)), c.false_next, st)]
        return self._apply(pipe.tables[name], st, pc)

    def _apply(self, t: Table, st: State, pc: z3.BoolRef) -> list[tuple[z3.BoolRef, str | None, State]]:
        """Apply a table: one outgoing edge per entry choice, plus the miss (default entry)."""
        choices: tuple[Choice, ...] = ()
        fold: Callable[[z3.BoolRef], z3.BoolRef] = _fold
        if t.keys:
            keys = tuple(self._key(k, st) for k in t.keys)
            choices = self._contents(t).lookup(t, keys, f"{self.tag}_{self.applied}")
            self.applied += 1
            fold = _key_folder(keys)
        out = []
        for ch in choices:
            when = _and(pc, fold(ch.when))
            if z3.is_false(when):
                continue
            act = self.p.actions[t.action_id(ch.action)]
            params = self._params(act, ch.params)
            self.visits[f"{t.name}/{ch.action}"] = _or([when, self.visits.get(f"{t.name}/{ch.action}", z3.BoolVal(False))])
            out.append((when, t.next_after(ch.action, True), self.run_action(st, act, params, when)))
        miss = _and(pc, fold(z3.Not(_or([c.when for c in choices])))) if choices else pc
        if not z3.is_false(miss) and t.default_entry is not None:
            act = self.p.actions[t.default_entry.action_id]
            params = self._params(act, t.default_entry.action_data)
            name = next((n for n, i in zip(t.actions, t.action_ids, strict=True) if i == act.id), act.name)
            self.visits[f"{t.name}/{name}"] = _or([miss, self.visits.get(f"{t.name}/{name}", z3.BoolVal(False))])
            out.append((miss, t.next_after(name, False), self.run_action(st, act, params, miss)))
        elif not z3.is_false(miss):
            out.append((miss, t.base_default_next, st))
        return out

    def _contents(self, t: Table) -> TableContents:
        got = self.env.tables.get(t.name)
        if got is not None:
            return got
        if self.env.unlisted is Unlisted.EMPTY:
            return Empty()
        if self.env.unlisted is Unlisted.ARBITRARY:
            return Arbitrary(self.p)
        raise Unsupported(f"no contents given for table {t.name}")

    def _key(self, k: TableKey, st: State) -> z3.BitVecRef:
        if k.match is MatchKind.VALID:
            return to_field(st.valid[_header(k.target)], 1)
        ref = _field(k.target)
        v = st.fields[(ref.header, ref.field)] if ref.field != "$valid$" else to_field(st.valid[ref.header], 1)
        return v & k.mask if k.mask is not None else v

    def _params(self, act: Action, data: Sequence[z3.BitVecRef | int]) -> tuple[z3.BitVecRef, ...]:
        if len(data) != len(act.params):
            raise VerifyError(f"action {act.name} takes {len(act.params)} parameters, got {len(data)}")
        out = []
        for p, v in zip(act.params, data, strict=True):
            x = z3.BitVecVal(v, p.width) if isinstance(v, int) else v
            if x.size() != p.width:
                raise VerifyError(f"action {act.name} parameter {p.name} is bit<{p.width}>, got {x.size()} bits")
            out.append(x)
        return tuple(out)

    # ---- whole packet ----

    def run(self) -> Result:
        """Parser, verify checksums, ingress, drop or egress, drop or send."""
        st = self.parse(self.initial())
        st, cks_err = self.verify_checksums(st)
        st = self.pipeline(self.p.ingress, st, z3.BoolVal(True))
        spec = st.fields[(STD, "egress_spec")]
        dropped_in = spec == DROP_PORT
        eg = replace(st, exited=z3.BoolVal(False))
        eg = replace(eg, fields={**eg.fields, (STD, "egress_port"): spec})
        eg = self.pipeline(self.p.egress, eg, z3.Not(dropped_in))
        dropped_out = eg.fields[(STD, "egress_spec")] == DROP_PORT
        final = merge([(dropped_in, st), (z3.BoolVal(True), eg)])
        return Result(
            dropped=z3.Or(dropped_in, dropped_out),
            egress_port=spec,
            fields=final.fields,
            valid=final.valid,
            registers=final.registers,
            counters=final.counters,
            faults=tuple(self.faults),
            visits=dict(self.visits),
            checksum_error=cks_err,
            parser_error=st.fields.get((STD, "parser_error"), z3.BitVecVal(0, 32)),
            hashes=tuple(self.hashes),
            cuts=tuple(self.cuts),
        )


def execute(program: Program, env: Environment, inp: PacketInput, tag: str = "x", cuts: Mapping[str, Sequence[tuple[str, str]]] | None = None) -> Result:
    """One packet through `program` in `env` (`cuts`: action name -> fields replaced by fresh variables after it)."""
    return Executor(program, env, inp, tag, cuts).run()


# ---- helpers -------------------------------------------------------------------------------------------


def _arith(op: str, a: z3.BitVecRef, b: z3.BitVecRef) -> Value:
    """Binary operators on unbounded integers (as wide-enough two's complement)."""
    if op in ("+", "-"):
        x, y = align(a, b, 1)
        return x + y if op == "+" else x - y
    if op == "*":
        x, y = align(a, b)
        w = a.size() + b.size()
        return sign_width(x, w) * sign_width(y, w)
    x, y = align(a, b)
    table: dict[str, Callable[[z3.BitVecRef, z3.BitVecRef], Value]] = {
        "&": lambda p, q: p & q,
        "|": lambda p, q: p | q,
        "^": lambda p, q: p ^ q,
        "==": lambda p, q: p == q,
        "!=": lambda p, q: p != q,
        "<": lambda p, q: p < q,
        "<=": lambda p, q: p <= q,
        ">": lambda p, q: p > q,
        ">=": lambda p, q: p >= q,
        "%": z3.SRem,
        "/": lambda p, q: p / q,
    }
    if op not in table:
        raise Unsupported(f"operator {op}")
    return table[op](x, y)


def _field(e: Expr) -> FieldRef:
    if not isinstance(e, FieldRef):
        raise Unsupported(f"expected a field, got {e!r}")
    return e


def _header(e: Expr) -> str:
    if not isinstance(e, HeaderRef):
        raise Unsupported(f"expected a header, got {e!r}")
    return e.name


def _named(e: Expr) -> str:
    if not isinstance(e, Named) or e.kind not in (ObjectKind.REGISTER, ObjectKind.COUNTER, ObjectKind.CALCULATION):
        raise Unsupported(f"expected a register, counter or calculation, got {e!r}")
    return e.name


def _topo(start: str, succ: Callable[[str], tuple[str, ...]]) -> list[str]:
    """Nodes reachable from `start`, each after all its predecessors; a cycle raises Unsupported."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str) -> None:
        stack = [(n, iter(succ(n)))]
        state[n] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                state[node] = 2
                order.append(node)
            elif state.get(nxt) == 1:
                raise Unsupported(f"a loop through {nxt} (parser loops / recirculation are not modelled)")
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(succ(nxt))))

    visit(start)
    return order[::-1]
