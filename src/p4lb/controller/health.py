"""Backend health checks (TCP connect or HTTP GET) with rise/fall hysteresis."""

from __future__ import annotations

import http.client
import logging
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from p4lb.controller.settings import HealthCheck

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Probe:
    """One check's result."""

    ok: bool
    reason: str


def probe(address: str, check: HealthCheck) -> Probe:
    """Check one backend once, within check.timeout_ms."""
    timeout = check.timeout_ms / 1000
    try:
        if check.kind == "tcp":
            with socket.create_connection((address, check.port), timeout=timeout):
                return Probe(True, "tcp connect ok")
        conn = http.client.HTTPConnection(address, check.port, timeout=timeout)
        try:
            conn.request("GET", check.path, headers={"User-Agent": "p4lb-health"})
            status = conn.getresponse().status
        finally:
            conn.close()
        if status != check.expect_status:
            return Probe(False, f"http GET {check.path}: status {status}, expected {check.expect_status}")
        return Probe(True, f"http GET {check.path}: {status}")
    except (OSError, http.client.HTTPException) as exc:
        return Probe(False, f"{check.kind} {address}:{check.port}: {type(exc).__name__}: {exc}")


Prober = Callable[[int, str], Probe]  # (backend id, health address) -> result


@dataclass(frozen=True)
class NetworkProber:
    """Real checks: TCP connect or HTTP GET to the backend's health address."""

    check: HealthCheck

    def __call__(self, backend: int, address: str) -> Probe:
        """Probe `address` once."""
        return probe(address, self.check)


@dataclass(frozen=True)
class StateProber:
    """Dry run: nothing leaves the process; each verdict is what the operator's healthy set says now."""

    healthy: Callable[[], frozenset[int]]

    def __call__(self, backend: int, address: str) -> Probe:
        """The state's verdict for `backend`; `address` is never contacted."""
        ok = backend in self.healthy()
        return Probe(ok, f"dry run: {'healthy' if ok else 'failed'} in the state file, not probed")


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


class HealthMonitor:
    """Probes every backend each round, in parallel, and reports the transitions."""

    def __init__(self, addresses: tuple[str, ...], check: HealthCheck, initially_healthy: bool = True, initial: dict[int, bool] | None = None, prober: Prober | None = None) -> None:
        self.addresses = addresses
        self.check = check
        self.prober = prober or NetworkProber(check)
        start = initial or {}
        self.states = {i + 1: Hysteresis(start.get(i + 1, initially_healthy)) for i in range(len(addresses))}
        self.reasons = {i + 1: "not probed yet" for i in range(len(addresses))}
        self.pool = ThreadPoolExecutor(max_workers=min(32, max(1, len(addresses))), thread_name_prefix="health")

    def round(self) -> list[Transition]:
        """One probe per backend; the transitions it caused."""
        results = list(self.pool.map(self.prober, range(1, len(self.addresses) + 1), self.addresses))
        out = []
        for backend, res in enumerate(results, start=1):
            old = self.states[backend]
            new = old.feed(res.ok, self.check)
            self.states[backend] = new
            self.reasons[backend] = res.reason
            if new.healthy != old.healthy:
                out.append(Transition(backend, new.healthy, res.reason))
                log.info("backend %d -> %s (%s)", backend, "healthy" if new.healthy else "failed", res.reason)
        return out

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
        """Stop the worker threads."""
        self.pool.shutdown(wait=True)
