"""Symbolic execution of the executable model: the model's own Python code run on Z3 terms, path by path.

The model is written over plain Python values (ints, tuples, dicts, enums). Here those values get symbolic
stand-ins with the same operators: `SymBV` (a non-negative integer of known width, every operation exact as on
Python ints), `SymInt` (an unbounded integer, for time) and `SymBool`. A Python `if` on a symbolic condition asks
the `Explorer`, which follows one side per run and re-runs the function for the other side while both are
feasible under the path condition (depth-first, like CrossHair or KLEE). The result is every feasible path:
its condition and what the model returned on it. Nothing here knows the model's logic: a change to the model
changes the paths.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import NotImplementedType
from typing import Any, TypeVar

import z3

from p4lb.verify.errors import VerifyError

log = logging.getLogger(__name__)
MAX_PATHS = 4096
T = TypeVar("T")


class SymbolicError(VerifyError):
    """The model did something symbolic execution cannot follow (a symbolic index into a tuple, say)."""


@dataclass
class Explorer:
    """Chooses a side at each symbolic branch; re-runs to cover the other side (depth-first over decisions)."""

    assumptions: list[z3.BoolRef] = field(default_factory=list)
    prefix: list[bool] = field(default_factory=list)
    pending: list[list[bool]] = field(default_factory=list)
    pc: list[z3.BoolRef] = field(default_factory=list)
    decided: dict[int, bool] = field(default_factory=dict)
    obligations: list[tuple[z3.BoolRef, str]] = field(default_factory=list)
    pos: int = 0
    solver: z3.Solver = field(default_factory=z3.Solver)
    hasher: Callable[..., SymBV] | None = None  # the model's flow_index on symbolic fields
    placer: Callable[..., tuple[SymBV, ...]] | None = None  # the model's multi-way candidates on symbolic fields
    asserted: list[z3.BoolRef] = field(default_factory=list)  # the decisions the solver holds, one per scope above the assumptions
    memo: dict[tuple[object, ...], tuple[Any, tuple[z3.AstRef, ...]]] = field(default_factory=dict)  # values built once for every run: memoized()

    def __post_init__(self) -> None:
        self.solver.add(*self.assumptions)  # the base scope, under every path

    def start(self, prefix: list[bool]) -> None:
        """Begin a run that replays the decisions in `prefix`."""
        self.prefix, self.pos, self.pc, self.decided = list(prefix), 0, [], {}

    def feasible(self, cond: z3.BoolRef) -> bool:
        """Is `cond` satisfiable together with the assumptions and the path so far."""
        self._sync()
        self.solver.push()
        self.solver.add(cond)
        r = self.solver.check()
        self.solver.pop()
        if r == z3.unknown:
            raise SymbolicError(f"solver could not decide a branch of the model: {self.solver.reason_unknown()}")
        return bool(r == z3.sat)

    def _sync(self) -> None:
        """The solver's scopes hold the path so far, one decision per scope above the assumptions (kept across runs:
        a run replays its prefix's decisions)."""
        same = 0
        while same < min(len(self.asserted), len(self.pc)) and self.asserted[same].eq(self.pc[same]):
            same += 1
        if len(self.asserted) > same:
            self.solver.pop(len(self.asserted) - same)
            del self.asserted[same:]
        for c in self.pc[same:]:
            self.solver.push()
            self.solver.add(c)
            self.asserted.append(c)

    def decide(self, cond: z3.BoolRef) -> bool:
        """The side this run takes at a branch on `cond`."""
        cond = z3.simplify(cond)
        if z3.is_true(cond) or z3.is_false(cond):
            return bool(z3.is_true(cond))
        key = cond.get_id()
        if key in self.decided:
            return self.decided[key]
        if self.pos < len(self.prefix):
            side = self.prefix[self.pos]
        else:
            can_true = self.feasible(cond)
            can_false = not can_true or self.feasible(z3.Not(cond))  # the path so far is feasible: if cond is not, its negation is
            side = can_true
            if can_true and can_false:
                self.pending.append(self.prefix[: self.pos] + [False])
            self.prefix.append(side)
        self.pos += 1
        self.decided[key] = side
        self.pc.append(cond if side else z3.Not(cond))
        return side

    def memoized(self, tag: str, terms: tuple[z3.AstRef, ...], build: Callable[[], T]) -> T:
        """`build()` the first time (tag, terms) is asked in this exploration, the same value on every later run.
        Z3 terms are hash-consed, so equal ids are equal terms; the memo keeps the terms alive (an id is reused
        only after its term is freed)."""
        key = (tag, *(t.get_id() for t in terms))
        if key not in self.memo:
            self.memo[key] = (build(), terms)
        return self.memo[key][0]  # type: ignore[no-any-return]

    def require(self, cond: z3.BoolRef, why: str) -> None:
        """Record a side condition that must hold on this path (checked by whoever consumes the paths)."""
        self.obligations.append((z3.And(*self.pc, z3.Not(cond)), why))


@dataclass
class Path:
    """One feasible path through the model: its condition and what the model returned."""

    condition: z3.BoolRef
    result: Any


def explore(fn: Callable[[Explorer], Any], assumptions: list[z3.BoolRef] | None = None) -> tuple[list[Path], Explorer]:
    """Run `fn(explorer)` once per feasible path; return the paths (conditions are disjoint and cover all)."""
    ex = Explorer(list(assumptions or []))
    ex.pending = [[]]
    paths: list[Path] = []
    while ex.pending:
        ex.start(ex.pending.pop())
        result = fn(ex)
        paths.append(Path(z3.And(*ex.pc) if ex.pc else z3.BoolVal(True), result))
        if len(paths) > MAX_PATHS:
            raise SymbolicError(f"more than {MAX_PATHS} paths through the model")
    log.debug("explored %d paths", len(paths))
    return paths, ex


# ---- symbolic values -----------------------------------------------------------------------------------


def _const_width(x: int) -> int:
    if x < 0:
        raise SymbolicError(f"negative constant {x} mixed with an unsigned symbolic value")
    return max(1, x.bit_length())


class _Symbolic:
    """What every symbolic value offers the model: the explorer it asks, and model.flowtable's branch-free helpers."""

    ex: Explorer

    @property
    def symbolic_ops(self) -> SymOps:
        """The branch-free selection helpers the model's flowtable uses on symbolic values."""
        return SymOps(self.ex)


class SymBool(_Symbolic):
    """A symbolic truth value; Python's `if`, `and`, `or`, `not` ask the explorer for a side."""

    __hash__ = object.__hash__

    def __init__(self, term: z3.BoolRef, ex: Explorer) -> None:
        self.term, self.ex = term, ex

    def __bool__(self) -> bool:
        return self.ex.decide(self.term)

    def __and__(self, other: object) -> SymBool:
        return SymBool(z3.And(self.term, as_bool(other)), self.ex)

    def __or__(self, other: object) -> SymBool:
        return SymBool(z3.Or(self.term, as_bool(other)), self.ex)

    def __invert__(self) -> SymBool:
        return SymBool(z3.Not(self.term), self.ex)

    def as_bv(self) -> SymBV:
        """0 or 1 in one bit."""
        return SymBV(z3.If(self.term, z3.BitVecVal(1, 1), z3.BitVecVal(0, 1)), self.ex)

    def __add__(self, other: object) -> SymBV:
        """A truth value counts as 0 or 1 (Python's sum over bools)."""
        return self.as_bv() + (int(other) if isinstance(other, bool) else other)

    __radd__ = __add__


def as_bool(x: object) -> z3.BoolRef:
    """A Python or symbolic truth value as a Z3 term."""
    if isinstance(x, SymBool):
        return x.term
    if isinstance(x, bool):
        return z3.BoolVal(x)
    raise SymbolicError(f"not a truth value: {x!r}")


class SymBV(_Symbolic):
    """A non-negative integer held in a bit-vector; every operation is exact (results widen), as on Python ints."""

    __hash__ = object.__hash__

    def __init__(self, term: z3.BitVecRef, ex: Explorer) -> None:
        self.term, self.ex = term, ex

    @functools.cached_property
    def width(self) -> int:
        """Bits of the term."""
        return int(self.term.size())

    def widened(self, width: int) -> z3.BitVecRef:
        """The term zero-extended to `width` bits."""
        return self.term if width <= self.width else z3.ZeroExt(width - self.width, self.term)

    def _pair(self, other: object) -> tuple[z3.BitVecRef, z3.BitVecRef] | None:
        if isinstance(other, SymBV):
            w = max(self.width, other.width)
            return self.widened(w), other.widened(w)
        if isinstance(other, int) and not isinstance(other, bool):
            w = max(self.width, _const_width(other))
            return self.widened(w), z3.BitVecVal(other, w)
        return None

    def _arith(self, other: object, op: Callable[[z3.BitVecRef, z3.BitVecRef], z3.BitVecRef], extra: int = 0) -> SymBV:
        pair = self._pair(other)
        if pair is None:
            return NotImplemented  # type: ignore[no-any-return]  # the operator then tries the reflected one
        a, b = pair
        if extra:
            a, b = z3.ZeroExt(extra, a), z3.ZeroExt(extra, b)
        return SymBV(op(a, b), self.ex)

    def __add__(self, other: object) -> SymBV:
        return self._arith(other, lambda a, b: a + b, extra=1)

    __radd__ = __add__

    def __mul__(self, other: object) -> SymBV:
        if not isinstance(other, int) or isinstance(other, bool) or other < 0:
            return NotImplemented
        return self._arith(other, lambda a, b: a * b, extra=_const_width(other))

    __rmul__ = __mul__

    def __and__(self, other: object) -> SymBV:
        return self._arith(other, lambda a, b: a & b)

    __rand__ = __and__

    def __or__(self, other: object) -> SymBV:
        return self._arith(other, lambda a, b: a | b)

    __ror__ = __or__

    def __xor__(self, other: object) -> SymBV:
        return self._arith(other, lambda a, b: a ^ b)

    __rxor__ = __xor__

    def __lshift__(self, k: int) -> SymBV:
        return SymBV(z3.ZeroExt(k, self.term) << k, self.ex)

    def __rshift__(self, k: int) -> SymBV:
        return SymBV(z3.LShR(self.term, k), self.ex)

    def __mod__(self, m: int) -> SymBV:
        if m > 0 and m & (m - 1) == 0:
            k = m.bit_length() - 1
            return self if k >= self.width else SymBV(z3.Extract(k - 1, 0, self.term), self.ex)
        return self._arith(m, z3.URem)

    def __sub__(self, other: object) -> SymBV:
        raise SymbolicError("subtraction of unsigned symbolic values may go negative: the model must not need it")

    def _cmp(self, other: object, op: Callable[[z3.BitVecRef, z3.BitVecRef], z3.BoolRef]) -> SymBool:
        pair = self._pair(other)
        if pair is None:
            return NotImplemented  # type: ignore[no-any-return]  # the operator then tries the reflected one
        return SymBool(op(*pair), self.ex)

    def __eq__(self, other: object) -> SymBool:  # type: ignore[override]
        return self._cmp(other, lambda a, b: a == b)

    def __ne__(self, other: object) -> SymBool:  # type: ignore[override]
        return self._cmp(other, lambda a, b: a != b)

    def __lt__(self, other: object) -> SymBool:
        return self._cmp(other, z3.ULT)

    def __le__(self, other: object) -> SymBool:
        return self._cmp(other, z3.ULE)

    def __gt__(self, other: object) -> SymBool:
        return self._cmp(other, z3.UGT)

    def __ge__(self, other: object) -> SymBool:
        return self._cmp(other, z3.UGE)

    def __bool__(self) -> bool:
        return self.ex.decide(self.term != 0)

    def __index__(self) -> int:
        raise SymbolicError("a symbolic value was used as a Python index: give the model a symbolic container there")

    def flow_index(self, dst_ip: int, proto: int, src_port: SymBV, dst_port: int, bits: int) -> SymBV:
        """The model's crc16 flow index of a symbolic 5-tuple (see model.crc.flow_index), as the explorer's hasher says."""
        if self.ex.hasher is None:
            raise SymbolicError("the model hashed a symbolic packet but no hasher was given")
        return self.ex.hasher(self, dst_ip, proto, src_port, dst_port, bits)

    def flow_places(self, shape: object, dst_ip: int, src_port: SymBV, dst_port: int) -> tuple[SymBV, ...]:
        """The model's multi-way candidates of a symbolic 5-tuple (see model.flowtable.candidates), as the explorer's placer says."""
        if self.ex.placer is None:
            raise SymbolicError("the model placed a symbolic packet but no placer was given")
        return self.ex.placer(self, shape, dst_ip, src_port, dst_port)

    def fit(self, width: int) -> z3.BitVecRef:
        """The term in exactly `width` bits; requires (on this path) that the value fits."""
        if width >= self.width:
            return self.widened(width)
        self.ex.require(z3.Extract(self.width - 1, width, self.term) == 0, f"a value stored in {width} bits fits")
        return z3.Extract(width - 1, 0, self.term)


class SymInt(_Symbolic):
    """An unbounded integer (the model's microsecond clock)."""

    __hash__ = object.__hash__

    def __init__(self, term: z3.ArithRef, ex: Explorer) -> None:
        self.term, self.ex = term, ex

    @staticmethod
    def _t(other: object) -> z3.ArithRef | None:
        if isinstance(other, SymInt):
            return other.term
        if isinstance(other, int) and not isinstance(other, bool):
            return z3.IntVal(other)
        return None

    def _op(self, other: object, op: Callable[[z3.ArithRef, z3.ArithRef], Any], wrap: Callable[[Any, Explorer], T]) -> T | NotImplementedType:
        t = self._t(other)
        return NotImplemented if t is None else wrap(op(self.term, t), self.ex)

    def __add__(self, other: object) -> SymInt:
        return self._op(other, lambda a, b: a + b, SymInt)

    __radd__ = __add__

    def __sub__(self, other: object) -> SymInt:
        return self._op(other, lambda a, b: a - b, SymInt)

    def __rsub__(self, other: object) -> SymInt:
        return self._op(other, lambda a, b: b - a, SymInt)

    def __eq__(self, other: object) -> SymBool:  # type: ignore[override]
        return self._op(other, lambda a, b: a == b, SymBool)

    def __ne__(self, other: object) -> SymBool:  # type: ignore[override]
        return self._op(other, lambda a, b: a != b, SymBool)

    def __lt__(self, other: object) -> SymBool:
        return self._op(other, lambda a, b: a < b, SymBool)

    def __le__(self, other: object) -> SymBool:
        return self._op(other, lambda a, b: a <= b, SymBool)

    def __gt__(self, other: object) -> SymBool:
        return self._op(other, lambda a, b: a > b, SymBool)

    def __ge__(self, other: object) -> SymBool:
        return self._op(other, lambda a, b: a >= b, SymBool)

    def __bool__(self) -> bool:
        return self.ex.decide(self.term != 0)

    def __index__(self) -> int:
        raise SymbolicError("a symbolic time was used as a Python index")


# ---- branch-free selection (model.flowtable.first / argmin / at / negate) ---------------------------------


@dataclass(frozen=True)
class SymOps:
    """model.flowtable's selection helpers on symbolic values, as If-terms: no path is split."""

    ex: Explorer

    def first(self, flags: list[Any]) -> SymBV:
        """Index of the first true flag (len(flags) if none), an 8-bit term."""
        idx = z3.BitVecVal(len(flags), 8)
        for i in range(len(flags) - 1, -1, -1):
            idx = z3.If(as_bool(flags[i]), z3.BitVecVal(i, 8), idx)
        return SymBV(idx, self.ex)

    def argmin(self, values: list[Any]) -> SymBV:
        """Index of the leftmost smallest value, an 8-bit term (a strictly smaller later value wins)."""
        w = max(_bv_term(v, 1).size() for v in values)
        best, idx = _bv_term(values[0], w), z3.BitVecVal(0, 8)
        for i in range(1, len(values)):
            v = _bv_term(values[i], w)
            better = z3.ULT(v, best)
            best, idx = z3.If(better, v, best), z3.If(better, z3.BitVecVal(i, 8), idx)
        return SymBV(idx, self.ex)

    def at(self, items: list[Any], i: Any) -> Any:
        """items[i] for a symbolic i: fields of dataclasses selected one by one."""
        if dataclasses.is_dataclass(items[0]) and not isinstance(items[0], type):
            return dataclasses.replace(items[0], **{f.name: self.at([getattr(x, f.name) for x in items], i) for f in dataclasses.fields(items[0])})
        idx = i.term if isinstance(i, SymBV) else z3.BitVecVal(int(i), 8)
        idx = z3.ZeroExt(8 - idx.size(), idx) if idx.size() < 8 else idx
        if all(isinstance(x, SymBool | bool) for x in items):
            return SymBool(self._select([as_bool(x) for x in items], idx), self.ex)
        if any(isinstance(x, SymInt) for x in items):
            terms = [x.term if isinstance(x, SymInt) else z3.IntVal(int(x)) for x in items]
            return SymInt(self._select(terms, idx), self.ex)
        w = max(_bv_term(x, 1).size() for x in items)
        return SymBV(self._select([_bv_term(x, w) for x in items], idx), self.ex)

    def _select(self, terms: list[z3.ExprRef], idx: z3.BitVecRef) -> z3.ExprRef:
        """_select, built once per exploration for the same terms and index."""
        return self.ex.memoized("select", (idx, *terms), lambda: _select(terms, idx))

    def negate(self, flag: Any) -> SymBool:
        """not flag, as a term."""
        return SymBool(z3.Not(as_bool(flag)), self.ex)


def _select(terms: list[z3.ExprRef], idx: z3.BitVecRef) -> z3.ExprRef:
    """terms[idx] as If-terms (the last term where idx is out of range)."""
    out = terms[-1]
    for k in range(len(terms) - 2, -1, -1):
        out = z3.If(idx == k, terms[k], out)
    return out


def _bv_term(v: Any, width: int) -> z3.BitVecRef:
    """A symbolic or constant non-negative integer (or truth value) as a bit-vector of at least `width` bits."""
    if isinstance(v, SymBool):
        v = v.as_bv()
    if isinstance(v, SymBV):
        return v.widened(width)
    return z3.BitVecVal(int(v), max(width, _const_width(int(v))))


# ---- symbolic containers (the model's registers, tables and counters) ------------------------------------


class SymArray:
    """A register or counter array as a Z3 array, read with `.get(i, default)` and updated with `| {i: v}`."""

    def __init__(self, arr: z3.ArrayRef, ex: Explorer, wrap: Callable[[z3.ExprRef], Any]) -> None:
        self.arr, self.ex, self.wrap = arr, ex, wrap

    def get(self, index: Any, default: Any = None) -> Any:
        """The cell at `index` (arrays have every cell: `default` is what a fresh cell holds, set at init)."""
        return self.wrap(self.arr[index_term(index, self.arr.domain())])

    def __getitem__(self, index: Any) -> Any:
        return self.get(index)

    def __or__(self, updates: dict[Any, Any]) -> SymArray:
        arr = self.arr
        for k, v in updates.items():
            arr = z3.Store(arr, index_term(k, arr.domain()), value_term(v, arr.range()))
        return SymArray(arr, self.ex, self.wrap)

    def __iter__(self) -> Iterator[Any]:
        raise SymbolicError("the model iterated over a symbolic register array")


class SymPerVersion:
    """A table keyed by (version, position) with a Z3 array per version."""

    def __init__(self, arrays: tuple[z3.ArrayRef, z3.ArrayRef], ex: Explorer, wrap: Callable[[z3.ExprRef], Any]) -> None:
        self.arrays, self.ex, self.wrap = arrays, ex, wrap

    def get(self, key: tuple[Any, Any], default: Any = None) -> Any:
        """The entry at (version, position)."""
        v, i = key
        a0, a1 = (a[index_term(i, a.domain())] for a in self.arrays)
        return self.wrap(z3.If(version_term(v), a1, a0))

    def __or__(self, updates: dict[Any, Any]) -> SymPerVersion:
        a0, a1 = self.arrays
        for (v, i), val in updates.items():
            sel = version_term(v)
            a0 = z3.If(sel, a0, z3.Store(a0, index_term(i, a0.domain()), value_term(val, a0.range())))
            a1 = z3.If(sel, z3.Store(a1, index_term(i, a1.domain()), value_term(val, a1.range())), a1)
        return SymPerVersion((a0, a1), self.ex, self.wrap)


def version_term(v: Any) -> z3.BoolRef:
    """Version 1 as a Z3 truth value."""
    if isinstance(v, SymBV):
        return v.term != 0
    return z3.BoolVal(bool(v))


def index_term(i: Any, sort: z3.SortRef) -> z3.ExprRef:
    """An index (int or symbolic) as a term of an array's domain sort."""
    return value_term(i, sort)


def value_term(v: Any, sort: z3.SortRef) -> z3.ExprRef:
    """A Python or symbolic value as a term of `sort` (bit-vectors must fit; ints for Int)."""
    if sort.kind() == z3.Z3_INT_SORT:
        if isinstance(v, SymInt):
            return v.term
        if isinstance(v, int):
            return z3.IntVal(int(v))
        raise SymbolicError(f"cannot store {v!r} in an integer array")
    if sort.kind() == z3.Z3_BV_SORT:
        w = sort.size()
        if isinstance(v, SymBV):
            return v.fit(w)
        if isinstance(v, int):
            if not 0 <= int(v) < 1 << w:
                raise SymbolicError(f"constant {int(v)} does not fit in {w} bits")
            return z3.BitVecVal(int(v), w)
        raise SymbolicError(f"cannot store {v!r} in a {w}-bit array")
    if sort.kind() == z3.Z3_BOOL_SORT:
        return as_bool(v) if not isinstance(v, int) else z3.BoolVal(bool(v))
    raise SymbolicError(f"unsupported sort {sort}")


def merge(paths: list[Path], pick: Callable[[Any], z3.ExprRef]) -> z3.ExprRef:
    """One term equal to `pick(result)` on whichever path is taken (paths are disjoint and cover everything)."""
    term = pick(paths[-1].result)
    for p in reversed(paths[:-1]):
        term = z3.If(p.condition, pick(p.result), term)
    return term
