"""GF(2) normal forms (verify.gf2): equal forms mean equal functions, different forms a real difference."""

from __future__ import annotations

import random

import pytest
import z3

from p4lb.verify import gf2
from p4lb.verify.bmv2.symbolic import crc16_sym, crc32_ieee, crc32_sym


def test_crc32_forms_match_two_builds_and_evaluate_right() -> None:
    a, b = z3.BitVec("a", 32), z3.BitVec("b", 16)
    whole = crc32_sym([z3.Concat(a, b)])
    split = crc32_sym([a, b])
    assert gf2.differing_bits(whole, split) == []
    rng = random.Random(1)
    for _ in range(20):  # the normal form is the function: evaluate it against zlib's definition
        va, vb = rng.getrandbits(32), rng.getrandbits(16)
        forms = gf2.Normalizer()
        bits = forms.bits(whole)
        assign = {i: (va >> bit) & 1 if name == "a" else (vb >> bit) & 1 for (name, _size, bit), i in forms.index.items()}
        value = sum((((f & 1) ^ sum((f >> (1 + i)) & v for i, v in assign.items())) & 1) << k for k, f in enumerate(bits))
        assert value == crc32_ieee((va << 16 | vb).to_bytes(6, "big"))


def test_a_different_term_is_caught_bit_by_bit() -> None:
    a = z3.BitVec("a", 16)
    good, bad = crc16_sym([a]), crc16_sym([a]) ^ z3.Concat(z3.BitVecVal(0, 12), z3.Extract(3, 3, a), z3.BitVecVal(0, 3))
    assert gf2.differing_bits(good, bad) == [3]
    s = z3.Solver()
    s.add(z3.Extract(3, 3, good) != z3.Extract(3, 3, bad))
    assert s.check() == z3.sat


def test_outside_the_affine_fragment() -> None:
    a, b = z3.BitVec("a", 8), z3.BitVec("b", 8)
    with pytest.raises(gf2.NotAffine):
        gf2.differing_bits(a + b, b + a)
    with pytest.raises(gf2.NotAffine):
        gf2.differing_bits(a & b, b & a)
    assert gf2.differing_bits((a & 0x0F) | 0xF0, a | 0xF0) == []
    assert gf2.differing_bits(~(a ^ 0xFF), a) == []
    assert gf2.differing_bits(a | 0x01, a) == [0]  # and / or with constants stay affine
