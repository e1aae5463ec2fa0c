"""Which seed register contents packets can produce, and how: a breadth-first search on the executable seed model.

The seed's registers (flowlet_select, myselect, mymax) have no write path but its own ingress, so a replay on BMv2
gets to a counterexample's registers by table writes (set_max, set_status1..4) and packets. The search runs over
(flowlet_select[cell], myselect, mymax) from all 0 (a freshly pushed pipeline); a step is one packet (a SYN or
not, of a key hashing to the cell or to another cell) under chosen set_max / set_status entries. Which other cell
is used does not matter: a SYN overwrites its own cell's value before reading it, and a non-SYN changes only
myselect and mymax.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace

from p4lb.model.config import LbConfig, default_config
from p4lb.model.crc import ip
from p4lb.model.packet import ACK, SYN, Packet
from p4lb.model.seed import SEED_INDEX_BITS, SeedState, seed_index, seed_packet

SeedKey = tuple[int, int, int]  # (flowlet_select[cell], myselect, mymax)
STATUSES = ((0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (1, 1, 1, 1))
START: SeedKey = (0, 0, 0)


@dataclass(frozen=True)
class SeedStep:
    """One step: the set_max / set_status entries, then a packet (SYN or not, at the cell or elsewhere)."""

    set_max: int
    status: tuple[int, int, int, int]
    syn: bool
    at_cell: bool


def _steps() -> Iterator[SeedStep]:
    """Every step worth trying (a non-SYN does the same at any cell and under any status)."""
    for set_max in range(8):
        yield SeedStep(set_max, STATUSES[0], False, True)
        for status in STATUSES:
            for at_cell in (True, False):
                yield SeedStep(set_max, status, True, at_cell)


def _after(cfg: LbConfig, cell_pkt: Packet, off_pkt: Packet, at: SeedKey, step: SeedStep) -> SeedKey:
    """The registers after one step, on the executable model."""
    cell = seed_index(cfg, cell_pkt)
    st = SeedState({cell: at[0]}, at[1], at[2], step.set_max, step.status)
    pkt = replace(cell_pkt if step.at_cell else off_pkt, flags=SYN if step.syn else ACK)
    after, _ = seed_packet(cfg, st, pkt)
    return after.flowlet_select.get(cell, 0), after.myselect, after.mymax


def _search(cfg: LbConfig, cell_pkt: Packet, off_pkt: Packet, target: SeedKey | None, start: SeedKey = START) -> dict[SeedKey, tuple[SeedKey, SeedStep] | None]:
    """Breadth-first from `start` until `target` (None: everything reachable): each key's predecessor and step."""
    prev: dict[SeedKey, tuple[SeedKey, SeedStep] | None] = {start: None}
    todo = deque([start])
    while todo and target not in prev:
        at = todo.popleft()
        for step in _steps():
            nxt = _after(cfg, cell_pkt, off_pkt, at, step)
            if nxt not in prev:
                prev[nxt] = (at, step)
                todo.append(nxt)
    return prev


def other_cell(cfg: LbConfig, pkt: Packet) -> Packet:
    """A packet of another key whose flowlet_select cell is not pkt's."""
    for d in range(1, 1 << 16):
        other = replace(pkt, src_port=(pkt.src_port + d) & 0xFFFF)
        if seed_index(cfg, other) != seed_index(cfg, pkt):
            return other
    raise AssertionError("unreachable: crc16 maps one client's ports onto every cell")


def seed_plan(cfg: LbConfig, cell_pkt: Packet, target: SeedKey, start: SeedKey = START) -> list[SeedStep] | None:
    """The shortest steps from `start` (default: a fresh pipeline) to `target` (None if no packets get there)."""
    off = other_cell(cfg, cell_pkt)
    prev = _search(cfg, cell_pkt, off, target, start)
    if target not in prev:
        return None
    out = []
    link = prev[target]
    while link is not None:
        at, step = link
        out.append(step)
        link = prev[at]
    return out[::-1]


@functools.cache
def seed_reachable() -> frozenset[SeedKey]:
    """Every (flowlet_select[cell], myselect, mymax) packets can produce (the same for every cell)."""
    cfg = default_config(4, flow_table_bits=SEED_INDEX_BITS, flow_ways=1, flow_bucket=1)
    pkt = Packet(ip("10.0.1.1"), 1000, 0)
    return frozenset(_search(cfg, pkt, other_cell(cfg, pkt), None))
