"""A BMv2 JSON program (as p4c's BMv2 back end emits it) loaded into typed, frozen dataclasses.

Covers what simple_switch programs of this repository use and the rest of the common format: header types,
headers and header stacks, the parser (extract / set / verify / primitive ops, select transitions with
value, mask and default over a transition key), the ingress and egress pipelines (tables with exact / lpm /
ternary / range keys, actions, default entries, next tables by action or __HIT__ / __MISS__; conditionals),
actions with their primitives, calculations, registers, counters and checksums. Expressions are parsed
into a small typed tree (`Expr`). Anything outside the format raises `ProgramError` when loaded; anything
the symbolic executor cannot follow raises there, by name.
"""

from __future__ import annotations

import copy
import enum
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from p4lb.p4 import artifacts
from p4lb.verify.errors import VerifyError

log = logging.getLogger(__name__)
_V = TypeVar("_V")


class ProgramError(VerifyError):
    """The BMv2 JSON has something this reader does not know."""


# ---- expressions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRef:
    """header.field (`$valid$` is the header's validity bit)."""

    header: str
    field: str


@dataclass(frozen=True)
class Const:
    """An integer constant (`hexstr`); `width` only where the JSON gives one (calculation inputs)."""

    value: int
    width: int | None = None


@dataclass(frozen=True)
class BoolConst:
    """true / false."""

    value: bool


@dataclass(frozen=True)
class Param:
    """An action parameter (`runtime_data`, or `local` inside expressions)."""

    index: int


@dataclass(frozen=True)
class HeaderRef:
    """A header instance (`header`, `regular` in extract)."""

    name: str


@dataclass(frozen=True)
class StackRef:
    """A header stack (`header_stack`, `stack` in extract)."""

    name: str


class ObjectKind(enum.Enum):
    """What a named, non-value operand of a primitive refers to."""

    REGISTER = "register_array"
    COUNTER = "counter_array"
    METER = "meter_array"
    CALCULATION = "calculation"
    STRING = "string"
    FIELD_LIST = "field_list"
    EXTERN = "extern"
    STACK_FIELD = "stack_field"
    LOOKAHEAD = "lookahead"
    PAYLOAD = "payload"


@dataclass(frozen=True)
class Named:
    """A register / counter / calculation / string ... operand."""

    kind: ObjectKind
    name: str


@dataclass(frozen=True)
class Unary:
    """op right (`not`, `~`, `d2b`, `b2d`, `valid`, unary `-`)."""

    op: str
    operand: Expr


@dataclass(frozen=True)
class Binary:
    """left op right."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Ternary:
    """cond ? then : otherwise."""

    cond: Expr
    then: Expr
    otherwise: Expr


Expr = FieldRef | Const | BoolConst | Param | HeaderRef | StackRef | Named | Unary | Binary | Ternary

UNARY_OPS = ("not", "~", "d2b", "b2d", "valid", "valid_union", "-", "usat_cast", "sat_cast")


def parse_expr(d: Any) -> Expr:
    """One expression or operand of the JSON (`{"type": ..., "value": ...}` or a bare `{"op": ...}` node)."""
    if d is None:
        raise ProgramError("missing expression")
    if "op" in d and "type" not in d:
        return _parse_op(d)
    kind, value = d["type"], d.get("value")
    if kind == "expression":
        return parse_expr(value)
    if kind == "field":
        return FieldRef(value[0], value[1])
    if kind == "hexstr":
        return Const(int(value, 16), d.get("bitwidth"))
    if kind == "bool":
        return BoolConst(bool(value))
    if kind in ("runtime_data", "local"):
        return Param(int(value))
    if kind in ("header", "regular"):
        return HeaderRef(value)
    if kind in ("header_stack", "stack"):
        return StackRef(value)
    if kind == "stack_field":
        return Named(ObjectKind.STACK_FIELD, ".".join(value))
    if kind == "lookahead":
        return Named(ObjectKind.LOOKAHEAD, f"{value[0]}:{value[1]}")
    if kind == "payload":
        return Named(ObjectKind.PAYLOAD, "payload")
    try:
        return Named(ObjectKind(kind), str(value))
    except ValueError:
        raise ProgramError(f"unknown operand type {kind!r}") from None


def _parse_op(d: dict[str, Any]) -> Expr:
    op = d["op"]
    if op == "?":
        return Ternary(parse_expr(d["cond"]), parse_expr(d["left"]), parse_expr(d["right"]))
    if d.get("left") is None and op in UNARY_OPS:
        return Unary(op, parse_expr(d["right"]))
    if op == "two_comp_mod":
        return Binary(op, parse_expr(d["left"]), parse_expr(d["right"]))
    return Binary(op, parse_expr(d["left"]), parse_expr(d["right"]))


# ---- types, headers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldType:
    """One field of a header type."""

    name: str
    width: int
    signed: bool = False


@dataclass(frozen=True)
class HeaderType:
    """A header (or metadata) type."""

    name: str
    fields: tuple[FieldType, ...]

    def field(self, name: str) -> FieldType:
        """A field by name."""
        for f in self.fields:
            if f.name == name:
                return f
        raise ProgramError(f"header type {self.name} has no field {name!r}")

    @property
    def bits(self) -> int:
        """Width of the header in bits."""
        return sum(f.width for f in self.fields)


@dataclass(frozen=True)
class Header:
    """A header instance (metadata instances are always valid)."""

    name: str
    type_name: str
    metadata: bool


@dataclass(frozen=True)
class HeaderStack:
    """A header stack: its element instances by index."""

    name: str
    type_name: str
    headers: tuple[str, ...]


# ---- parser --------------------------------------------------------------------------------------------


class ParserOpKind(enum.Enum):
    """What a parser operation does."""

    EXTRACT = "extract"
    SET = "set"
    VERIFY = "verify"
    PRIMITIVE = "primitive"
    EXTRACT_VL = "extract_VL"
    ADVANCE = "advance"


@dataclass(frozen=True)
class ParserOp:
    """One parser operation; `primitive` holds the action primitive of a PRIMITIVE op."""

    kind: ParserOpKind
    args: tuple[Expr, ...]
    primitive: Primitive | None = None


class TransitionKind(enum.Enum):
    """A select case: a value (with optional mask), the default, or a value set."""

    VALUE = "hexstr"
    DEFAULT = "default"
    VALUE_SET = "parse_vset"


@dataclass(frozen=True)
class Transition:
    """One case of a select; next_state None is accept."""

    kind: TransitionKind
    value: int | None
    mask: int | None
    next_state: str | None


@dataclass(frozen=True)
class ParseState:
    """A parser state: ops, then a select over `key` (each key element byte-padded, as BMv2 builds it)."""

    name: str
    ops: tuple[ParserOp, ...]
    key: tuple[Expr, ...]
    transitions: tuple[Transition, ...]


@dataclass(frozen=True)
class Parser:
    """A parser: its states by name and the start state."""

    name: str
    init_state: str
    states: Mapping[str, ParseState]


# ---- actions, tables -----------------------------------------------------------------------------------


class PrimitiveOp(enum.Enum):
    """The action primitives the reader knows (names as in the JSON)."""

    ASSIGN = "assign"
    MODIFY_FIELD = "modify_field"
    ASSIGN_HEADER = "assign_header"
    ADD_HEADER = "add_header"
    REMOVE_HEADER = "remove_header"
    MARK_TO_DROP = "mark_to_drop"
    DROP = "drop"
    REGISTER_READ = "register_read"
    REGISTER_WRITE = "register_write"
    COUNT = "count"
    HASH = "modify_field_with_hash_based_offset"
    EXIT = "exit"
    NO_OP = "no_op"
    LOG_MSG = "log_msg"
    ASSUME = "assume"
    ASSERT = "assert"
    EXECUTE_METER = "execute_meter"
    CLONE_I2E = "clone_ingress_pkt_to_egress"
    CLONE_E2E = "clone_egress_pkt_to_egress"
    RESUBMIT = "resubmit"
    RECIRCULATE = "recirculate"
    DIGEST = "generate_digest"
    TRUNCATE = "truncate"
    PUSH = "push"
    POP = "pop"
    RANDOM = "modify_field_rng_uniform"


@dataclass(frozen=True)
class Primitive:
    """One primitive call of an action."""

    op: PrimitiveOp
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class ActionParam:
    """An action parameter (runtime data)."""

    name: str
    width: int


@dataclass(frozen=True)
class Action:
    """An action: parameters and primitives."""

    id: int
    name: str
    params: tuple[ActionParam, ...]
    primitives: tuple[Primitive, ...]


class MatchKind(enum.Enum):
    """Table key match kinds."""

    EXACT = "exact"
    LPM = "lpm"
    TERNARY = "ternary"
    RANGE = "range"
    OPTIONAL = "optional"
    VALID = "valid"
    SELECTOR = "selector"


@dataclass(frozen=True)
class TableKey:
    """One key element: what is matched and how (with the JSON's optional mask)."""

    name: str
    match: MatchKind
    target: Expr
    mask: int | None


@dataclass(frozen=True)
class DefaultEntry:
    """The action a miss runs, with its data."""

    action_id: int
    action_data: tuple[int, ...]
    const: bool


HIT, MISS = "__HIT__", "__MISS__"


@dataclass(frozen=True)
class Table:
    """A match-action table (keyless ones are p4c's wrappers around straight-line code)."""

    name: str
    keys: tuple[TableKey, ...]
    match_type: MatchKind
    actions: tuple[str, ...]
    action_ids: tuple[int, ...]
    next_tables: Mapping[str, str | None]
    base_default_next: str | None
    default_entry: DefaultEntry | None

    @property
    def hit_miss(self) -> bool:
        """Next node chosen by hit / miss rather than by action."""
        return HIT in self.next_tables or MISS in self.next_tables

    def action_id(self, name: str) -> int:
        """The id of one of the table's actions, by name (the P4Runtime name)."""
        for n, i in zip(self.actions, self.action_ids, strict=True):
            if n == name:
                return i
        raise ProgramError(f"table {self.name} has no action {name!r} (has {', '.join(self.actions)})")

    def next_after(self, action: str, hit: bool) -> str | None:
        """The next node after running `action` (hit or miss)."""
        if self.hit_miss:
            return self.next_tables.get(HIT if hit else MISS)
        return self.next_tables.get(action, self.base_default_next)


@dataclass(frozen=True)
class Conditional:
    """An `if` node of a pipeline."""

    name: str
    expr: Expr
    true_next: str | None
    false_next: str | None


@dataclass(frozen=True)
class Pipeline:
    """A control (ingress or egress): its nodes and the first one."""

    name: str
    init: str | None
    tables: Mapping[str, Table]
    conditionals: Mapping[str, Conditional]

    def successors(self, node: str) -> tuple[str, ...]:
        """Every node that can follow `node`."""
        if node in self.conditionals:
            c = self.conditionals[node]
            nxt: tuple[str | None, ...] = (c.true_next, c.false_next)
        else:
            t = self.tables[node]
            nxt = (*t.next_tables.values(), t.base_default_next)
        return tuple(n for n in dict.fromkeys(nxt) if n is not None)


# ---- externs -------------------------------------------------------------------------------------------


class HashAlgo(enum.Enum):
    """Calculation algorithms of BMv2."""

    CRC16 = "crc16"
    CRC32 = "crc32"
    CSUM16 = "csum16"
    IDENTITY = "identity"
    XOR16 = "xor16"
    CRC16_CUSTOM = "crc16_custom"
    CRC32_CUSTOM = "crc32_custom"
    RANDOM = "random"


@dataclass(frozen=True)
class Calculation:
    """A named calculation over a list of inputs (fields, constants with widths, or the payload)."""

    name: str
    algo: HashAlgo
    inputs: tuple[Expr, ...]

    @property
    def uses_payload(self) -> bool:
        """Depends on payload bytes (then it cannot be computed from header fields)."""
        return any(isinstance(e, Named) and e.kind is ObjectKind.PAYLOAD for e in self.inputs)


@dataclass(frozen=True)
class Checksum:
    """A verify (before ingress) or update (before the deparser) checksum."""

    name: str
    target: FieldRef
    calculation: str
    verify: bool
    update: bool
    condition: Expr | None


@dataclass(frozen=True)
class RegisterArray:
    """register<bit<bitwidth>>(size)."""

    name: str
    size: int
    bitwidth: int


@dataclass(frozen=True)
class CounterArray:
    """counter(size)."""

    name: str
    size: int
    direct: bool


# ---- program -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Program:
    """A whole BMv2 JSON program."""

    name: str
    header_types: Mapping[str, HeaderType]
    headers: Mapping[str, Header]
    stacks: Mapping[str, HeaderStack]
    parser: Parser
    ingress: Pipeline
    egress: Pipeline
    actions: Mapping[int, Action]
    calculations: Mapping[str, Calculation]
    checksums: tuple[Checksum, ...]
    registers: Mapping[str, RegisterArray]
    counters: Mapping[str, CounterArray]
    errors: Mapping[str, int]
    deparser: tuple[str, ...]

    def field_type(self, ref: FieldRef) -> FieldType:
        """The type of header.field."""
        return self.header_types[self.headers[ref.header].type_name].field(ref.field)

    def header_type(self, header: str) -> HeaderType:
        """The type of a header instance."""
        return self.header_types[self.headers[header].type_name]

    def table(self, name: str) -> Table:
        """A table of either pipeline, by name."""
        for p in (self.ingress, self.egress):
            if name in p.tables:
                return p.tables[name]
        raise ProgramError(f"no table {name!r} in {self.name}")

    def register(self, short: str) -> RegisterArray:
        """A register by full name or by its last dotted component."""
        return _by_short(self.registers, short, "register")

    def counter(self, short: str) -> CounterArray:
        """A counter by full name or by its last dotted component."""
        return _by_short(self.counters, short, "counter")


def _by_short(items: Mapping[str, _V], short: str, what: str) -> _V:
    if short in items:
        return items[short]
    found = [v for k, v in items.items() if k.rsplit(".", 1)[-1] == short]
    if len(found) != 1:
        raise ProgramError(f"no single {what} named {short!r}")
    return found[0]


def _primitive(d: dict[str, Any]) -> Primitive:
    try:
        op = PrimitiveOp(d["op"])
    except ValueError:
        raise ProgramError(f"unknown primitive {d['op']!r}") from None
    return Primitive(op, tuple(parse_expr(p) for p in d["parameters"]))


def _parser_op(d: dict[str, Any]) -> ParserOp:
    try:
        kind = ParserOpKind(d["op"])
    except ValueError:
        raise ProgramError(f"unknown parser op {d['op']!r}") from None
    if kind is ParserOpKind.PRIMITIVE:
        (inner,) = d["parameters"]
        return ParserOp(kind, (), _primitive(inner))
    return ParserOp(kind, tuple(parse_expr(p) for p in d["parameters"]))


def _hex(value: str | None) -> int | None:
    return None if value is None else int(value, 16)


def _parse_state(d: dict[str, Any]) -> ParseState:
    trans = tuple(Transition(TransitionKind(t["type"]), _hex(t.get("value")) if t["type"] == "hexstr" else None, _hex(t.get("mask")), t.get("next_state")) for t in d["transitions"])
    key = tuple(parse_expr(k) for k in d.get("transition_key", []))
    return ParseState(d["name"], tuple(_parser_op(o) for o in d["parser_ops"]), key, trans)


def _table(d: dict[str, Any]) -> Table:
    keys = tuple(TableKey(k.get("name", ""), MatchKind(k["match_type"]), parse_expr({"type": "field", "value": k["target"]}) if isinstance(k["target"], list) else HeaderRef(k["target"]), _hex(k.get("mask"))) for k in d["key"])
    de = d.get("default_entry")
    default = DefaultEntry(de["action_id"], tuple(int(x, 16) for x in de["action_data"]), bool(de.get("action_const"))) if de else None
    return Table(d["name"], keys, MatchKind(d["match_type"]), tuple(d["actions"]), tuple(d["action_ids"]), dict(d["next_tables"]), d.get("base_default_next"), default)


def _pipeline(d: dict[str, Any]) -> Pipeline:
    if d.get("action_profiles"):
        raise ProgramError(f"pipeline {d['name']}: action profiles / selectors are not supported")
    tables = {t["name"]: _table(t) for t in d["tables"]}
    conds = {c["name"]: Conditional(c["name"], parse_expr(c["expression"]), c.get("true_next"), c.get("false_next")) for c in d["conditionals"]}
    return Pipeline(d["name"], d.get("init_table"), tables, conds)


def _header_type(d: dict[str, Any]) -> HeaderType:
    fields = []
    for f in d["fields"]:
        if f[1] == "*":
            raise ProgramError(f"header type {d['name']}: variable-length fields are not supported")
        fields.append(FieldType(f[0], int(f[1]), bool(f[2]) if len(f) > 2 else False))
    return HeaderType(d["name"], tuple(fields))


def _checksum(d: dict[str, Any]) -> Checksum:
    cond = d.get("if_cond")
    return Checksum(d["name"], FieldRef(*d["target"]), d["calculation"], bool(d.get("verify", True)), bool(d.get("update", True)), parse_expr(cond) if cond else None)


def from_json(data: dict[str, Any], name: str = "program") -> Program:
    """A Program from a loaded BMv2 JSON dict (not modified)."""
    data = copy.deepcopy(data)
    types = {t["name"]: _header_type(t) for t in data["header_types"]}
    headers = {h["name"]: Header(h["name"], h["header_type"], bool(h["metadata"])) for h in data["headers"]}
    by_id = {h["id"]: h["name"] for h in data["headers"]}
    stacks = {s["name"]: HeaderStack(s["name"], s["header_type"], tuple(by_id[i] for i in s["header_ids"])) for s in data.get("header_stacks", [])}
    if len(data["parsers"]) != 1:
        raise ProgramError(f"expected one parser, found {len(data['parsers'])}")
    p = data["parsers"][0]
    parser = Parser(p["name"], p["init_state"], {s["name"]: _parse_state(s) for s in p["parse_states"]})
    pipes = {d["name"]: _pipeline(d) for d in data["pipelines"]}
    actions = {a["id"]: Action(a["id"], a["name"], tuple(ActionParam(r["name"], r["bitwidth"]) for r in a["runtime_data"]), tuple(_primitive(x) for x in a["primitives"])) for a in data["actions"]}
    calcs = {c["name"]: Calculation(c["name"], HashAlgo(c["algo"]), tuple(parse_expr(i) for i in c["input"])) for c in data["calculations"]}
    regs = {r["name"]: RegisterArray(r["name"], r["size"], r["bitwidth"]) for r in data["register_arrays"]}
    ctrs = {c["name"]: CounterArray(c["name"], c["size"], bool(c.get("is_direct"))) for c in data["counter_arrays"]}
    deparser = tuple(data["deparsers"][0]["order"]) if data.get("deparsers") else ()
    return Program(
        name=name,
        header_types=types,
        headers=headers,
        stacks=stacks,
        parser=parser,
        ingress=pipes["ingress"],
        egress=pipes["egress"],
        actions=actions,
        calculations=calcs,
        checksums=tuple(_checksum(c) for c in data.get("checksums", [])),
        registers=regs,
        counters=ctrs,
        errors={e[0]: e[1] for e in data.get("errors", [])},
        deparser=deparser,
    )


def json_path(program: str) -> Path:
    """The committed BMv2 JSON of a program (p4lb, seed, forward)."""
    return artifacts(program)[1]


def load_json(program: str) -> dict[str, Any]:
    """The BMv2 JSON of a program as a dict."""
    data: dict[str, Any] = json.loads(json_path(program).read_text())
    return data


def load(program: str, data: dict[str, Any] | None = None) -> Program:
    """A program by name (p4lb, seed, forward), or from an already loaded (possibly mutated) JSON dict."""
    prog = from_json(data if data is not None else load_json(program), program)
    log.debug("loaded %s: %d actions, %d ingress tables", program, len(prog.actions), len(prog.ingress.tables))
    return prog
