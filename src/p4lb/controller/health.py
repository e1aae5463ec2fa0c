"""Backend health checks (TCP connect, HTTP or HTTPS GET) with rise/fall hysteresis, as HAProxy and Envoy define them.

One deadline (`timeout_ms`) covers a whole probe: connect, TLS handshake, request and the full response, so a
backend that dribbles its answer a byte at a time fails at the deadline. A round probes every backend concurrently
(asyncio, at most `max_concurrent` in flight) and never takes longer than the interval, whatever the backends do:
a probe still running when the round's time is up counts as a failure.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from p4lb.controller.settings import CheckKind, HealthCheck

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 8 * 1024  # one status or header line
MAX_HEADER_BYTES = 32 * 1024  # all header lines
MAX_BODY_BYTES = 64 * 1024  # read (and discarded) at most this much of the body
NO_BODY = frozenset({204, 304})
ROUND_SHARE = 0.9  # probes get 90% of the interval; the rest covers cancelling the late ones and the bookkeeping


@dataclass(frozen=True)
class Probe:
    """One check's result and how long it took."""

    ok: bool
    reason: str
    seconds: float = 0.0


# ---- one probe ---------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def ssl_context(verify: bool, ca_file: str) -> ssl.SSLContext:
    """The client TLS context of HTTPS checks: the system's CAs (or ca_file), or no verification at all."""
    ctx = ssl.create_default_context(cafile=ca_file or None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _request(check: HealthCheck, address: str) -> bytes:
    """The GET request (path and host were validated: printable ASCII, no CR/LF)."""
    host = check.host or address
    return f"GET {check.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: p4lb-health\r\nAccept: */*\r\nConnection: close\r\n\r\n".encode("ascii")


def _status(line: bytes) -> int:
    """The status code of an HTTP/1.x status line; ValueError if it is not one."""
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise ValueError(f"not an HTTP status line: {line[:60]!r}" if line else "connection closed before the status line")
    return int(parts[1])


async def _headers(reader: asyncio.StreamReader) -> int | None:
    """Read the header lines up to the blank one; the Content-Length, if given."""
    total, length = 0, None
    while True:
        line = await reader.readline()
        total += len(line)
        if not line.endswith(b"\n"):
            raise ValueError("connection closed inside the headers")
        if total > MAX_HEADER_BYTES:
            raise ValueError(f"headers longer than {MAX_HEADER_BYTES} bytes")
        if line in (b"\r\n", b"\n"):
            return length
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())


async def _body(reader: asyncio.StreamReader, length: int | None) -> None:
    """Read the body: Content-Length bytes, or to the end of the connection (at most MAX_BODY_BYTES)."""
    if length is not None:
        await reader.readexactly(min(length, MAX_BODY_BYTES))
        return
    got = 0
    while got < MAX_BODY_BYTES:
        chunk = await reader.read(MAX_BODY_BYTES - got)
        if not chunk:
            return
        got += len(chunk)


async def _tcp(address: str, port: int, check: HealthCheck) -> tuple[bool, str]:
    """Connect, then close at once."""
    _, writer = await asyncio.open_connection(address, port)
    writer.transport.abort()
    return True, f"tcp {address}:{port}: connect ok"


async def _http(address: str, port: int, check: HealthCheck) -> tuple[bool, str]:
    """GET path (over TLS for https), read the full response, compare the status."""
    tls = ssl_context(check.tls_verify, check.ca_file) if check.kind is CheckKind.HTTPS else None
    server_name = (check.host or address).rsplit(":", 1)[0] if tls else None
    reader, writer = await asyncio.open_connection(address, port, ssl=tls, server_hostname=server_name, limit=MAX_LINE_BYTES)
    try:
        writer.write(_request(check, address))
        await writer.drain()
        status = _status(await reader.readline())
        length = await _headers(reader)
        if status not in NO_BODY and not 100 <= status < 200:
            await _body(reader, length)
    finally:
        writer.transport.abort()
    what = f"{check.kind.value} GET {check.path} at {address}:{port}"
    if status != check.expect_status:
        return False, f"{what}: status {status}, expected {check.expect_status}"
    return True, f"{what}: {status}"


async def probe_async(address: str, check: HealthCheck, port: int = 0) -> Probe:
    """Check one backend once; the whole probe within check.timeout_ms."""
    port = port or check.port
    started = time.monotonic()
    run = _tcp if check.kind is CheckKind.TCP else _http
    try:
        async with asyncio.timeout(check.timeout_ms / 1000):
            ok, reason = await run(address, port, check)
    except TimeoutError:
        ok, reason = False, f"{check.kind.value} {address}:{port}: timeout: no full answer within {check.timeout_ms} ms"
    except (OSError, EOFError, ValueError, UnicodeError) as exc:  # refused, reset, TLS, short or malformed answers
        ok, reason = False, f"{check.kind.value} {address}:{port}: {type(exc).__name__}: {exc}"
    return Probe(ok, reason, time.monotonic() - started)


def probe(address: str, check: HealthCheck, port: int = 0) -> Probe:
    """Check one backend once, within check.timeout_ms (blocking)."""
    return asyncio.run(probe_async(address, check, port))


# ---- probers -----------------------------------------------------------------------------------------------------
Prober = Callable[[int, str], "Probe | Awaitable[Probe]"]  # (backend id, health address) -> result


@dataclass(frozen=True)
class NetworkProber:
    """Real checks: TCP connect, HTTP or HTTPS GET to the backend's health address and port."""

    check: HealthCheck
    ports: tuple[int, ...] = ()  # per backend id - 1; 0 or missing: check.port

    async def __call__(self, backend: int, address: str) -> Probe:
        """Probe `address` once."""
        port = self.ports[backend - 1] if backend - 1 < len(self.ports) else 0
        return await probe_async(address, self.check, port)


@dataclass(frozen=True)
class StateProber:
    """Dry run: nothing leaves the process; each verdict is what the operator's healthy set says now."""

    healthy: Callable[[], frozenset[int]]

    def __call__(self, backend: int, address: str) -> Probe:
        """The state's verdict for `backend`; `address` is never contacted."""
        ok = backend in self.healthy()
        return Probe(ok, f"dry run: {'healthy' if ok else 'failed'} in the state file, not probed")


# ---- hysteresis and rounds ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hysteresis:
    """A backend's health as the checker believes it, and the run of identical results behind it."""

    healthy: bool = True
    streak: int = 0  # consecutive results that disagree with `healthy`

    def feed(self, ok: bool, check: HealthCheck) -> Hysteresis:
        """Next state after one probe: flip after `fall` failures or `rise` successes in a row."""
        if ok == self.healthy:
            return Hysteresis(self.healthy, 0)
        streak = self.streak + 1
        if streak >= (check.rise if ok else check.fall):
            return Hysteresis(ok, 0)
        return Hysteresis(self.healthy, streak)


@dataclass(frozen=True)
class Transition:
    """A backend changed health."""

    backend: int
    healthy: bool
    reason: str


Observer = Callable[[int, float, bool], None]  # (backend, seconds, ok): e.g. Metrics.observer(service)


class HealthMonitor:
    """Probes every backend each round, concurrently, within the interval, and reports the transitions."""

    def __init__(self, addresses: tuple[str, ...], check: HealthCheck, initially_healthy: bool = True, initial: dict[int, bool] | None = None,
                 prober: Prober | None = None, ports: tuple[int, ...] = (), observe: Observer | None = None) -> None:
        self.addresses = addresses
        self.check = check
        self.prober: Prober = prober or NetworkProber(check, ports)
        self.observe = observe
        start = initial or {}
        self.states = {i + 1: Hysteresis(start.get(i + 1, initially_healthy)) for i in range(len(addresses))}
        self.reasons = {i + 1: "not probed yet" for i in range(len(addresses))}
        self.last_round_s = 0.0
        self.loop = asyncio.new_event_loop()

    def round(self) -> list[Transition]:
        """One probe per backend, all within the interval; the transitions it caused."""
        started = time.monotonic()
        results = self.loop.run_until_complete(self._probe_all())
        self.last_round_s = time.monotonic() - started
        out = []
        for backend, res in enumerate(results, start=1):
            if self.observe is not None:
                self.observe(backend, res.seconds, res.ok)
            out += self._feed(backend, res)
        return out

    def _feed(self, backend: int, res: Probe) -> list[Transition]:
        """Record one result; the transition it caused, if any."""
        old = self.states[backend]
        new = old.feed(res.ok, self.check)
        self.states[backend] = new
        self.reasons[backend] = res.reason
        if new.healthy == old.healthy:
            return []
        log.info("backend %d -> %s (%s)", backend, "healthy" if new.healthy else "failed", res.reason)
        return [Transition(backend, new.healthy, res.reason)]

    async def _probe_all(self) -> list[Probe]:
        """Every backend's probe, at most max_concurrent at once; those unfinished at the interval fail."""
        budget = self.check.interval_ms / 1000 * ROUND_SHARE
        gate = asyncio.Semaphore(self.check.max_concurrent)
        tasks = [asyncio.ensure_future(self._one(gate, b, a)) for b, a in enumerate(self.addresses, start=1)]
        if not tasks:
            return []
        _, pending = await asyncio.wait(tasks, timeout=budget)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return [self._result(t, budget) for t in tasks]

    async def _one(self, gate: asyncio.Semaphore, backend: int, address: str) -> Probe:
        """One probe, once a slot is free; a prober that raises is a failed probe."""
        async with gate:
            started = time.monotonic()
            try:
                res = self.prober(backend, address)
                return await res if inspect.isawaitable(res) else res
            except Exception as exc:  # a prober must never end the loop
                return Probe(False, f"probe error: {type(exc).__name__}: {exc}", time.monotonic() - started)

    @staticmethod
    def _result(task: asyncio.Future[Probe], budget: float) -> Probe:
        """The probe's result, or a failure if it overran the round."""
        if task.cancelled() or not task.done():
            return Probe(False, f"overran the round: no result within the interval ({budget * 1000:g} ms)", budget)
        return task.result()

    def verdicts(self) -> dict[int, bool]:
        """What the checker believes now: backend -> healthy."""
        return {b: h.healthy for b, h in self.states.items()}

    def suspect(self) -> bool:
        """Some backend's last probe disagreed with its state: re-check sooner (like HAProxy's fastinter)."""
        return any(h.streak for h in self.states.values())

    def next_delay(self) -> float:
        """Seconds until the next round: the interval, halved while a transition is pending."""
        interval = self.check.interval_ms / 1000
        return interval / 2 if self.suspect() else interval

    def close(self) -> None:
        """Release the event loop."""
        if not self.loop.is_closed():
            self.loop.close()
