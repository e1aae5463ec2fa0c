"""The model's hash is BMv2's crc16, and the Z3 crc16 is the same function."""

import random

import z3

from p4lb.model.config import default_config
from p4lb.model.crc import crc16, flow_index
from p4lb.verify.hashing import crc_slot


def test_crc16_is_crc16_arc():
    assert crc16(b"123456789") == 0xBB3D


def test_z3_crc_matches_python():
    cfg = default_config(4)
    rng = random.Random(7)
    for bits in (13, 16):
        for _ in range(30):
            sip, sport = rng.getrandbits(32), rng.getrandbits(16)
            got = z3.simplify(crc_slot(cfg, bits, z3.BitVecVal((sip << 16) | sport, 48))).as_long()
            assert got == flow_index(sip, cfg.vip, 6, sport, cfg.vip_port, bits)
