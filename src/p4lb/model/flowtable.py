"""The flow table's shape: the places a flow may sit in (its candidates) and the one a new flow takes.

Today's table is one way of single places (crc16 of the 5-tuple). The multi-way design: `ways` independent hashes,
each choosing a bucket of `bucket` consecutive places in its own part of the table; a new flow takes a place in the
least-loaded of its buckets (d-left, leftmost on ties) and is refused only when every candidate holds an open flow.
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from p4lb.model.crc import five_tuple_bytes, flow_index
from p4lb.model.errors import ConfigError

TCP = 6
T = TypeVar("T")
# Way j hashes the fields in its own order (CRC is affine: a salt per way would only XOR a constant). Any two of
# these orders give bucket indices of full GF(2) rank over the client's 48 key bits for 10..18 index bits
# (capacity.hash_rank shows it): two flows that share a bucket in one way are no likelier to share one in another.
WAY_ORDERS = ((0, 1, 2, 3, 4), (1, 0, 2, 3, 4), (1, 2, 0, 3, 4), (1, 2, 3, 0, 4), (1, 2, 3, 4, 0), (2, 0, 1, 3, 4), (3, 1, 0, 2, 4), (3, 1, 4, 0, 2))


class Policy(enum.StrEnum):
    """Which takeable candidate a new flow gets."""

    FIRST = "first"  # the first takeable place in candidate order (greedy)
    LEAST_LOADED = "least-loaded"  # d-left: the bucket with the fewest open flows, leftmost on ties


@dataclass(frozen=True)
class TableShape:
    """ways x bucket candidates per flow in a table of 2**bits places."""

    ways: int = 1
    bucket: int = 1
    bits: int = 16
    policy: Policy = Policy.FIRST

    def __post_init__(self) -> None:
        if self.ways < 1 or self.ways > len(WAY_ORDERS):
            raise ConfigError("flow_ways", self.ways, f"use 1..{len(WAY_ORDERS)}")
        if self.bucket < 1 or self.bucket & (self.bucket - 1):
            raise ConfigError("flow_bucket", self.bucket, "use a power of two")
        if self.buckets_per_way < 1:
            raise ConfigError("flow_table_bits", self.bits, "make the table hold at least one bucket per way")

    @property
    def places(self) -> int:
        """Places in the table."""
        return 1 << self.bits

    @property
    def buckets_per_way(self) -> int:
        """Buckets each way's hash chooses from."""
        return self.places // (self.ways * self.bucket)

    @property
    def one_way(self) -> bool:
        """Today's table: one crc16 place per flow."""
        return self.ways == 1 and self.bucket == 1

    def label(self) -> str:
        """Short name for tables."""
        return "one-way" if self.one_way else f"{self.ways}x{self.bucket} {self.policy}"


def way_hash(way: int, src_ip: int, dst_ip: int, proto: int, src_port: int, dst_port: int) -> int:
    """crc32 (BMv2's HashAlgorithm.crc32, zlib's CRC-32) of the 5-tuple's fields in way `way`'s order."""
    parts = _field_bytes(five_tuple_bytes(src_ip, dst_ip, proto, src_port, dst_port))
    return zlib.crc32(b"".join(parts[i] for i in WAY_ORDERS[way]))


def _field_bytes(data: bytes) -> tuple[bytes, ...]:
    """The 13-byte 5-tuple split back into its five fields."""
    return data[0:4], data[4:8], data[8:9], data[9:11], data[11:13]


def candidates(shape: TableShape, src_ip: int, dst_ip: int, src_port: int, dst_port: int) -> tuple[int, ...]:
    """The places a flow may sit in, way by way (one place for the one-way table)."""
    symbolic = getattr(src_ip, "flow_places", None)  # a symbolic address hashes itself (verify.symbolic)
    if symbolic is not None and not shape.one_way:
        return symbolic(shape, dst_ip, src_port, dst_port)  # type: ignore[no-any-return]
    if shape.one_way:
        return (flow_index(src_ip, dst_ip, TCP, src_port, dst_port, shape.bits),)
    return tuple(p for j in range(shape.ways) for p in bucket_places(shape, j, way_hash(j, src_ip, dst_ip, TCP, src_port, dst_port)))


def bucket_places(shape: TableShape, way: int, h: int) -> range:
    """The places of the bucket that hash value `h` picks in way `way`."""
    base = (way * shape.buckets_per_way + h % shape.buckets_per_way) * shape.bucket
    return range(base, base + shape.bucket)


def choose(shape: TableShape, held: Sequence[bool]) -> int:
    """The candidate (an index into `held`, True where another open flow sits) a new flow takes; len(held): refused.

    Built from `first`, `argmin` and `at`, which a symbolic run (verify.symbolic) evaluates without branching:
    one path per outcome, not one per combination of places."""
    if shape.policy is Policy.FIRST:
        return first([negate(h) for h in held])
    b = shape.bucket
    way = argmin([sum(held[j * b : (j + 1) * b]) for j in range(shape.ways)])
    i = first([negate(at([held[j * b + k] for j in range(shape.ways)], way)) for k in range(b)])
    if i == b:
        return len(held)
    return way * b + i


# ---- selection helpers: plain Python here; a symbolic value (verify.symbolic) supplies branch-free versions ----


def _ops(values: Sequence[object]) -> Any:
    """The symbolic operations of the first symbolic value among `values`, if any."""
    for v in values:
        ops = getattr(v, "symbolic_ops", None)
        if ops is not None:
            return ops
    return None


def first(flags: Sequence[bool]) -> int:
    """The index of the first true flag; len(flags) if none is."""
    ops = _ops(flags)
    if ops is not None:
        return ops.first(flags)  # type: ignore[no-any-return]
    return next((i for i, f in enumerate(flags) if f), len(flags))


def argmin(values: Sequence[int]) -> int:
    """The index of the smallest value, the leftmost on ties."""
    ops = _ops(values)
    if ops is not None:
        return ops.argmin(values)  # type: ignore[no-any-return]
    return min(range(len(values)), key=values.__getitem__)


def at(items: Sequence[T], i: int) -> T:
    """items[i] (a symbolic i selects among the items)."""
    ops = _ops([i])
    if ops is not None:
        return ops.at(items, i)  # type: ignore[no-any-return]
    return items[i]


def negate(flag: bool) -> bool:
    """not flag."""
    ops = _ops([flag])
    if ops is not None:
        return ops.negate(flag)  # type: ignore[no-any-return]
    return not flag
