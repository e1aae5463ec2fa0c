"""The two designs behind one interface, so runs, traces and checks treat them alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p4lb.model.config import SEED_BACKENDS, LbConfig, default_config
from p4lb.model.errors import ConfigError
from p4lb.model.ops import Write
from p4lb.model.p4lb import P4LB, P4lbState, SlotState, Variant, check_plan, entries_at, find, flow_places, p4lb_packet, p4lb_plan, p4lb_write
from p4lb.model.packet import DropReason, Outcome, Packet, key_packet
from p4lb.model.pool import Pool
from p4lb.model.seed import SeedState, seed_index, seed_packet, seed_plan, seed_write

DESIGNS = ("seed", "p4lb")


@dataclass(frozen=True)
class Design:
    """A design (seed, p4lb or a p4lb mutant) on a configuration."""

    name: str
    cfg: LbConfig
    variant: Variant = P4LB

    @property
    def is_seed(self) -> bool:
        """True for the seed's algorithm."""
        return self.name == "seed"

    def initial(self, pool: Pool) -> Any:
        """The switch state after deployment with `pool`."""
        st: Any
        if self.is_seed:
            st = SeedState()
            for w in seed_plan(st, Pool.initial(SEED_BACKENDS), pool):
                st = seed_write(st, w)
            return st
        st = P4lbState()
        for w in p4lb_plan(self.variant, st, pool):
            st = p4lb_write(st, w)
        return st

    def packet(self, st: Any, pkt: Packet) -> tuple[Any, Outcome]:
        """Run one packet through the ingress."""
        if self.is_seed:
            return seed_packet(self.cfg, st, pkt)
        return p4lb_packet(self.cfg, self.variant, st, pkt)

    def plan(self, st: Any, before: Pool, after: Pool) -> list[Write]:
        """The exact writes the controller makes to go from `before` to `after`."""
        if self.is_seed:
            return seed_plan(st, before, after)
        plan = p4lb_plan(self.variant, st, after)
        if self.variant == P4LB:
            check_plan(st, plan, after)
        return plan

    def write(self, st: Any, w: Write) -> Any:
        """Apply one write."""
        return seed_write(st, w) if self.is_seed else p4lb_write(st, w)

    def places(self, pkt: Packet) -> tuple[int, ...]:
        """The per-flow state indices a packet's flow may use (the seed: its one index)."""
        return (seed_index(self.cfg, pkt),) if self.is_seed else flow_places(self.cfg, pkt)

    def record(self, st: Any, key: int) -> Any:
        """The per-flow state that decides where a flow's packets go (p4lb: the place holding the key, if any)."""
        pkt = key_packet(key)
        if self.is_seed:
            return st.record(seed_index(self.cfg, pkt))
        places = flow_places(self.cfg, pkt)
        c = find(entries_at(st, places), key)
        return None if c == len(places) else st.flows[places[c]]

    def occupants(self, st: Any, pkt: Packet) -> tuple[int | None, ...] | None:
        """The flow key stored in each of the packet's places (None where free); None for the seed, which stores none."""
        if self.is_seed:
            return None
        return tuple(None if e.state == SlotState.FREE else e.key for e in entries_at(st, flow_places(self.cfg, pkt)))

    def drops(self, st: Any, reason: DropReason) -> int:
        """The lb_drops counter at `reason` (the seed has no counters: always 0)."""
        return 0 if self.is_seed else st.lb_drops[reason]

    def now(self, st: Any, pkt: Packet) -> int:
        """The time the switch stamps on this packet."""
        return pkt.time_us if self.is_seed else max(pkt.time_us, st.now)


def make_design(name: str, n: int = SEED_BACKENDS, variant: Variant = P4LB, **cfg: Any) -> Design:
    """seed (always 4 backends) or p4lb with n backends."""
    if name not in DESIGNS:
        raise ConfigError("design", name, f"use one of {', '.join(DESIGNS)}")
    if name == "seed":
        return Design("seed", default_config(SEED_BACKENDS, **({"flow_table_bits": 13, "flow_ways": 1, "flow_bucket": 1} | cfg)))  # the seed: one crc16 cell per flow
    return Design("p4lb", default_config(n, **cfg), variant)
