"""The flow hash in Z3: uninterpreted (proofs hold for any hash) or BMv2's crc16 bit for bit (real collisions)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

import z3

from p4lb.model.config import LbConfig
from p4lb.model.crc import crc16, five_tuple_bytes

KEY_BITS = 48  # client address (32) + client port (16)
TCP = 6


@dataclass(frozen=True)
class Hash:
    """A hash from the 48-bit flow key to a slot index of `bits` bits."""

    bits: int
    real: bool
    cfg: LbConfig

    def __call__(self, key: z3.ExprRef) -> z3.ExprRef:
        if not self.real:
            return _uf(self.bits)(key)
        return crc_slot(self.cfg, self.bits, key)


def _uf(bits: int) -> z3.FuncDeclRef:
    return z3.Function(f"hash{bits}", z3.BitVecSort(KEY_BITS), z3.BitVecSort(bits))


def _crc_of_key(cfg: LbConfig, key: int) -> int:
    src_ip, src_port = key >> 16, key & 0xFFFF
    return crc16(five_tuple_bytes(src_ip, 0, 0, src_port, 0))


def crc_slot(cfg: LbConfig, bits: int, key: z3.ExprRef) -> z3.ExprRef:
    """crc16(src, vip, 6, sport, vport) % 2**bits as XORs of key bits: CRC-16/ARC is linear over GF(2)."""
    const = crc16(five_tuple_bytes(0, cfg.vip, TCP, 0, cfg.vip_port))
    terms = [z3.BitVecVal(const, 16)]
    for i in range(KEY_BITS):
        column = _crc_of_key(cfg, 1 << i)
        if column:
            terms.append(z3.RepeatBitVec(16, z3.Extract(i, i, key)) & z3.BitVecVal(column, 16))
    return z3.Extract(bits - 1, 0, reduce(lambda a, b: a ^ b, terms))
