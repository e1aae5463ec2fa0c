"""The hash BMv2 computes for `HashAlgorithm.crc16`: CRC-16/ARC (poly 0x8005 reflected, init 0, no final xor)."""

from __future__ import annotations

import ipaddress


def crc16(data: bytes) -> int:
    """CRC-16/ARC of `data`, bit for bit what BMv2's crc16 returns."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def five_tuple_bytes(src_ip: int, dst_ip: int, proto: int, src_port: int, dst_port: int) -> bytes:
    """The 13-byte field list {srcAddr, dstAddr, protocol, srcPort, dstPort} as BMv2 packs it."""
    return (
        src_ip.to_bytes(4, "big")
        + dst_ip.to_bytes(4, "big")
        + proto.to_bytes(1, "big")
        + src_port.to_bytes(2, "big")
        + dst_port.to_bytes(2, "big")
    )


def flow_index(src_ip: int, dst_ip: int, proto: int, src_port: int, dst_port: int, bits: int) -> int:
    """hash(crc16, base 0, max 2**bits) of the 5-tuple: BMv2 returns base + (crc % max)."""
    symbolic = getattr(src_ip, "flow_index", None)  # a symbolic address hashes itself (verify.symbolic)
    if symbolic is not None:
        return symbolic(dst_ip, proto, src_port, dst_port, bits)  # type: ignore[no-any-return]
    return crc16(five_tuple_bytes(src_ip, dst_ip, proto, src_port, dst_port)) % (1 << bits)


def ip(text: str) -> int:
    """Dotted quad to int."""
    return int(ipaddress.IPv4Address(text))


def ip_str(value: int) -> str:
    """Int to dotted quad."""
    return str(ipaddress.IPv4Address(value))
