"""Instructions per packet through BMv2 for p4lb.p4, seed.p4, forward.p4, probe_floor.p4 and probe_swar.p4: callgrind over a fixed batch.

Packets/s on a shared 2-core VM moves by tens of percent between runs; the number of instructions the switch
executes for the same batch through the same build does not, so a change to a program can be judged by it.

How: simple_switch_grpc runs under `valgrind --tool=callgrind --instr-atstart=no` in the benchmark's lab (same
hosts, same entries as `python -m p4lb.lab.bench`). Start-up, the pipeline push and the entries run
uninstrumented (valgrind without callgrind's counting: the P4Runtime deadlines hold). Then `callgrind_control
--instr=on` and a warm-up of each kind, back to back and then one at a time (lazy binding, first-use allocations
and BMv2's pool of packet header vectors out of the way), and windows delimited by `callgrind_control --zero` and
`--dump`: the dump's summary is Ir (instructions executed) by every thread of the switch in the window. Frames go
one at a time (the next once the previous one has come out of a port), so nothing is lost to a full queue. An
idle window measures the background (select() timeouts, gRPC) per second; it is subtracted. Each kind's batch is
sent in WINDOWS equal windows: the figure is the median window's Ir per packet (a one-off in one window does not
move it), the spread (max - min over the median) shows it is per packet, and the batch mean keeps the one-offs.
"pipeline" is the inclusive Ir of BMv2's parser, match-action pipelines and deparser (callgrind_annotate): the
rest is the switch around them (receive, metadata reset, queues, transmit).

    python -m p4lb.lab.instructions [--count N] [--bin PATH]     (PATH also from $P4LB_BMV2_BIN)
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from p4lb.lab.bench import _setup, _syn_packets
from p4lb.lab.driver import tcp_frame
from p4lb.lab.lab import Lab, Launch
from p4lb.lab.toolchain import missing_switch
from p4lb.model.config import LbConfig, default_config
from p4lb.model.crc import ip
from p4lb.model.packet import ACK, PSH, SYN, Packet

log = logging.getLogger(__name__)

BIN_ENV = "P4LB_BMV2_BIN"
DEFAULT_BIN = "simple_switch_grpc"
KINDS = ("new-flow SYN", "established")
PROGRAMS = ("forward", "seed", "p4lb", "probe_floor", "probe_swar")  # probe_*: forward.p4 + a 32-candidate probe, place by place / packed
FLOWS = 16
WARMUP = 20
WINDOWS = 4
IDLE_S = 1.0
START_TIMEOUT_S = 180.0  # simple_switch_grpc under valgrind takes 10-60 s to listen
RX_TIMEOUT_S = 5.0  # one frame through the switch under callgrind: milliseconds; 5 s means it was dropped
WINDOW_LIMIT_S = 60.0  # the rest of a window's frames count as lost after this (a program dropping them all)
CTL_TIMEOUT_S = 60.0
PIPELINE_FNS = ("bm::Parser::parse(", "bm::Pipeline::apply(", "bm::Deparser::deparse(")
PACKET_OUTGOING = 4


@dataclass(frozen=True)
class Build:
    """One simple_switch_grpc binary: where it is, its --version, and how it was compiled."""

    path: str
    version: str
    flags: str

    def label(self) -> str:
        """Path, version and flags in one line (every printed figure names it)."""
        return f"{self.path} {self.version} ({self.flags})"


def chosen_binary(arg: str | None = None) -> str:
    """The BMv2 binary: the argument, else $P4LB_BMV2_BIN, else simple_switch_grpc on PATH."""
    return arg or os.environ.get(BIN_ENV) or DEFAULT_BIN


def build_of(binary: str) -> Build:
    """Describe a binary: resolved path, --version, -O level from its debug info, logging from its bm/config.h."""
    path = shutil.which(binary) or binary
    res = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60, check=False)
    version = (res.stdout or res.stderr).strip().splitlines()[-1:] or ["version unknown"]
    return Build(path, version[0], ", ".join([_opt_level(Path(path)), *_config_flags(Path(path))]))


def _opt_level(path: Path) -> str:
    """The -O flag GCC recorded in the binary's DWARF producer string ('-O?' without debug info)."""
    found = re.search(rb"GNU C\+\+\d+ [^\x00]*? (-O\w*)", path.read_bytes())
    return found.group(1).decode() if found else "-O?"


def _config_flags(path: Path) -> list[str]:
    """Logging macros and event logger on/off, from the bm/config.h installed in the binary's prefix."""
    conf = path.resolve().parent.parent / "include" / "bm" / "config.h"
    if not conf.is_file():
        return ["logging macros unknown"]
    text = conf.read_text()

    def on(macro: str) -> str:
        return "on" if re.search(rf"^#define {macro}\b", text, re.M) else "off"

    return [f"logging macros {on('BM_LOG_DEBUG_ON')}", f"event logger {on('BM_ELOG_ON')}"]


def missing(binary: str, valgrind: bool = True) -> str | None:
    """Why this binary cannot be measured here (BMv2, the lab, or valgrind if asked for, missing), or None."""
    if shutil.which(binary) is None:
        return f"{binary} is not an executable BMv2 binary (set ${BIN_ENV} or --bin)"
    reason = missing_switch()
    if reason and not (binary != DEFAULT_BIN and reason.startswith(f"{DEFAULT_BIN} ")):
        return reason
    for tool in ("valgrind", "callgrind_control", "vgdb") if valgrind else ():
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH: install valgrind (callgrind) to count instructions"
    return None


@dataclass(frozen=True)
class Window:
    """One collection window: Ir of the whole switch process, Ir inside the P4 pipeline, seconds, frames."""

    ir: int
    pipeline_ir: int
    seconds: float
    sent: int
    lost: int


class Callgrind:
    """Zero and dump the counters of one callgrind run (callgrind_control reaches it through vgdb)."""

    def __init__(self, pid: int, out_file: Path) -> None:
        self.pid, self.out_file, self.dumps = pid, out_file, 0

    def ctl(self, *args: str) -> None:
        """Run callgrind_control on our process; RuntimeError with its output if it fails."""
        res = subprocess.run(["callgrind_control", *args, str(self.pid)], capture_output=True, text=True, timeout=CTL_TIMEOUT_S, check=False)
        if res.returncode != 0 or "Error" in res.stdout:
            raise RuntimeError(f"callgrind_control {' '.join(args)} failed: {(res.stdout + res.stderr).strip()[-500:]}")

    def window(self, action: Callable[[], tuple[int, int]]) -> Window:
        """Zero the counters, run action (-> frames sent, lost), dump: what the switch executed meanwhile."""
        self.ctl("--zero")
        t0 = time.monotonic()
        sent, lost = action()
        seconds = time.monotonic() - t0
        self.dumps += 1
        self.ctl(f"--dump=window{self.dumps}")
        path = self.out_file.with_name(f"{self.out_file.name}.{self.dumps}")
        if not wait_for(lambda: "\ntotals:" in _text(path), 30.0):
            raise RuntimeError(f"callgrind wrote no dump {path}")
        return Window(dump_ir(path), pipeline_ir(path), seconds, sent, lost)


def wait_for(pred: Callable[[], bool], timeout: float) -> bool:
    """Poll pred() every 50 ms until true or timeout."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def _text(path: Path) -> str:
    """A file's text, '' while it does not exist."""
    return path.read_text() if path.exists() else ""


def dump_ir(path: Path) -> int:
    """Total Ir of a callgrind dump (its `summary:` line)."""
    found = re.search(r"^summary:\s+(\d+)", path.read_text(), re.M)
    if not found:
        raise RuntimeError(f"no summary line in {path}")
    return int(found.group(1))


def pipeline_ir(path: Path) -> int:
    """Inclusive Ir of BMv2's parser, pipelines and deparser in a dump (summed over the per-file pieces that
    inlining splits a function into; none of them calls another)."""
    res = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", "--auto=no", str(path)], capture_output=True, text=True, timeout=120, check=False)
    return sum(int(line.split()[0].replace(",", "")) for line in res.stdout.splitlines() if any(f":{fn}" in line for fn in PIPELINE_FNS))


class Traffic:
    """Frames into the client port, one at a time: each waits until a frame comes out of any port."""

    def __init__(self, lab: Lab) -> None:
        self.client = lab.hosts["client"].open_socket()
        self.socks = [h.open_socket() for h in lab.hosts.values()]
        lab.topo.drain_all()

    def _out(self, timeout: float) -> int:
        """Frames the switch emitted (on any port) within timeout; 0 if none."""
        ready, _, _ = select.select(self.socks, [], [], timeout)
        n = 0
        for s in ready:
            n += _drain(s)
        return n

    def send(self, frames: list[bytes]) -> tuple[int, int]:
        """Send frames one by one for at most WINDOW_LIMIT_S; (sent, lost: no frame out within RX_TIMEOUT_S, or
        not sent in time)."""
        sent = lost = 0
        end = time.monotonic() + WINDOW_LIMIT_S
        for f in frames:
            if time.monotonic() > end:
                break
            self.client.send(f)
            sent += 1
            lost += not self._out(RX_TIMEOUT_S)
        self._out(0.05)  # stragglers (a frame can come out of two ports)
        return sent, lost + len(frames) - sent

    def burst(self, frames: list[bytes]) -> None:
        """Send frames back to back, then wait for as many out (BMv2 grows its pool of packet header vectors to
        what is in flight: done here, a one-at-a-time window never pays for a new one)."""
        for f in frames:
            self.client.send(f)
        out, end = 0, time.monotonic() + RX_TIMEOUT_S
        while out < len(frames) and time.monotonic() < end:
            out += self._out(0.1)


def _drain(s: socket.socket) -> int:
    """Frames received on a non-blocking packet socket (our own outgoing ones skipped)."""
    n = 0
    while True:
        try:
            _, addr = s.recvfrom(65535)
        except BlockingIOError:
            return n
        n += addr[2] != PACKET_OUTGOING


@dataclass(frozen=True)
class Count:
    """Instructions per packet for one program and kind of traffic (background subtracted)."""

    program: str
    kind: str
    per_packet: float  # the median window's
    spread_pct: float  # (max - min) / median over the windows
    batch_mean: float  # the whole batch's
    pipeline: float  # the median window's parser + pipelines + deparser
    background_pct: float
    lost: int


def per_packet(w: Window, idle: Window) -> float:
    """Ir per frame sent in a window, less the idle rate over the window's length."""
    return (w.ir - idle.ir / idle.seconds * w.seconds) / max(w.sent, 1)


def summary(program: str, kind: str, windows: list[Window], idle: Window) -> Count:
    """Median, spread and mean of the windows' Ir per packet; the background's share; frames lost."""
    each = [per_packet(w, idle) for w in windows]
    mid = statistics.median(each)
    whole = Window(sum(w.ir for w in windows), 0, sum(w.seconds for w in windows), sum(w.sent for w in windows), sum(w.lost for w in windows))
    pipeline = statistics.median(w.pipeline_ir / max(w.sent, 1) for w in windows)
    bg = 100 * idle.ir / idle.seconds * whole.seconds / max(whole.ir, 1)
    return Count(program, kind, mid, 100 * (max(each) - min(each)) / mid, per_packet(whole, idle), pipeline, bg, whole.lost)


def traffic(cfg: LbConfig, count: int) -> dict[str, tuple[list[bytes], list[bytes]]]:
    """Per kind: (frames to set up and warm up, the count frames measured)."""
    flows = [Packet(ip("10.2.0.1"), 2000 + i, SYN, service=cfg.service) for i in range(FLOWS)]
    syns = [tcp_frame(cfg, p) for p in _syn_packets(WARMUP + count, cfg, flows)]
    est = [tcp_frame(cfg, Packet(p.src_ip, p.src_port, PSH | ACK, service=p.service), pktlen=128) for p in flows]
    return {
        "new-flow SYN": (syns[:WARMUP], syns[WARMUP:]),
        "established": ([tcp_frame(cfg, p) for p in flows] + est, [est[i % FLOWS] for i in range(count)]),
    }


def _idle() -> tuple[int, int]:
    """Send nothing for IDLE_S."""
    time.sleep(IDLE_S)
    return 0, 0


def valgrind(out_file: Path) -> tuple[str, ...]:
    """The wrapper: callgrind, nothing counted until callgrind_control turns instrumentation on."""
    return ("valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_file}", "--vgdb=yes")


def measure(program: str, count: int, launch: Launch | None = None, kinds: tuple[str, ...] = KINDS) -> list[Count]:
    """Instructions per packet of each kind of traffic through one program, on launch's binary under callgrind."""
    cfg = default_config(4)
    frames = traffic(cfg, count)
    out: list[Count] = []
    with tempfile.TemporaryDirectory(prefix="p4lb-callgrind-") as tmp:
        out_file = Path(tmp) / "callgrind.out"
        base = launch or Launch()
        run = replace(base, wrapper=valgrind(out_file), start_timeout_s=max(base.start_timeout_s, START_TIMEOUT_S))
        with Lab(program, cfg, launch=run) as lab:
            _setup(lab)
            cg = Callgrind(lab.bmv2.proc.pid, out_file)
            cg.ctl("--instr=on")
            tx = Traffic(lab)
            for kind in kinds:
                tx.burst(frames[kind][0])
                tx.send(frames[kind][0])
            idle = cg.window(_idle)
            for kind in kinds:
                measured = frames[kind][1]
                size = max(1, -(-len(measured) // WINDOWS))
                out.append(summary(program, kind, [cg.window(partial(tx.send, measured[i : i + size])) for i in range(0, len(measured), size)], idle))
                log.info("%s %s: %.0f Ir/packet", program, kind, out[-1].per_packet)
    return out


def ratio(counts: list[Count], a: str, b: str, kind: str, pipeline: bool = False) -> float:
    """Ir/packet of program a over program b for one kind of traffic (total, or the pipeline's share)."""
    by = {(c.program, c.kind): c.pipeline if pipeline else c.per_packet for c in counts}
    return by[a, kind] / by[b, kind]


def main(argv: list[str] | None = None) -> int:
    """Print instructions per packet for each program and kind (or why they cannot be counted here)."""
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--count", type=int, default=200, help="frames per measured batch of each kind (default 200)")
    ap.add_argument("--bin", help=f"simple_switch_grpc to measure (default ${BIN_ENV}, else the one on PATH)")
    args = ap.parse_args(argv)
    console = Console(width=max(120, shutil.get_terminal_size((120, 24)).columns))  # figures must not be cut
    binary = chosen_binary(args.bin)
    reason = missing(binary)
    if reason:
        console.print(f"instruction counts skipped: {reason}")
        return 0
    build = build_of(binary)
    try:
        counts = [c for program in PROGRAMS for c in measure(program, args.count, Launch(binary=build.path))]
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        console.print(f"instruction counts failed ({build.label()}): {exc}")
        return 1
    console.print(f"BMv2 build: {build.label()}", markup=False)
    t = Table(title=f"Instructions per packet (callgrind Ir, whole switch, background subtracted), {args.count} frames per kind in {WINDOWS} windows")
    for col in ("program", "traffic", "Ir/packet", "spread", "batch mean", "pipeline", "bg", "lost"):
        t.add_column(col)
    for c in counts:
        t.add_row(c.program, c.kind, f"{c.per_packet:,.0f}", f"{c.spread_pct:.1f}%", f"{c.batch_mean:,.0f}", f"{c.pipeline:,.0f}", f"{c.background_pct:.2f}%", str(c.lost))
    console.print(t)
    for kind in KINDS:
        r = ratio(counts, "p4lb", "forward", kind), ratio(counts, "p4lb", "forward", kind, True), ratio(counts, "p4lb", "seed", kind)
        console.print(f"{kind}: p4lb/forward = {r[0]:.2f}x (pipeline {r[1]:.2f}x), p4lb/seed = {r[2]:.2f}x; build {build.path}", markup=False)
    for kind in KINDS:
        per_place, packed = ratio(counts, "probe_floor", "forward", kind), ratio(counts, "probe_swar", "forward", kind)
        console.print(f"{kind}: a 32-candidate probe alone = {per_place:.2f}x forward place by place (probe_floor.p4: one read per candidate, p4lb.p4 makes three), {packed:.2f}x on packed buckets (probe_swar.p4)", markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
