"""The flow hash in Z3: uninterpreted (proofs hold for any hash) or BMv2's crc16 / crc32 bit for bit (real collisions)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce

import z3

from p4lb.model.config import LbConfig
from p4lb.model.crc import crc16, five_tuple_bytes
from p4lb.model.flowtable import TableShape, way_hash

KEY_BITS = 48  # client address (32) + client port (16): the part of a flow key the hashes read (not its service)
TCP = 6


@dataclass(frozen=True)
class Hash:
    """A hash from the 48-bit flow key to a slot index of `bits` bits."""

    bits: int
    real: bool
    cfg: LbConfig
    salt: str = ""  # another service's hash: an uninterpreted function of its own

    def __call__(self, key: z3.ExprRef) -> z3.ExprRef:
        if not self.real:
            return _uf(self.bits, self.salt)(client(key))
        return crc_slot(self.cfg, self.bits, key)


def client(key: z3.ExprRef) -> z3.ExprRef:
    """A flow key's client address and port (its low 48 bits): a service's hash reads them with its VIP fixed."""
    return z3.Extract(KEY_BITS - 1, 0, key) if key.size() > KEY_BITS else key


def _uf(bits: int, salt: str = "") -> z3.FuncDeclRef:
    return z3.Function(f"hash{salt}{bits}", z3.BitVecSort(KEY_BITS), z3.BitVecSort(bits))


def crc_slot(cfg: LbConfig, bits: int, key: z3.ExprRef) -> z3.ExprRef:
    """crc16(src, vip, 6, sport, vport) % 2**bits as XORs of key bits."""
    return z3.Extract(bits - 1, 0, _xor_form(16, lambda *f: crc16(five_tuple_bytes(*f)), cfg, key))


def _xor_form(width: int, crc: Callable[[int, int, int, int, int], int], cfg: LbConfig, key: z3.ExprRef) -> z3.ExprRef:
    """crc(client, VIP, TCP, client port, VIP port) as XORs of the key's bits.

    A CRC over a fixed length is affine over GF(2): crc(a ^ b) = crc(a) ^ crc(b) ^ crc(0)."""
    zero = crc(0, 0, 0, 0, 0)
    terms = [z3.BitVecVal(crc(0, cfg.vip, TCP, 0, cfg.vip_port), width)]
    for i in range(KEY_BITS):
        k = 1 << i
        column = crc(k >> 16, 0, 0, k & 0xFFFF, 0) ^ zero
        if column:
            terms.append(z3.RepeatBitVec(width, z3.Extract(i, i, key)) & z3.BitVecVal(column, width))
    return reduce(lambda a, b: a ^ b, terms)


@dataclass(frozen=True)
class Places:
    """A flow key's candidate places in Z3 (model.flowtable): the one-way crc16 slot, or ways x bucket crc32 places."""

    cfg: LbConfig
    real: bool
    salt: str = ""  # another service's places (its VIP hashes differently): uninterpreted functions of their own

    @property
    def shape(self) -> TableShape:
        """The table's shape."""
        return self.cfg.shape

    @property
    def count(self) -> int:
        """Candidates per flow."""
        return self.shape.ways * self.shape.bucket

    @property
    def bits(self) -> int:
        """Bits of a place index."""
        return self.cfg.flow_table_bits

    def way_bits(self) -> int:
        """Bits of a bucket index within a way (buckets per way must be a power of two)."""
        per_way = self.shape.buckets_per_way
        if per_way & (per_way - 1) or per_way * self.count != 1 << self.bits:
            raise ValueError(f"the encoding needs ways x bucket to divide the table into a power of two of buckets per way, not {self.shape}")
        return per_way.bit_length() - 1

    def bucket_of(self, way: int, key: z3.ExprRef) -> z3.ExprRef:
        """Way `way`'s bucket index of a key: crc32 over the way's field order, or an uninterpreted function."""
        hb = self.way_bits()
        if hb == 0:
            return z3.BitVecVal(0, 1)
        if not self.real:
            return z3.Function(f"hash{self.salt}_w{way}_{hb}", z3.BitVecSort(KEY_BITS), z3.BitVecSort(hb))(client(key))
        return z3.Extract(hb - 1, 0, crc32_way(self.cfg, way, key))

    def at(self, key: z3.ExprRef, c: int) -> z3.ExprRef:
        """Candidate c (way c // bucket, place c % bucket of that way's bucket) of a key."""
        if self.shape.one_way:
            return Hash(self.bits, self.real, self.cfg, self.salt)(key)
        return self._place(c // self.shape.bucket, self.bucket_of(c // self.shape.bucket, key), z3.BitVecVal(c % self.shape.bucket, self.bits))

    def _place(self, way: int | z3.ExprRef, bucket: z3.ExprRef, slot: z3.ExprRef) -> z3.ExprRef:
        """(way * buckets_per_way + bucket) * bucket size + slot, in place bits."""
        per_way, size = self.shape.buckets_per_way, self.shape.bucket
        w = z3.BitVecVal(way, self.bits) if isinstance(way, int) else way
        b = z3.ZeroExt(self.bits - bucket.size(), bucket) if bucket.size() < self.bits else bucket
        return (w * per_way + b) * size + slot

    def all(self, key: z3.ExprRef) -> list[z3.ExprRef]:
        """Every candidate of a key, in the model's order."""
        return [self.at(key, c) for c in range(self.count)]

    def of(self, key: z3.ExprRef, c: z3.ExprRef) -> z3.ExprRef:
        """Candidate number c (an 8-bit term below `count`) of a key: way c / bucket, place c % bucket (as `at`)."""
        if self.shape.one_way:
            return self.at(key, 0)
        size = self.shape.bucket
        way = z3.UDiv(c, size)
        bucket = self.bucket_of(self.shape.ways - 1, key)
        for j in range(self.shape.ways - 2, -1, -1):
            bucket = z3.If(way == j, self.bucket_of(j, key), bucket)
        wide = z3.ZeroExt(self.bits - 8, c) if self.bits > 8 else z3.Extract(self.bits - 1, 0, c)
        return self._place(z3.UDiv(wide, size), bucket, z3.URem(wide, size))


def crc32_way(cfg: LbConfig, way: int, key: z3.ExprRef) -> z3.ExprRef:
    """crc32 of way `way`'s field order (model.flowtable.way_hash) as XORs of key bits."""
    return _xor_form(32, lambda s, d, p, sp, dp: way_hash(way, s, d, p, sp, dp), cfg, key)
