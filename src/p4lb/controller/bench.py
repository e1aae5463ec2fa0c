"""`python -m p4lb.controller.bench`: failover times, simultaneous failures and a bounded soak of the health loop.

1. Failover (kept from before): backends are HTTP servers on 127.0.0.2..5 (loopback), the switch is the
   executable model; p4lb's loop next to the seed's (ping every 1 s with a 1 s timeout, fail on the first miss).
2. Simultaneous failures: 128 backends as TCP listeners on 127.0.1.1..128 (one port), the health loop at a
   100 ms interval, fall 2, against the fake P4Runtime switch over gRPC (the real P4rt client path); 1, 10 and
   100 backends are killed at the same instant and the time to the commit (the vip write the fake switch
   receives) that removes them all is measured, with the commits counted and the committing round profiled.
3. Soak: the same 128 backends flapping at random (fixed seed, bounded count) for --soak-seconds (default 120,
   as `nox -s bench` runs it; at most 600); RSS growth, rounds, overruns, missed and false failovers. Missed or
   false failovers make the exit status 1.

Every address is on 127.0.0.0/8; the backends' data-plane addresses (198.18.0.0/24) are never contacted.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import http.server
import logging
import math
import multiprocessing
import random
import selectors
import socket
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any

import grpc

from p4lb.controller.cli import health_loop
from p4lb.controller.controller import Controller
from p4lb.controller.loop import HealthLoop, RoundResult, with_verdicts
from p4lb.controller.settings import CheckKind, HealthCheck, Settings, parse
from p4lb.controller.switch import ModelSwitch, P4RuntimeSwitch, SwitchView
from p4lb.lab.fake_p4rt import FakeP4Runtime, Rpc, Table
from p4lb.model.config import LbConfig
from p4lb.model.ops import Write
from p4lb.model.pool import Pool

PORT = 18080
ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
MANY_PORT = 18180  # below the ephemeral range, so no probe's own socket can take it while a backend is down
MAX_SOAK_S = 600.0
WIDTH = 80


# ---- tables ------------------------------------------------------------------------------------------------------
def table(title: str, head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table, right-aligned columns, at most WIDTH columns wide (cells are kept short)."""
    cells = [list(map(str, head))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = [title, "  ".join(h.rjust(w) for h, w in zip(cells[0], widths, strict=True)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells[1:]]
    return "\n".join(line[:WIDTH] for line in lines)


def ms(seconds: float) -> str:
    """Seconds as whole milliseconds."""
    return f"{seconds * 1000:.0f}"


# ---- 1. the failover figure (four HTTP backends, the model switch) ----------------------------------------------
class _Quiet(http.server.BaseHTTPRequestHandler):
    """Answers 200 to every GET, logging nothing."""

    def do_GET(self) -> None:  # noqa: N802
        """200, no body."""
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Silent."""


class _Timed(ModelSwitch):
    """Records when each commit lands."""

    def __init__(self, cfg: LbConfig) -> None:
        super().__init__(cfg)
        self.commits: list[tuple[float, tuple[int, ...]]] = []

    def write(self, w: Write) -> None:
        super().write(w)
        if w.target == "vip":
            self.commits.append((time.monotonic(), self.state.members(self.state.version)))


def trial(check: HealthCheck, victim: int = 2, rounds_limit_s: float = 10.0) -> float:
    """Seconds from the victim's death to the commit that drops it."""
    servers = [http.server.ThreadingHTTPServer((a, PORT), _Quiet) for a in ADDRESSES]
    for s in servers:
        threading.Thread(target=s.serve_forever, args=(0.005,), daemon=True).start()
    backends = [{"address": f"10.0.{i + 2}.{i + 2}", "mac": f"00:00:00:00:0{i + 2}:0{i + 2}", "port": i + 2, "health_address": a} for i, a in enumerate(ADDRESSES)]
    settings = parse({"backend": backends, "health": {"kind": check.kind, "port": PORT, "interval_ms": check.interval_ms, "timeout_ms": check.timeout_ms, "rise": check.rise, "fall": check.fall}})
    switch = _Timed(settings.lb)
    ctl = Controller(settings, switch)
    ctl.deploy()
    rounds = int(rounds_limit_s * 1000 / check.interval_ms)
    loop = threading.Thread(target=health_loop, args=(ctl, rounds), daemon=True)
    loop.start()
    time.sleep((3 + random.random()) * check.interval_ms / 1000)  # die at a random phase of the check loop
    servers[victim - 1].shutdown()
    servers[victim - 1].server_close()
    killed = time.monotonic()  # from here on, connections to the victim are refused
    deadline = killed + rounds_limit_s
    while time.monotonic() < deadline and not any(t > killed and victim not in g for t, g in switch.commits):
        time.sleep(0.001)
    done = next((t for t, g in switch.commits if t > killed and victim not in g), None)
    for s in servers:
        s.shutdown()
        s.server_close()
    loop.join(timeout=rounds_limit_s)
    if done is None:
        raise SystemExit("failover did not happen within the time limit")
    return done - killed


def failover_figure(trials: int) -> list[str]:
    """p4lb's failover time at a 100 ms interval next to the seed's ping loop (the original figure)."""
    p4lb = HealthCheck(CheckKind.TCP, PORT, interval_ms=100, timeout_ms=50, rise=2, fall=2)
    seed = replace(p4lb, interval_ms=2000, timeout_ms=1000, fall=1, rise=1)  # ping -W1 then sleep 1
    rows, medians = [], []
    for name, check, n in (("p4lb tcp 100ms fall 2", p4lb, trials), ("seed 1s+1s fall 1", seed, max(1, trials * 3 // 5))):
        times = sorted(trial(check) for _ in range(n))
        medians.append(statistics.median(times))
        rows.append((name, n, ms(times[0]), ms(medians[-1]), ms(times[-1]), 2 * check.interval_ms))
    out = table("Failover, 4 HTTP backends, model switch (ms)", ("loop", "trials", "min", "median", "max", "limit"), rows)
    return [out, f"seed / p4lb median failover: x{medians[1] / medians[0]:.1f}"]


# ---- loopback backends -------------------------------------------------------------------------------------------
class Listeners:
    """One TCP listener per backend (127.0.1.<id>:MANY_PORT) that accepts and closes; killed and revived by id."""

    def __init__(self, n: int, port: int = MANY_PORT) -> None:
        self.port = port
        self.addresses = tuple(f"127.0.1.{b}" for b in range(1, n + 1))
        self.sel = selectors.DefaultSelector()
        self.socks: dict[int, socket.socket] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        for b in range(1, n + 1):
            self.up(b)
        self.thread = threading.Thread(target=self._serve, name="bench-listeners", daemon=True)
        self.thread.start()

    def up(self, b: int) -> None:
        """Listen for backend b again."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((self.addresses[b - 1], self.port))
        except OSError as exc:
            s.close()
            raise SystemExit(f"cannot listen on {self.addresses[b - 1]}:{self.port} ({exc.strerror}): is another bench running?") from None
        s.listen(64)
        s.setblocking(False)
        with self.lock:
            self.socks[b] = s
            self.sel.register(s, selectors.EVENT_READ, b)

    def down(self, ids: Iterable[int]) -> float:
        """Close these backends' listeners at once (connects are refused from then on); the time after the last."""
        with self.lock:
            for b in ids:
                s = self.socks.pop(b)
                self.sel.unregister(s)
                s.close()
        return time.monotonic()

    def _serve(self) -> None:
        """Accept and close every connection until close()."""
        while not self.stop.is_set():
            for key, _ in self.sel.select(0.05):
                with self.lock, contextlib.suppress(OSError):
                    if key.data in self.socks and isinstance(key.fileobj, socket.socket):
                        key.fileobj.accept()[0].close()

    def close(self) -> None:
        """Stop accepting and close every listener."""
        self.stop.set()
        self.thread.join(1.0)
        self.down(list(self.socks))
        self.sel.close()


# ---- the fake switch, recorded -----------------------------------------------------------------------------------
class RecordingFake(FakeP4Runtime):
    """The fake P4Runtime switch, remembering when each vip write (a commit) landed and the group it committed."""

    def __init__(self) -> None:
        super().__init__()
        self.commits: list[tuple[float, frozenset[int]]] = []

    def Write(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 (gRPC method name)
        """A Write; a vip update in it is a commit."""
        rep = super().Write(request, context)
        pipeline = self.device.pipeline
        if pipeline is not None and any(u.entity.table_entry.table_id == pipeline.table_id(Table.VIP) for u in request.updates):
            st = self.device.state
            self.commits.append((time.monotonic(), frozenset(st.members(st.version))))
        return rep

    def group(self) -> frozenset[int]:
        """The committed group now."""
        return self.commits[-1][1] if self.commits else frozenset()


class ProfiledSwitch(P4RuntimeSwitch):
    """The real P4Runtime client, adding up the seconds spent per part of a round: read, staged, rr_next, vip;
    with `server_cpu` set (the loop stopped), also this thread's CPU and the switch process's CPU per part."""

    spent: defaultdict[str, float]
    server_cpu: Callable[[], float] | None = None

    @contextlib.contextmanager
    def _timed(self, part: str) -> Iterator[None]:
        server = self.server_cpu() if self.server_cpu is not None else 0.0
        started, cpu = time.monotonic(), time.thread_time()
        try:
            yield
        finally:
            self.spent[part] += time.monotonic() - started
            if self.server_cpu is not None:
                self.spent[f"{part}.cpu"] += time.thread_time() - cpu
                self.spent[f"{part}.server"] += self.server_cpu() - server

    def read(self, full: bool = True) -> SwitchView:
        """Read back, timed."""
        with self._timed("read"):
            return super().read(full)

    def read_quick(self, full: bool = False) -> SwitchView:
        """The quick read (vip and rr_group; a full read-back if they differ), timed as read."""
        with self._timed("read"):
            return super().read_quick(full)

    def write_batch(self, ws: list[Write]) -> None:
        """The staged table writes, timed."""
        with self._timed("staged"):
            super().write_batch(ws)

    def write(self, w: Write) -> None:
        """One write, timed as staged, rr_next (CPU port, PacketIn waited for) or vip (the commit)."""
        with self._timed(str(w.target) if w.target in ("rr_next", "vip") else "staged"):
            super().write(w)


@dataclass(frozen=True)
class Round:
    """One health round as the bench saw it."""

    started: float
    probe_s: float
    total_s: float
    writes: int
    ok: bool
    parts: dict[str, float]
    failing: frozenset[int] = frozenset()  # backends whose probe failed this round


class RecordedLoop(HealthLoop):
    """The health loop, recording every round (or, with keep=False, only counting them)."""

    def __init__(self, ctl: Controller, spent: defaultdict[str, float], keep: bool = True) -> None:
        super().__init__(ctl)
        self.spent = spent
        self.keep = keep
        self.rounds: list[Round] = []
        self.removals: deque[tuple[float, int, str]] = deque(maxlen=10_000)  # (when, backend, the failing probe's reason)
        self.count = self.overruns = self.failed = 0
        self.worst_s = 0.0
        self.next_start = 0.0  # when the next round is due, as the loop will wait for it

    def round(self) -> RoundResult:
        """One round, recorded."""
        self.spent.clear()
        started = time.monotonic()
        res = super().round()
        interval = self.monitor.check.interval_ms / 1000
        self.count += 1
        self.overruns += res.total_s > interval
        self.failed += res.applied is None
        self.worst_s = max(self.worst_s, res.total_s)
        self.next_start = started + max(self.monitor.next_delay(), res.total_s)
        if res.applied is not None:
            now = time.monotonic()
            self.removals.extend((now, b, self.monitor.reasons.get(b, "")) for b in res.applied.before.healthy - res.applied.after.healthy)
        if self.keep:
            writes = len(res.applied.writes) if res.applied is not None else 0
            failing = frozenset(b for b, h in self.monitor.states.items() if (h.streak == 0) != h.healthy)
            self.rounds.append(Round(started, res.probe_s, res.total_s, writes, res.applied is not None, dict(self.spent), failing))
        return res


def _world(conn: Connection, n: int, port: int) -> None:
    """The child process: the listeners and the recorded fake switch, driven over a pipe until "stop"."""
    try:
        listeners = Listeners(n, port)
    except SystemExit as exc:
        conn.send(("error", str(exc)))
        return
    fake = RecordingFake().start()
    conn.send((fake.address, listeners.addresses))
    try:
        while True:
            cmd, arg = conn.recv()
            if cmd == "down":
                conn.send(listeners.down(arg))
            elif cmd == "up":
                for b in arg:
                    listeners.up(b)
                conn.send(None)
            elif cmd == "cpu":
                conn.send(time.process_time())
            elif cmd == "since":
                conn.send((fake.commits[arg:], fake.calls[Rpc.WRITE], fake.calls[Rpc.PACKET_OUT], fake.calls[Rpc.READ], rss_mib()))
            else:
                break
    finally:
        fake.stop()
        listeners.close()


class World:
    """The backends and the switch in a child process, as they would be on other hosts: their work does not
    compete with the controller for this process's GIL. Times are CLOCK_MONOTONIC, shared by both processes."""

    def __init__(self, n: int, port: int = MANY_PORT) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_world, args=(child, n, port), name="bench-world", daemon=True)
        self.proc.start()
        if not self.conn.poll(60):
            self.proc.kill()
            raise SystemExit("the backends and fake switch process did not start within 60 s")
        got = self.conn.recv()
        if got[0] == "error":
            raise SystemExit(got[1])
        self.address, self.addresses = got
        self.port = port
        self.commits: list[tuple[float, frozenset[int]]] = []
        self.writes = self.packet_outs = self.reads = 0
        self.rss = 0.0

    def _ask(self, cmd: str, arg: object = None) -> object:
        self.conn.send((cmd, arg))
        return self.conn.recv()

    def down(self, ids: Iterable[int]) -> float:
        """Kill these backends at one instant; when the last listener was closed."""
        return float(self._ask("down", sorted(ids)))  # type: ignore[arg-type]

    def up(self, ids: Iterable[int]) -> None:
        """Revive these backends."""
        self._ask("up", sorted(ids))

    def cpu(self) -> float:
        """The child's CPU seconds so far (switch and backends)."""
        return float(self._ask("cpu"))  # type: ignore[arg-type]

    def sync(self) -> World:
        """Fetch the new commits and the call counts."""
        new: list[tuple[float, frozenset[int]]]
        new, self.writes, self.packet_outs, self.reads, self.rss = self._ask("since", len(self.commits))  # type: ignore[misc]
        self.commits += new
        return self

    def group(self) -> frozenset[int]:
        """The committed group now."""
        commits = self.sync().commits
        return commits[-1][1] if commits else frozenset()

    def close(self) -> None:
        """Stop the child."""
        with contextlib.suppress(OSError, EOFError):
            self.conn.send(("stop", None))
        self.proc.join(5.0)
        if self.proc.is_alive():
            self.proc.kill()


@dataclass
class Rig:
    """128 loopback backends and the recorded fake switch (a child process), the controller, its loop on a thread."""

    world: World
    ctl: Controller
    loop: RecordedLoop
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def interval(self) -> float:
        """The check interval in seconds."""
        return self.ctl.settings.health.interval_ms / 1000

    def start(self) -> Rig:
        """Run the loop until close()."""
        self.thread = threading.Thread(target=self.loop.run, kwargs={"stop": self.stop}, name="bench-loop", daemon=True)
        self.thread.start()
        return self

    def aim(self, before_s: float) -> None:
        """Sleep until `before_s` seconds before the loop's next round is due (settled: one every interval)."""
        last = self.loop.next_start
        if not last:
            return
        due = last + max(0, math.ceil((time.monotonic() + before_s + 0.002 - last) / self.interval)) * self.interval
        time.sleep(max(0.0, due - before_s - time.monotonic()))

    def rounds_until(self, at: float, limit_s: float = 5.0) -> list[Round]:
        """The loop's rounds, once the round running at `at` (a commit's time) has been recorded."""
        deadline = time.monotonic() + limit_s
        while at != float("inf") and time.monotonic() < deadline:
            last = self.loop.rounds[-1] if self.loop.rounds else None
            if last is not None and last.started + last.total_s >= at:
                break
            time.sleep(0.002)
        return list(self.loop.rounds)

    def wait_group(self, want: frozenset[int], limit_s: float) -> bool:
        """Wait until the committed group is `want`; False after limit_s."""
        deadline = time.monotonic() + limit_s
        while self.world.group() != want:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        """Stop the loop, the switch session and the child."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join(5.0)
        self.ctl.switch.close()
        self.world.close()


def rig_settings(world: World, interval_ms: int, fall: int) -> Settings:
    """The config: n backends probed on loopback; data-plane addresses in 198.18.0.0/24 (never contacted)."""
    backends = [{"address": f"198.18.0.{b}", "mac": f"02:00:00:00:00:{b:02x}", "port": b + 1, "health_address": a} for b, a in enumerate(world.addresses, start=1)]
    health = {"kind": "tcp", "port": world.port, "interval_ms": interval_ms, "timeout_ms": interval_ms // 2, "rise": 2, "fall": fall}
    vip = {"address": "198.18.1.1", "port": 80, "client_port": 1, "client_net": "198.19.0.0/24"}
    return parse({"vip": vip, "backend": backends, "health": health, "switch": {"grpc": world.address}})


def make_rig(n: int, interval_ms: int, fall: int, keep: bool = True, port: int = MANY_PORT) -> Rig:
    """The child (listeners, fake switch) and a deployed controller (real P4rt client over gRPC); loop not started."""
    world = World(n, port)
    try:
        settings = rig_settings(world, interval_ms, fall)
        t = settings.switch
        switch = ProfiledSwitch(t.grpc, t.device_id, t.election_id, t.p4info, t.bmv2_json, settings.lb, timeout_s=t.rpc_timeout_ms / 1000)
        switch.spent = defaultdict(float)
        ctl = Controller(settings, switch)
        ctl.deploy()
    except BaseException:
        world.close()
        raise
    return Rig(world, ctl, RecordedLoop(ctl, switch.spent, keep))


# ---- 2. simultaneous failures ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kill:
    """One trial: k backends killed at once."""

    k: int
    seconds: float  # kill -> the commit that removed them all (inf: never)
    commits: int  # commits from the kill to that one, inclusive
    writes: int  # Write RPCs the switch received in that time
    packet_outs: int
    in_probe: bool  # the kill landed inside a round's probe phase
    commit_round: Round | None
    wait_s: float = float("nan")  # kill -> the start of the first round after it
    seen_first: bool = False  # that round's probes failed every victim (the first probe after the kill detects it)
    confirm_s: float = float("nan")  # that round's start -> the start of the round that committed


def kill_trial(rig: Rig, k: int, rng: random.Random, phase: float | None = None) -> Kill:
    """Kill k random backends at one instant, `phase` of an interval (default: random) before the loop's next
    round is due; wait for their removal, then revive them."""
    everyone = frozenset(range(1, rig.ctl.settings.lb.n + 1))
    if not rig.wait_group(everyone, 30 * rig.interval):
        raise SystemExit("the group did not return to every backend before a trial")
    time.sleep(rig.interval * (1 + rng.random()))  # settle
    victims = frozenset(rng.sample(sorted(everyone), k))
    world = rig.world.sync()
    writes0, outs0, first = world.writes, world.packet_outs, len(world.commits)
    rig.aim(rig.interval * (rng.random() if phase is None else phase))
    killed = world.down(victims)
    done = rig.wait_group(everyone - victims, 30 * rig.interval)
    writes, outs = world.writes - writes0, world.packet_outs - outs0
    commits = world.commits[first:]
    at = commits[-1][0] if done else float("inf")
    world.up(victims)
    rounds = rig.rounds_until(at)
    in_probe = any(r.started <= killed <= r.started + r.probe_s for r in rounds[-40:])
    committing = next((r for r in reversed(rounds) if r.writes and r.started < at), None)
    probing = next((r for r in rounds if r.started >= killed), None)
    if probing is None or committing is None:
        return Kill(k, at - killed, len(commits), writes, outs, in_probe, committing)
    return Kill(k, at - killed, len(commits), writes, outs, in_probe, committing, probing.started - killed, victims <= probing.failing, committing.started - probing.started)


def simultaneous(rig: Rig, sizes: Sequence[int], trials: int, seed: int) -> list[Kill]:
    """`trials` kills of each size, one at a time on the running rig. The kills of one size are spread evenly over
    the loop's interval (stratified: trial j lands at a random point of the j-th of `trials` equal slices of the
    time before the next round), so the median sees the median phase rather than the luck of a few draws."""
    rng = random.Random(seed)
    return [kill_trial(rig, k, rng, (j + rng.random()) / trials) for k in sizes for j in range(trials)]


def kill_tables(kills: Sequence[Kill], interval: float) -> list[str]:
    """The failover table (times, ratio to the interval, commits, writes) and the committing round's profile."""
    rows, prof = [], []
    for k in sorted({x.k for x in kills}):
        xs = [x for x in kills if x.k == k]
        t = sorted(x.seconds for x in xs)
        med = statistics.median(t)
        rows.append((k, len(xs), ms(t[0]), ms(med), ms(t[-1]), f"{med / interval:.2f}", f"{t[-1] / interval:.2f}",
                     "/".join(str(x.commits) for x in xs), "/".join(str(x.writes) for x in xs), sum(x.in_probe for x in xs)))
        prof.append(profile_row(k, [x.commit_round for x in xs if x.commit_round is not None]))
    head = ("killed", "n", "min", "median", "max", "med/iv", "max/iv", "commits", "writes", "inprobe")
    out = [table(f"Simultaneous failures: 128 TCP backends, fake P4Runtime, {ms(interval)} ms interval (ms)", head, rows)]
    out.append(table("The committing round, medians (ms)", ("killed", "probes", "read", "staged", "rr_next", "vip", "round", "writes"), prof))
    out.append(table("Where the time went, medians (ms)", ("killed", "to 1st probe", "1st probe saw it", "to confirm", "to commit", "total"), [delay_row(k, [x for x in kills if x.k == k]) for k in sorted({x.k for x in kills})]))
    return out


def delay_row(k: int, kills: Sequence[Kill]) -> tuple[object, ...]:
    """Kill -> the first round's start (the phase), whether that round's probes failed every victim, -> the start of
    the round that committed (the re-check), -> the commit (that round's probes and writes)."""
    def med(values: Iterable[float]) -> str:
        got = [v for v in values if v == v]  # NaN: the trial's rounds were not found
        return ms(statistics.median(got)) if got else "-"
    commit = (x.seconds - x.wait_s - x.confirm_s for x in kills)
    return (k, med(x.wait_s for x in kills), f"{sum(x.seen_first for x in kills)}/{len(kills)}", med(x.confirm_s for x in kills), med(commit), med(x.seconds for x in kills))


def profile_row(k: int, rounds: Sequence[Round]) -> tuple[object, ...]:
    """Median time of each part of the rounds that committed."""
    if not rounds:
        return (k, "-", "-", "-", "-", "-", "-", "-")
    def med(part: str) -> str:
        return ms(statistics.median(r.parts.get(part, 0.0) for r in rounds))
    return (k, ms(statistics.median(r.probe_s for r in rounds)), med("read"), med("staged"), med("rr_next"), med("vip"),
            ms(statistics.median(r.total_s for r in rounds)), statistics.median(r.writes for r in rounds))


PARTS = ("read", "staged", "rr_next", "vip")


def converge_profile(rig: Rig, sizes: Sequence[int], reps: int, seed: int) -> list[tuple[object, ...]]:
    """The loop stopped: converges that remove k backends (then restore them) as a quick loop round does them, per
    part the medians of wall time, controller CPU (the calling thread) and switch CPU (the child process), and the
    P4Runtime calls per removal (Write/Read/PacketOut, from the fake switch's counters)."""
    sw, rng, rows = rig.ctl.switch, random.Random(seed), list[tuple[object, ...]]()
    assert isinstance(sw, ProfiledSwitch)
    sw.server_cpu = rig.world.cpu
    try:
        for k in sizes:
            runs, calls = list[dict[str, float]](), list[str]()
            for _ in range(max(1, reps)):
                victims = rng.sample(range(1, rig.ctl.settings.lb.n + 1), k)
                sw.spent.clear()
                before = _calls(rig.world.sync())
                rig.ctl.converge(_set_health(victims, False), "bench remove", thorough=False)
                calls.append("/".join(str(b - a) for a, b in zip(before, _calls(rig.world.sync()), strict=True)))
                runs.append(dict(sw.spent))
                rig.ctl.converge(_set_health(victims, True), "bench restore", thorough=False)
            for part in PARTS:
                def med(key: str, runs: list[dict[str, float]] = runs) -> str:
                    return f"{statistics.median(r.get(key, 0.0) for r in runs) * 1000:.1f}"
                rows.append((k, part, med(part), med(f"{part}.cpu"), med(f"{part}.server"), Counter(calls).most_common(1)[0][0] if part == "read" else ""))
    finally:
        sw.server_cpu = None
    return rows


def _set_health(backends: list[int], healthy: bool) -> Callable[[Pool], Pool]:
    """A converge's update: these backends' verdicts."""
    return lambda pool: with_verdicts(pool, dict.fromkeys(backends, healthy))


def _calls(world: World) -> tuple[int, int, int]:
    """The switch's Write, Read and PacketOut calls so far."""
    return world.writes, world.reads, world.packet_outs


def profile_table(rows: Sequence[tuple[object, ...]]) -> str:
    """The converge profile."""
    head = ("killed", "part", "wall", "ctl cpu", "switch cpu", "calls W/R/PO")
    return table("One quick converge removing k backends, loop stopped (ms, medians)", head, rows)


# ---- 3. soak -----------------------------------------------------------------------------------------------------
@dataclass
class Outage:
    """A backend down from `down` to `up` (planned offsets from the start; actual monotonic times once run)."""

    backend: int
    down: float
    up: float
    at_down: float = 0.0
    at_up: float = 0.0


def churn_plan(n: int, seconds: float, interval: float, events: int, seed: int, max_down: int = 16) -> list[Outage]:
    """Random outages (fixed seed): 30% blips under an interval, the rest 4..12 intervals; per backend a gap
    of 6 intervals after each, at most max_down at once, all over a second before the end."""
    rng = random.Random(seed)
    free = dict.fromkeys(range(1, n + 1), 0.0)
    plan: list[Outage] = []
    for t in sorted(rng.uniform(1.0, max(1.0, seconds - 3.0)) for _ in range(events)):
        busy = [o for o in plan if o.down <= t < o.up]
        ready = [b for b, f in free.items() if f <= t and all(o.backend != b for o in busy)]
        if len(busy) >= max_down or not ready:
            continue
        length = rng.uniform(0.2, 0.8) if rng.random() < 0.3 else rng.uniform(4.0, 12.0)
        o = Outage(rng.choice(ready), t, min(t + length * interval, seconds - 1.0))
        free[o.backend] = o.up + 6 * interval
        plan.append(o)
    return plan


def run_churn(rig: Rig, plan: list[Outage], seconds: float) -> None:
    """Carry out the plan in real time (actual times recorded), then wait out `seconds`."""
    start = time.monotonic()
    steps = sorted([(o.down, 0, o) for o in plan] + [(o.up, 1, o) for o in plan], key=lambda s: (s[0], s[1]))
    for when, up, o in steps:
        time.sleep(max(0.0, start + when - time.monotonic()))
        if up:
            rig.world.up([o.backend])
            o.at_up = time.monotonic()
        else:
            o.at_down = rig.world.down([o.backend])
    time.sleep(max(0.0, start + seconds - time.monotonic()))


def rss_mib() -> float:
    """This process's resident set size in MiB."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024


@dataclass(frozen=True)
class Soak:
    """What the soak measured."""

    seconds: float
    outages: int
    judged: int  # outages of at least `fall` intervals of a backend in the group
    missed: int
    false: int
    false_why: Counter[str]  # the failing probes' reasons
    latency: list[float]
    rss: tuple[float, float]  # the controller's (this process), start and end
    switch_rss: tuple[float, float]  # the child's: backends and fake switch
    rounds: int
    overruns: int
    failed: int
    worst_s: float
    commits: int
    writes: int
    settled: bool
    backends: int = 128


def judge(commits: Sequence[tuple[float, frozenset[int]]], plan: Sequence[Outage], interval: float, fall: int) -> tuple[int, int, list[tuple[float, int]], list[float]]:
    """(judged, missed, false failovers as (commit time, backend), removal latencies) from the commit log and the
    outages as run; a removal is false when the backend was up throughout the fall+1 intervals before it."""
    times = [t for t, _ in commits]
    window = (fall + 1) * interval
    judged, missed, latency = 0, 0, []
    for o in plan:
        before = bisect.bisect_left(times, o.at_down) - 1
        if o.at_up - o.at_down < fall * interval or before < 0 or o.backend not in commits[before][1]:
            continue
        judged += 1
        gone = next((t for t, g in commits[before + 1:] if o.backend not in g), None)
        if gone is None or gone - o.at_down > window:
            missed += 1
        else:
            latency.append(gone - o.at_down)
    false = [(t, b) for (_, g0), (t, g) in zip(commits, commits[1:], strict=False) for b in sorted(g0 - g) if not _was_down(plan, b, t - window, t)]
    return judged, missed, false, latency


def _reason(removals: Iterable[tuple[float, int, str]], t: float, b: int) -> str:
    """Why the loop removed backend b in the commit at t: the failing probe's reason, address cut off."""
    why = next((r for when, bb, r in removals if bb == b and when >= t), "unknown")
    return why.split(": ", 1)[-1]


def _was_down(plan: Sequence[Outage], b: int, start: float, end: float) -> bool:
    """Backend b was down at some moment in [start, end]."""
    return any(o.backend == b and o.at_down <= end and o.at_up >= start for o in plan)


def soak(seconds: float, events: int, seed: int, interval_ms: int = 100, fall: int = 2, n: int = 128, port: int = MANY_PORT) -> Soak:
    """Run the loop against the fake switch under churn for `seconds`; judge every removal."""
    rig = make_rig(n, interval_ms, fall, keep=False, port=port).start()
    try:
        plan = churn_plan(n, seconds, rig.interval, events, seed)
        time.sleep(10 * rig.interval)  # warm up before the first RSS figure
        world = rig.world.sync()
        rss0, commits0, writes0, rounds0 = (rss_mib(), world.rss), len(world.commits), world.writes, rig.loop.count
        run_churn(rig, plan, seconds)
        settled = rig.wait_group(frozenset(range(1, n + 1)), 30 * rig.interval)
        rss1 = (rss_mib(), world.sync().rss)
        loop = rig.loop
        judged, missed, false, latency = judge(world.commits[commits0 - 1:], plan, rig.interval, fall)
        why = Counter(_reason(loop.removals, t, b) for t, b in false)
        return Soak(seconds, len(plan), judged, missed, len(false), why, latency, (rss0[0], rss1[0]), (rss0[1], rss1[1]), loop.count - rounds0,
                    loop.overruns, loop.failed, loop.worst_s, len(world.commits) - commits0, world.writes - writes0, settled, n)
    finally:
        rig.close()


def soak_table(s: Soak, interval: float, fall: int) -> str:
    """The soak's figures, one per row."""
    lat = sorted(s.latency) or [float("nan")]
    rows = [
        ("duration (s), backends", f"{s.seconds:g}, {s.backends}"),
        ("outages run / judged (>= fall intervals)", f"{s.outages} / {s.judged}"),
        ("controller RSS start -> end (MiB)", f"{s.rss[0]:.1f} -> {s.rss[1]:.1f}, {s.rss[1] - s.rss[0]:+.1f}"),
        ("fake switch+backends RSS (MiB)", f"{s.switch_rss[0]:.1f} -> {s.switch_rss[1]:.1f}, {s.switch_rss[1] - s.switch_rss[0]:+.1f}"),
        (f"rounds run / overrun (> {ms(interval)} ms) / no switch", f"{s.rounds} / {s.overruns} / {s.failed}"),
        ("longest round (ms)", ms(s.worst_s)),
        ("commits, Write RPCs", f"{s.commits}, {s.writes}"),
        ("removal latency median / max (ms)", f"{ms(statistics.median(lat))} / {ms(lat[-1])}"),
        (f"failovers missed (not within {fall + 1} intervals)", s.missed),
        ("false failovers (removed while up)", s.false),
        *((f"  probe said: {why[:36]}", c) for why, c in s.false_why.most_common(3)),
        ("group back to every backend at the end", "yes" if s.settled else "NO"),
    ]
    return table(f"Soak, fake P4Runtime switch, interval {ms(interval)} ms, fall {fall}", ("figure", "value"), rows)


# ---- main --------------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Options to shorten (or skip) each part."""
    p = argparse.ArgumentParser(prog="python -m p4lb.controller.bench", description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=5, help="trials per figure (default 5)")
    p.add_argument("--sizes", default="1,10,100", help="backends killed at once, comma-separated (default 1,10,100)")
    p.add_argument("--backends", type=int, default=128, help="backends of the failure and soak runs (default 128)")
    p.add_argument("--interval-ms", type=int, default=100, help="health interval (default 100)")
    p.add_argument("--soak-seconds", type=float, default=120.0, help="soak length (default 120 s, as nox -s bench runs it; at most 600; 0 skips)")
    p.add_argument("--churn-events", type=int, default=0, help="outages tried in the soak (default 2 per second, at most 1200)")
    p.add_argument("--seed", type=int, default=4, help="random seed of kills and churn (default 4)")
    p.add_argument("--skip-seed", action="store_true", help="skip the 4-backend figure next to the seed's loop")
    args = p.parse_args(argv)
    if not 0 <= args.soak_seconds <= MAX_SOAK_S:
        p.error(f"--soak-seconds must be 0..{MAX_SOAK_S:g}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Print the figures; 1 if the soak missed a failover or made a false one."""
    args = parse_args(argv)
    logging.getLogger("p4lb").setLevel(logging.ERROR)  # the loop logs every commit at WARNING
    interval, fall = args.interval_ms / 1000, 2
    if not args.skip_seed:
        print(*failover_figure(args.trials), sep="\n", end="\n\n", flush=True)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if sizes and args.trials:
        rig = make_rig(args.backends, args.interval_ms, fall)
        try:
            profile = converge_profile(rig, sizes, 3, args.seed)
            kills = simultaneous(rig.start(), sizes, args.trials, args.seed)
        finally:
            rig.close()
        print(*kill_tables(kills, interval), profile_table(profile), sep="\n\n", end="\n\n", flush=True)
    if not args.soak_seconds:
        return 0
    events = args.churn_events or min(1200, int(2 * args.soak_seconds))
    s = soak(args.soak_seconds, events, args.seed, args.interval_ms, fall, args.backends)
    print(soak_table(s, interval, fall), flush=True)
    return 1 if s.missed or s.false else 0


if __name__ == "__main__":
    sys.exit(main())
