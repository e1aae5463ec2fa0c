"""Prometheus metrics of the controller and the switch, each `Metrics` object with a registry of its own.

What the switch holds (backend states, group membership, open flows, flows dispatched, every lb_drops reason) is
read by `update_from(controller)` into an immutable `Snapshot` that one custom collector renders, so a scrape
never sees half an update and the switch's own counters are exported as counters (a switch restart shows as a
counter reset). What happens in the controller (probes, plan commits, P4Runtime errors) is recorded as it happens.
`serve("127.0.0.1:9100")` exposes the text format over HTTP.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from p4lb.controller.controller import Applied, BackendState, BackendStatus, Controller
from p4lb.controller.errors import GrpcCode, SwitchError
from p4lb.model.ops import Op, Write, op_to_json
from p4lb.model.packet import DropReason
from p4lb.model.pool import Pool

log = logging.getLogger(__name__)

T = TypeVar("T")
PROBE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ProbeResult(enum.Enum):
    """A health probe's verdict (label of p4lb_probe_latency_seconds)."""

    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class Snapshot:
    """What the switch and the operator's sets said at one read."""

    backends: tuple[BackendStatus, ...] = ()
    drops: tuple[tuple[DropReason, int], ...] = ()
    switch_up: bool = False
    taken_at: float = 0.0  # Unix time of the last successful read; 0 if none


def grpc_code(exc: BaseException) -> GrpcCode:
    """The gRPC status code behind an error (its cause chain: grpc.RpcError, p4runtime-shell's wrappers); UNKNOWN if none."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        found = _code_of(e)
        if found is not None:
            return found
        e = e.__cause__ or e.__context__
    return GrpcCode.UNKNOWN


def _code_of(e: BaseException) -> GrpcCode | None:
    """The code one exception carries, if any."""
    if isinstance(e, SwitchError) and e.code is not GrpcCode.UNKNOWN:
        return e.code
    target = getattr(e, "grpc_error", e)  # p4runtime-shell's P4RuntimeException wraps the grpc.RpcError
    code = getattr(target, "code", None)
    if callable(code):
        try:
            return GrpcCode[code().name]
        except (KeyError, AttributeError, TypeError, ValueError):
            return None
    errors = getattr(e, "errors", None)  # P4RuntimeWriteException: [(index, p4.Error)]
    if isinstance(errors, list) and errors:
        try:
            return GrpcCode(errors[0][1].canonical_code)
        except (ValueError, AttributeError, IndexError, TypeError):
            return None
    return None


def snapshot_of(rows: list[BackendStatus], drops: dict[str, int], now: float) -> Snapshot:
    """A Snapshot from controller.status() and controller.drops() (reason names in any case)."""
    by_reason = []
    for name, count in drops.items():
        try:
            by_reason.append((DropReason[name.upper()], int(count)))
        except KeyError:
            log.debug("unknown drop reason %r ignored", name)
    return Snapshot(tuple(rows), tuple(sorted(by_reason)), True, now)


class _SnapshotCollector(Collector):
    """Renders the current Snapshot."""

    def __init__(self, current: Callable[[], Snapshot]) -> None:
        self.current = current

    def collect(self) -> Iterator[Metric]:
        """Every metric read from the switch, from one snapshot."""
        snap = self.current()
        yield _gauge("p4lb_switch_up", "1 if the last read of the switch succeeded", [([], float(snap.switch_up))])
        yield _gauge("p4lb_last_update_timestamp_seconds", "Unix time of the last successful read of the switch", [([], snap.taken_at)])
        yield from _backend_metrics(snap.backends)
        yield from _drop_metrics(dict(snap.drops))

    def describe(self) -> Iterator[Metric]:
        """Nothing up front (the series depend on the config)."""
        return iter(())


def _gauge(name: str, doc: str, samples: list[tuple[list[str], float]], labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=list(labels))
    for values, value in samples:
        g.add_metric(values, value)
    return g


def _counter(name: str, doc: str, samples: list[tuple[list[str], float]], labels: tuple[str, ...] = ()) -> CounterMetricFamily:
    c = CounterMetricFamily(name, doc, labels=list(labels))
    for values, value in samples:
        c.add_metric(values, value)
    return c


def _backend_metrics(rows: tuple[BackendStatus, ...]) -> Iterator[Metric]:
    """Per-backend state (one-hot over BackendState), membership, flows."""
    ids = [str(r.backend) for r in rows]
    yield _gauge("p4lb_backend_state", "1 for the backend's state (failed, draining, inactive, serving), 0 for the others",
                 [([b, s.value], float(r.state is s)) for b, r in zip(ids, rows, strict=True) for s in BackendState], ("backend", "state"))
    yield _gauge("p4lb_backend_info", "The backend's address and switch port", [([b, r.address, str(r.switch_port)], 1.0) for b, r in zip(ids, rows, strict=True)], ("backend", "address", "switch_port"))
    yield _gauge("p4lb_backend_in_group", "1 if the committed round-robin group lists the backend", [([b], float(r.in_group)) for b, r in zip(ids, rows, strict=True)], ("backend",))
    yield _gauge("p4lb_group_size", "Backends in the committed round-robin group", [([], float(sum(r.in_group for r in rows)))])
    yield _gauge("p4lb_backend_open_flows", "Flows pinned to the backend: flow places OPEN on it (backend_open; idle ones until a SYN reclaims them)", [([b], float(r.open_flows)) for b, r in zip(ids, rows, strict=True)], ("backend",))
    yield _gauge("p4lb_open_flows", "Flow places OPEN in the switch's flow table (idle ones until a SYN reclaims them)", [([], float(sum(r.open_flows for r in rows)))])
    yield _counter("p4lb_flows_dispatched", "New flows the switch dispatched to the backend (backend_flows counter)", [([b], float(r.flows_dispatched)) for b, r in zip(ids, rows, strict=True)], ("backend",))


def _drop_metrics(drops: dict[DropReason, int]) -> Iterator[Metric]:
    """lb_drops by reason, and the two that matter most under their own names."""
    counted = [r for r in DropReason if r.counted]
    yield _counter("p4lb_lb_drops", "Packets the switch dropped and counted, by DropReason", [([r.name], float(drops.get(r, 0))) for r in counted] if drops else [], ("reason",))
    if drops:
        yield _counter("p4lb_refused_syns", "New-flow SYNs refused because their flow slot holds another open flow", [([], float(drops.get(DropReason.FLOW_TABLE_FULL, 0)))])
        yield _counter("p4lb_black_holes", "Packets whose backend had no `backend` entry (dropped, never sent to port 0)", [([], float(drops.get(DropReason.NO_BACKEND_ENTRY, 0)))])


class Metrics:
    """The controller's metrics in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        self.registry.register(_SnapshotCollector(self.snapshot))
        self.probe_latency = Histogram("p4lb_probe_latency_seconds", "Health probe duration", ("backend", "result"), buckets=PROBE_BUCKETS, registry=self.registry)
        self.commits = Counter("p4lb_plan_commits", "Plans committed (their last write switched the vip version)", ("op",), registry=self.registry)
        self.commit_duration = Histogram("p4lb_plan_commit_duration_seconds", "Time to carry out an operation whose plan committed", ("op",), buckets=COMMIT_BUCKETS, registry=self.registry)
        self.p4runtime_errors = Counter("p4lb_p4runtime_errors", "Failed switch requests by gRPC status code", ("code",), registry=self.registry)

    def snapshot(self) -> Snapshot:
        """The last values read from the switch."""
        with self._lock:
            return self._snapshot

    # ---- what the switch says ------------------------------------------------------------------------------
    def update_from(self, controller: Controller, quick: bool = False) -> bool:
        """Read status() and drops() in one read (the open-flow counts are the data plane's backend_open, read with the
        counters); `quick`: the tables read quickly (see Controller.status). On a switch error count it, mark the
        switch down and keep the last values."""
        try:
            rows, drops = controller.report(quick=quick)
            snap = snapshot_of(rows, drops, time.time())
        except SwitchError as exc:
            self.record_error(exc)
            with self._lock:
                self._snapshot = replace(self._snapshot, switch_up=False)
            log.warning("metrics: switch read failed: %s", exc)
            return False
        with self._lock:
            self._snapshot = snap
        return True

    # ---- what the controller does --------------------------------------------------------------------------
    def observe_probe(self, backend: int, seconds: float, ok: bool) -> None:
        """One health probe's duration."""
        self.probe_latency.labels(str(backend), (ProbeResult.OK if ok else ProbeResult.FAILED).value).observe(seconds)

    def record_commit(self, op: str, writes: tuple[Write, ...] | list[Write], seconds: float) -> None:
        """An operation's outcome: a commit (and its duration) if its plan wrote anything."""
        if writes:
            self.commits.labels(op).inc()
            self.commit_duration.labels(op).observe(seconds)

    def record_error(self, exc: BaseException) -> None:
        """A failed switch request."""
        self.p4runtime_errors.labels(grpc_code(exc).name).inc()

    def apply(self, controller: Controller, op: Op) -> Applied:
        """controller.apply(op), timed and recorded."""
        return self._timed(op_to_json(op)["op"], lambda: controller.apply(op), lambda a: a.writes)

    def converge(self, controller: Controller, update: Callable[[Pool], Pool], why: str, thorough: bool = True) -> Applied:
        """controller.converge(update, why, thorough), timed and recorded under the label `why`."""
        return self._timed(why, lambda: controller.converge(update, why, thorough), lambda a: a.writes)

    def deploy(self, controller: Controller) -> list[Write]:
        """controller.deploy(), timed and recorded."""
        return self._timed("deploy", controller.deploy, lambda w: w)

    def _timed(self, op: str, call: Callable[[], T], writes_of: Callable[[T], tuple[Write, ...] | list[Write]]) -> T:
        started = time.monotonic()
        try:
            result = call()
        except SwitchError as exc:
            self.record_error(exc)
            raise
        self.record_commit(op, writes_of(result), time.monotonic() - started)
        return result

    # ---- exposition ----------------------------------------------------------------------------------------
    def serve(self, address: str) -> MetricsServer:
        """Serve the text format at http://ADDRESS/metrics (host:port; port 0 picks a free one)."""
        host, port = parse_address(address)
        server, thread = start_http_server(port, host, registry=self.registry)
        bound = f"{host}:{server.server_port}"
        log.info("metrics on http://%s/metrics", bound)
        return MetricsServer(bound, server, thread)


@dataclass(frozen=True)
class MetricsServer:
    """A running metrics HTTP server."""

    address: str  # host:port actually bound
    server: object = field(repr=False)
    thread: threading.Thread = field(repr=False)

    @property
    def url(self) -> str:
        """The scrape URL."""
        return f"http://{self.address}/metrics"

    def stop(self, timeout_s: float = 5.0) -> None:
        """Shut the server down and close its socket."""
        self.server.shutdown()  # type: ignore[attr-defined]
        self.server.server_close()  # type: ignore[attr-defined]
        self.thread.join(timeout_s)


def parse_address(address: str) -> tuple[str, int]:
    """'127.0.0.1:9100' -> ('127.0.0.1', 9100); ValueError naming the fix otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics address {address!r} is invalid: use host:port, e.g. 127.0.0.1:9100")
    return host.strip("[]"), int(port)
