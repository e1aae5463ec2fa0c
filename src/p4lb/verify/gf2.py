"""GF(2)-affine normal forms of bit-vector terms: a decision procedure for equality of XOR networks.

CRCs over a fixed-length input are affine over GF(2): every output bit is the XOR of a set of input bits and a
constant. `affine_bits` computes that set exactly, by structural recursion over the term, for the operations
that keep a term affine (numerals, variables, extract, concat, xor, not, repeat, zero-extension, and and/or
where every bit has at most one non-constant operand). An affine function has exactly one such form (the
constant is f(0), the coefficient of input bit i is f(e_i) xor f(0)), so two terms are equal for every
assignment of their variables iff their forms are equal bit for bit: a proof without a solver, and a
disproof when they differ. A term using any other operation raises `NotAffine` (the caller asks a solver).
"""

from __future__ import annotations

import z3

Form = int  # bit 0: the constant; bit 1 + i: variable bit i (an index `affine_bits` assigns)


class NotAffine(Exception):
    """The term uses an operation outside the affine fragment (e.g. an addition, or an and of two variables)."""


class Normalizer:
    """Normal forms of terms over shared variable-bit indices (memoized by term; terms kept alive, as Z3 reuses freed ids)."""

    def __init__(self) -> None:
        self.index: dict[tuple[str, int, int], int] = {}
        self._memo: dict[int, tuple[z3.ExprRef, list[Form]]] = {}

    def bits(self, e: z3.ExprRef) -> list[Form]:
        """The affine form of each bit of the bit-vector term e, least significant first."""
        hit = self._memo.get(e.get_id())
        if hit is not None:
            return hit[1]
        out = self._forms(e)
        self._memo[e.get_id()] = (e, out)
        return out

    def _variable(self, name: str, size: int, bit: int) -> Form:
        i = self.index.setdefault((name, size, bit), len(self.index))
        return 2 << i

    def _forms(self, e: z3.ExprRef) -> list[Form]:
        if not z3.is_bv(e):
            raise NotAffine(e)
        if z3.is_bv_value(e):
            v = e.as_long()
            return [(v >> i) & 1 for i in range(e.size())]
        if z3.is_const(e) and e.decl().kind() == z3.Z3_OP_UNINTERPRETED:
            name = e.decl().name()
            return [self._variable(name, e.size(), i) for i in range(e.size())]
        op = e.decl().kind()
        args = [self.bits(a) for a in e.children()]
        if op == z3.Z3_OP_EXTRACT:
            hi, lo = e.params()
            return args[0][lo : hi + 1]
        if op == z3.Z3_OP_CONCAT:  # first argument: the most significant bits
            return [b for a in reversed(args) for b in a]
        if op == z3.Z3_OP_BXOR:
            out = list(args[0])
            for a in args[1:]:
                out = [x ^ y for x, y in zip(out, a, strict=True)]
            return out
        if op == z3.Z3_OP_BNOT:
            return [x ^ 1 for x in args[0]]
        if op in (z3.Z3_OP_BAND, z3.Z3_OP_BOR):
            absorbing = 0 if op == z3.Z3_OP_BAND else 1  # x & 0 = 0, x | 1 = 1; the other constant is neutral
            out = []
            for column in zip(*args, strict=True):
                if absorbing in column:
                    out.append(absorbing)
                    continue
                varying = [b for b in column if b > 1]
                if len(varying) > 1:  # a product of two non-constant bits: not affine in general
                    raise NotAffine(e)
                out.append(varying[0] if varying else 1 - absorbing)
            return out
        if op == z3.Z3_OP_REPEAT:
            return args[0] * int(e.params()[0])
        if op == z3.Z3_OP_ZERO_EXT:
            return args[0] + [0] * int(e.params()[0])
        raise NotAffine(e)


def differing_bits(a: z3.BitVecRef, b: z3.BitVecRef, norm: Normalizer | None = None) -> list[int]:
    """The bits where the two terms (same width) differ as functions: [] proves a == b for every assignment.

    Raises NotAffine if either term is outside the affine fragment."""
    if a.size() != b.size():
        raise ValueError(f"widths differ: {a.size()} and {b.size()}")
    n = norm or Normalizer()
    fa, fb = n.bits(a), n.bits(b)
    return [i for i, (x, y) in enumerate(zip(fa, fb, strict=True)) if x != y]
