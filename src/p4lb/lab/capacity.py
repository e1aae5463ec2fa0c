"""Flow-table capacity on BMv2: refusals against occupancy on a mid-size build, checked against the model.

The p4lb_mid build (-DFLOW_BITS=10: 1,024 places, 4 ways of 32 buckets of 8 places) is filled with random clients'
SYNs to each occupancy level and held there with churn, as `p4lb.model.capacity` does on the model: every admitted
SYN is followed by a FIN of a random open flow (its place turns CLOSING, which a new flow may take). The executable
model steps through the very same packets; after each level the switch's lb_drops[FLOW_TABLE_FULL] and
backend_open must equal the model's, so the rates printed are the switch's. Beside them: the model's one-way table
of the same size (crc16 into one place), driven the same way from the same seed.

    python -m p4lb.lab.capacity [--syns N] [--seed S]
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from dataclasses import dataclass, field

from p4lb.lab.bench import _setup
from p4lb.lab.driver import tcp_frame
from p4lb.lab.lab import Lab, Launch
from p4lb.lab.toolchain import missing_switch
from p4lb.model.capacity import Level
from p4lb.model.config import P4LB_MID_TABLE_BITS, LbConfig, default_config
from p4lb.model.crc import ip
from p4lb.model.design import Design
from p4lb.model.p4lb import OPEN_PER_SERVICE
from p4lb.model.packet import ACK, FIN, SYN, DropReason, Packet
from p4lb.model.pool import Pool

log = logging.getLogger(__name__)

LEVELS = (0.50, 0.80, 0.90, 0.95, 0.99)
IDLE_TIMEOUT_US = 3_600_000_000  # no flow goes idle during a run, on the switch's clock or the model's
CLIENTS = ip("10.1.0.0")  # random clients in 10.1.0.0/16, ports 1024..65535
FULL = DropReason.FLOW_TABLE_FULL


@dataclass
class Run:
    """The model's p4lb on one table, fed random new clients' SYNs and FINs of its open flows; what it was fed."""

    cfg: LbConfig
    seed: int
    design: Design = field(init=False)
    state: object = field(init=False)
    rng: random.Random = field(init=False)
    open: list[Packet] = field(default_factory=list)
    used: set[int] = field(default_factory=set)
    fed: list[Packet] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.design = Design("p4lb", self.cfg)
        self.state = self.design.initial(Pool.initial(self.cfg.n))
        self.rng = random.Random(self.seed)

    def _client(self) -> tuple[int, int]:
        """A client address and port never used before in this run."""
        while True:
            src, port = CLIENTS + self.rng.randrange(1, 1 << 16), self.rng.randrange(1024, 1 << 16)
            if (key := src << 16 | port) not in self.used:
                self.used.add(key)
                return src, port

    def syn(self) -> bool:
        """A new client's SYN: True if admitted."""
        pkt = Packet(*self._client(), SYN, service=self.cfg.service)
        self.state, out = self.design.packet(self.state, pkt)
        self.fed.append(pkt)
        if out.admitted:
            self.open.append(pkt)
        elif out.reason is not FULL:
            raise RuntimeError(f"{pkt} dropped as {out.reason.name}, not refused for a full table")
        return out.admitted

    def fin(self) -> None:
        """A random open flow's FIN: its place becomes takeable."""
        i = self.rng.randrange(len(self.open))
        pkt, self.open[i] = self.open[i], self.open[-1]
        self.open.pop()
        fin = Packet(pkt.src_ip, pkt.src_port, FIN | ACK, service=pkt.service)
        self.state, _ = self.design.packet(self.state, fin)
        self.fed.append(fin)

    def level(self, occupancy: float, syns: int) -> Level:
        """Fill to `occupancy` of the places (refusals while filling not counted), then offer `syns` SYNs with churn."""
        target = int(occupancy * self.cfg.shape.places)
        tries = 0
        while len(self.open) < target and tries < 20 * self.cfg.shape.places:
            self.syn()
            tries += 1
        refused = 0
        for _ in range(syns):
            if self.syn():
                self.fin()
            else:
                refused += 1
        return Level(len(self.open) / self.cfg.shape.places, syns, refused)

    def refusals(self) -> int:
        """lb_drops[FLOW_TABLE_FULL] in the model's state."""
        return int(self.state.lb_drops[FULL])  # type: ignore[attr-defined]

    def backend_open(self) -> dict[int, int]:
        """The service's backend_open in the model's state by backend id (non-zero cells service*256 + id)."""
        svc = self.cfg.service
        return {cell % OPEN_PER_SERVICE: c for cell, c in self.state.backend_open.items() if c and cell // OPEN_PER_SERVICE == svc}  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Spot:
    """Per level: the one-way model's figure, the multi-way model's, and whether the switch counted the same."""

    occupancy: float
    one_way: Level
    multi_way: Level
    switch_agrees: bool
    switch_refused: int


def mid_config(ways: int = 4, bucket: int = 8) -> LbConfig:
    """The mid-size table (p4lb_mid) with 4 backends and no idle expiry during a run."""
    return default_config(4, flow_table_bits=P4LB_MID_TABLE_BITS, flow_ways=ways, flow_bucket=bucket, idle_timeout_us=IDLE_TIMEOUT_US)


def spot_check(syns: int = 2000, seed: int = 1, levels: tuple[float, ...] = LEVELS, launch: Launch | None = None) -> list[Spot]:
    """Every level on BMv2 (p4lb_mid) beside the model, and the one-way model of the same size."""
    cfg = mid_config()
    one_way = Run(mid_config(1, 1), seed)
    run = Run(cfg, seed)
    out: list[Spot] = []
    with Lab("p4lb", cfg, launch=launch or Launch()) as lab:
        _setup(lab)
        for occupancy in levels:
            start = len(run.fed)
            level = run.level(occupancy, syns)
            lab.send_all([tcp_frame(cfg, p) for p in run.fed[start:]])
            view = lab.switch.read()
            got = view.lb_drops.get(FULL.name.lower(), 0)
            agrees = got == run.refusals() and view.backend_open == run.backend_open()
            if not agrees:
                log.error("switch: %d refused, backend_open %s; model: %d, %s", got, view.backend_open, run.refusals(), run.backend_open())
            out.append(Spot(occupancy, one_way.level(occupancy, syns), level, agrees, got))
    return out


def report(spots: list[Spot], seconds: float) -> str:
    """The table: occupancy, refused SYNs per table, and the switch's agreement."""
    lines = [
        f"Flow-table capacity on BMv2 (p4lb_mid: 2^{P4LB_MID_TABLE_BITS} places, 4 ways x 8) beside the model's one-way table of the same size",
        f"{'occupancy':>9}  {'SYNs':>6}  {'one-way refused':>16}  {'4 x 8 refused':>14}  {'switch = model':>14}",
    ]
    for s in spots:
        ok = "yes" if s.switch_agrees else f"NO ({s.switch_refused} counted)"
        short = f" (at {s.one_way.occupancy:.0%})" if s.one_way.occupancy < s.occupancy - 0.005 else ""
        lines.append(f"{s.occupancy:>8.0%}  {s.multi_way.offered:>6}  {s.one_way.rate:>15.2%}{short}  {s.multi_way.rate:>13.2%}  {ok:>14}")
    lines.append(f"(each admitted SYN followed by a random open flow's FIN; {seconds:.1f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the spot check and print it; 1 if the switch counted otherwise than the model, 0 if BMv2 is missing (said)."""
    ap = argparse.ArgumentParser(prog="python -m p4lb.lab.capacity", description=__doc__.split("\n\n")[0])
    ap.add_argument("--syns", type=int, default=2000, help="SYNs offered at each level (default 2000)")
    ap.add_argument("--seed", type=int, default=1, help="random clients' seed (default 1)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    reason = missing_switch()
    if reason:
        print(f"capacity on BMv2 skipped: {reason}")
        return 0
    start = time.monotonic()
    spots = spot_check(args.syns, args.seed)
    print(report(spots, time.monotonic() - start))
    return 0 if all(s.switch_agrees for s in spots) else 1


if __name__ == "__main__":
    sys.exit(main())

