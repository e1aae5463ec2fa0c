"""Switch benchmark: packets/s and latency through BMv2 for p4lb.p4, seed.p4 and forward.p4, side by side.

For each program, the same lab (client, 4 backends, sink) and the same frames: new-flow SYNs (a fresh 5-tuple
each) and packets of 16 established flows. Throughput keeps at most WINDOW frames in flight (no input-queue
loss); latency sends one frame at a time (send -> frame seen at the backend). Also the P4Runtime side: a full
deploy's time and single-write operations per second. Bounded: COUNT frames per case, TIME_LIMIT_S each.

    python -m p4lb.lab.bench [--count N] [--bin PATH]   (PATH also from $P4LB_BMV2_BIN; the build used is printed)
    python -m p4lb.lab.bench --status                    (only `p4lb status` at 2^20 flow places: counts and scan)

Instructions per packet, the figure without packet-rate noise: python -m p4lb.lab.instructions.
"""

from __future__ import annotations

import argparse
import select
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from p4lb.controller.controller import Controller
from p4lb.controller.settings import HealthCheck, Settings, SwitchTarget
from p4lb.lab.driver import install_seed, tcp_frame
from p4lb.lab.lab import Lab, Launch
from p4lb.model.config import LbConfig, default_config
from p4lb.model.crc import ip
from p4lb.model.design import Design
from p4lb.model.ops import Target, Write
from p4lb.model.packet import ACK, PSH, SYN, Packet
from p4lb.model.pool import Pool

WINDOW = 32
TIME_LIMIT_S = 20.0
FLOWS = 16


@dataclass(frozen=True)
class Figures:
    """One program, one kind of traffic."""

    program: str
    kind: str
    pps: float
    lat_median_us: float
    lat_p99_us: float
    lost: int


def _syn_packets(count: int, cfg: LbConfig | None = None, before: Sequence[Packet] = ()) -> list[Packet]:
    """SYNs of distinct flows that p4lb admits one after another (after `before`'s): each takes a candidate place
    of its own as the model's step says (model.p4lb: none is refused for a full table), on cfg's table."""
    cfg = cfg or default_config(4)
    if count + len(before) > cfg.shape.places:
        raise ValueError(f"{count} more flows after {len(before)} do not fit in {cfg.shape.places} flow places")
    design = Design("p4lb", cfg)
    st = design.initial(Pool.initial(cfg.n))
    for p in before:
        st, _ = design.packet(st, p)
    out: list[Packet] = []
    src, port = ip("10.1.0.1"), 1024
    while len(out) < count:
        p = Packet(src, port, SYN, service=cfg.service)
        after, outcome = design.packet(st, p)
        if outcome.admitted:
            st = after
            out.append(p)
        port += 1
        if port > 65535:
            src, port = src + 1, 1024
    return out


def _setup(lab: Lab) -> None:
    """Entries: the controller's deploy for p4lb, the seed's cmd.txt for seed, one route for forward."""
    cfg = lab.cfg
    if lab.program == "p4lb":
        lab.switch.install_backends(cfg)
        from p4lb.model.p4lb import P4LB, P4lbState, p4lb_plan  # noqa: PLC0415

        for w in p4lb_plan(P4LB, P4lbState(), Pool.initial(cfg.n)):
            lab.switch.write(w)
    elif lab.program == "seed":
        install_seed(lab, Pool.initial(cfg.n))
    else:
        b = cfg.backends[0]
        lab.rt.upsert("forward", {"hdr.ipv4.dstAddr": (cfg.vip, 32)}, "set_nhop", {"mac": b.mac, "port": b.port})
        lab.rt.upsert("forward", {"hdr.ipv4.dstAddr": (cfg.client_net, cfg.client_prefix)}, "set_nhop", {"mac": cfg.client_mac, "port": cfg.client_port})


def _backend_socks(lab: Lab) -> list[socket.socket]:
    return [h.open_socket() for name, h in lab.hosts.items() if name.startswith("b")]


def _count_rx(socks: list[socket.socket], timeout: float) -> int:
    """Frames received on the backends' sockets within timeout (0 if none)."""
    ready, _, _ = select.select(socks, [], [], timeout)
    n = 0
    for s in ready:
        while True:
            try:
                _, addr = s.recvfrom(65535)
            except BlockingIOError:
                break
            if addr[2] != 4:  # not our own outgoing frame
                n += 1
    return n


def throughput(lab: Lab, frames: list[bytes]) -> tuple[float, int]:
    """Frames/s through the switch with at most WINDOW in flight; and how many never arrived."""
    socks = _backend_socks(lab)
    client = lab.hosts["client"].open_socket()
    lab.topo.drain_all()
    sent = got = lost = 0
    start = last_rx = time.monotonic()
    while got + lost < len(frames) and time.monotonic() < start + TIME_LIMIT_S:
        while sent < len(frames) and sent - got - lost < WINDOW:
            client.send(frames[sent])
            sent += 1
        n = _count_rx(socks, 0.1)
        if n:
            got += n
            last_rx = time.monotonic()
        else:  # nothing for 100 ms: what is in flight is lost
            lost = sent - got
    return got / max(last_rx - start, 1e-9), len(frames) - got


def latency(lab: Lab, frames: list[bytes]) -> list[float]:
    """Microseconds from send to arrival, one frame at a time."""
    socks = _backend_socks(lab)
    client = lab.hosts["client"].open_socket()
    lab.topo.drain_all()
    out = []
    for f in frames:
        t0 = time.perf_counter()
        client.send(f)
        if _count_rx(socks, 1.0):
            out.append((time.perf_counter() - t0) * 1e6)
    return out


def measure(program: str, count: int, launch: Launch | None = None) -> list[Figures]:
    """Both kinds of traffic through one program."""
    cfg = default_config(4)
    flows = [Packet(ip("10.2.0.1"), 2000 + i, SYN, service=cfg.service) for i in range(FLOWS)]
    syns = [tcp_frame(cfg, p) for p in _syn_packets(count + 200, cfg, flows)]
    est = [tcp_frame(cfg, Packet(p.src_ip, p.src_port, PSH | ACK, service=p.service), pktlen=128) for p in flows]
    out = []
    with Lab(program, cfg, launch=launch or Launch()) as lab:
        _setup(lab)
        for p in flows:
            lab.send(tcp_frame(cfg, p))
        for kind, frames, lat_frames in (("new-flow SYN", syns[:count], syns[count:]), ("established", [est[i % FLOWS] for i in range(count)], est * 12)):
            pps, lost = throughput(lab, frames)
            lat = latency(lab, lat_frames[:200])
            q = statistics.quantiles(lat, n=100) if len(lat) > 2 else [0.0] * 99
            out.append(Figures(program, kind, pps, statistics.median(lat) if lat else 0.0, q[98], lost))
    return out


def controller_figures(writes: int = 300, launch: Launch | None = None) -> dict[str, float]:
    """A full p4lb deploy's time (pipeline push + entries + group) and single P4Runtime writes per second."""
    cfg = default_config(64)
    with Lab("p4lb", cfg, push=False, launch=launch or Launch()) as lab:
        from p4lb.lab.toolchain import artifacts  # noqa: PLC0415

        p4info, bmv2_json = artifacts("p4lb")
        settings = Settings(cfg, HealthCheck(), SwitchTarget(grpc=lab.bmv2.grpc, p4info=str(p4info), bmv2_json=str(bmv2_json)), cfg.n, ())
        from p4lb.controller.switch import P4RuntimeSwitch  # noqa: PLC0415

        sw = P4RuntimeSwitch(lab.bmv2.grpc, 0, (0, 1), str(p4info), str(bmv2_json), cfg)
        try:
            t0 = time.perf_counter()
            Controller(settings, sw, grace_s=0).deploy()
            deploy_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i in range(writes):
                sw.write(Write(Target.RR_MEMBER, (1, i % 64), 1 + i % 64))
            ops = writes / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            for _ in range(20):
                sw.read()
            read_ms = (time.perf_counter() - t0) / 20 * 1000
            t0 = time.perf_counter()
            sw.open_flows()
            scan_s = time.perf_counter() - t0
        finally:
            sw.close()
    places = f"{1 << cfg.flow_table_bits:,} places"
    return {"deploy_s (N=64)": deploy_s, "table writes/s": ops, "state read-back ms": read_ms, f"open-flow scan s ({places})": scan_s}


BENCHED = ("forward", "seed", "p4lb", "probe_floor", "probe_swar")  # in turn each round; probe_*: forward.p4 + a 32-candidate probe, place by place / packed
STATUS_BUDGET_S = 2.0  # `p4lb status` at 2^20 flow places (the target)


def status_figures(flows: int = 500, rounds: int = 20, launch: Launch | None = None) -> dict[str, float]:
    """`p4lb status` on BMv2 at the default build's flow places with `flows` open flows: Controller.status() (the
    backend_open counts and the counters; median and max of `rounds`) and status(scan=True) once (every place read)."""
    cfg = default_config(4)
    with Lab("p4lb", cfg, launch=launch or Launch()) as lab:
        from p4lb.lab.toolchain import artifacts  # noqa: PLC0415

        _setup(lab)
        for p in _syn_packets(flows):
            lab.send(tcp_frame(cfg, p))
        p4info, bmv2_json = artifacts("p4lb")
        settings = Settings(cfg, HealthCheck(), SwitchTarget(grpc=lab.bmv2.grpc, p4info=str(p4info), bmv2_json=str(bmv2_json)), cfg.n, ())
        ctl = Controller(settings, lab.switch, grace_s=0)
        times, rows = [], ctl.status()
        for _ in range(rounds):
            t0 = time.perf_counter()
            rows = ctl.status()
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        scan = ctl.status(scan=True)
        scan_s = time.perf_counter() - t0
        if [r.open_flows for r in rows] != [r.open_flows for r in scan]:
            raise RuntimeError(f"backend_open {[r.open_flows for r in rows]} differs from the scan's {[r.open_flows for r in scan]}")
    places = f"{1 << cfg.flow_table_bits:,} places, {sum(r.open_flows for r in rows)} open flows"
    return {f"status s ({places}; median of {rounds})": statistics.median(times), "status s (max)": max(times), f"status --scan s ({places})": scan_s}


def failover_figures(rounds: int = 5, launch: Launch | None = None) -> list[float]:
    """Milliseconds from killing a backend's server to the health loop's committed fail, on BMv2 (e2e lab)."""
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from p4lb.lab.e2e import E2E  # noqa: PLC0415
    from p4lb.lab.hosts import wait_until  # noqa: PLC0415

    out = []
    with Lab("p4lb", default_config(4), silent=False, push=False, launch=launch or Launch()) as lab, tempfile.TemporaryDirectory() as tmp:
        lab.reset()
        env = E2E(lab, Path(tmp))

        def more_than(op: str, n: int) -> Callable[[], bool]:
            return lambda: env.transitions(op) > n

        try:
            for b in range(1, 5):
                env.start_server(b)
            env.cli("deploy")
            env.start_loop()
            for i in range(rounds):
                time.sleep(0.5)
                t0 = time.monotonic()
                env.stop_server(3)
                if not wait_until(more_than("fail 3", i), 10.0, 0.002):
                    break
                out.append((time.monotonic() - t0) * 1000)
                env.start_server(3)
                if not wait_until(more_than("heal 3", i), 10.0, 0.01):
                    break
        finally:
            env.close()
    return out


def median_figures(runs: list[Figures]) -> Figures:
    """Per column, the median over rounds of one program and kind of traffic (lost: the worst round)."""
    med = statistics.median
    return Figures(runs[0].program, runs[0].kind, med(f.pps for f in runs), med(f.lat_median_us for f in runs), med(f.lat_p99_us for f in runs), max(f.lost for f in runs))


def main(argv: list[str] | None = None) -> int:
    """Print the figures (or why they cannot be measured here)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000, help="frames per throughput case (default 2000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of forward, seed, p4lb, probe_floor, probe_swar in turn; the median round is shown (default 3)")
    ap.add_argument("--bin", help="simple_switch_grpc to run (default $P4LB_BMV2_BIN, else the one on PATH; e.g. an optimised build)")
    ap.add_argument("--status", action="store_true", help="only time `p4lb status` at 2^20 flow places (backend_open counts, and the full scan)")
    args = ap.parse_args(argv)
    console = Console()
    from p4lb.lab.instructions import build_of, chosen_binary, missing  # noqa: PLC0415  (it imports this module)

    reason = missing(chosen_binary(args.bin), valgrind=False)
    if reason:
        console.print(f"switch benchmark skipped: {reason}")
        return 0
    build = build_of(chosen_binary(args.bin))
    launch = Launch(binary=build.path)
    console.print(f"BMv2 build: {build.label()}", markup=False)
    for k, v in status_figures(launch=launch).items():
        console.print(f"p4lb status: {k} = {v:,.3f}" + (f" (budget {STATUS_BUDGET_S:g} s)" if k.startswith("status s (") else ""), markup=False, soft_wrap=True)
    if args.status:
        return 0
    rounds = [[f for program in BENCHED for f in measure(program, args.count, launch)] for _ in range(max(1, args.rounds))]
    figures = [median_figures([r[i] for r in rounds]) for i in range(len(rounds[0]))]
    t = Table(title=f"BMv2 simple_switch_grpc, {args.count} frames per case, window {WINDOW}, median of {len(rounds)} interleaved rounds")
    for col in ("program", "traffic", "packets/s", "latency median us", "latency p99 us", "lost"):
        t.add_column(col)
    for f in figures:
        t.add_row(f.program, f.kind, f"{f.pps:,.0f}", f"{f.lat_median_us:,.0f}", f"{f.lat_p99_us:,.0f}", str(f.lost))
    console.print(t)
    by = {(f.program, f.kind): f.pps for f in figures}
    for kind in ("new-flow SYN", "established"):
        console.print(f"{kind}: p4lb/seed = {by['p4lb', kind] / by['seed', kind]:.2f}x, p4lb/forward = {by['p4lb', kind] / by['forward', kind]:.2f}x (target p4lb >= 0.8x seed); a 32-candidate probe alone = {by['probe_floor', kind] / by['forward', kind]:.2f}x forward place by place (probe_floor.p4), {by['probe_swar', kind] / by['forward', kind]:.2f}x packed (probe_swar.p4)")
    for k, v in controller_figures(launch=launch).items():
        console.print(f"P4Runtime: {k} = {v:,.2f}")
    fo = failover_figures(launch=launch)
    if fo:
        console.print(f"failover on BMv2 (kill -> fail committed, 100 ms interval, fall=2): median {statistics.median(fo):.0f} ms, max {max(fo):.0f} ms over {len(fo)} kills (target 200 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
