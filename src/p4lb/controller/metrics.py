"""Prometheus metrics of the controller and the switch, each `Metrics` object with a registry of its own.

One `Metrics` serves every service a `p4lb run` runs. What the switch holds of a service (backend states, group
membership, open flows, flows dispatched, every lb_drops reason) is read by `update_from(controller)` into an
immutable `Snapshot` of that service; one custom collector renders every service's current Snapshot, so a scrape
never sees half an update of any service, and the switch's own counters are exported as counters (a switch
restart shows as a counter reset). What happens in the controller (probes, plan commits, P4Runtime errors) is
recorded as it happens. Every metric about one service carries a `service` label, its name (`default` in the
single form); `p4lb_switch_up` alone is unlabelled: the switch and its session are one for every service.
`serve("127.0.0.1:9100")` exposes the text format over HTTP.
"""

from __future__ import annotations

import enum
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
SERVICE = "service"  # the label naming a service's series: its name ("default" in the single form)


class ProbeResult(enum.Enum):
    """A health probe's verdict (label of p4lb_probe_latency_seconds)."""

    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class Snapshot:
    """What the switch and the operator's sets said of one service at one read."""

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
    """Renders every service's current Snapshot (read once per scrape: each is immutable)."""

    def __init__(self, current: Callable[[], Mapping[str, Snapshot]]) -> None:
        self.current = current

    def collect(self) -> Iterator[Metric]:
        """Every metric read from the switch, from one snapshot per service; each family holds every service's
        series (one family per name, as the text format requires)."""
        snaps = self.current()
        up = bool(snaps) and all(s.switch_up for s in snaps.values())
        yield _gauge("p4lb_switch_up", "1 if the last read of every service's state on the switch succeeded", [([], float(up))])
        yield _gauge("p4lb_last_update_timestamp_seconds", "Unix time of the last successful read of the service's state on the switch (0: none yet)",
                     [([name], s.taken_at) for name, s in snaps.items()], (SERVICE,))
        yield from _backend_metrics(snaps)
        yield from _drop_metrics(snaps)

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


def _backend_metrics(snaps: Mapping[str, Snapshot]) -> Iterator[Metric]:
    """Per-backend state (one-hot over BackendState), membership, flows; the group's size and open flows per service."""
    rows = [(name, str(r.backend), r) for name, s in snaps.items() for r in s.backends]
    read = [(name, s.backends) for name, s in snaps.items() if s.backends]
    yield _gauge("p4lb_backend_state", "1 for the backend's state (failed, draining, inactive, serving), 0 for the others",
                 [([n, b, st.value], float(r.state is st)) for n, b, r in rows for st in BackendState], (SERVICE, "backend", "state"))
    yield _gauge("p4lb_backend_info", "The backend's address and switch port", [([n, b, r.address, str(r.switch_port)], 1.0) for n, b, r in rows], (SERVICE, "backend", "address", "switch_port"))
    yield _gauge("p4lb_backend_in_group", "1 if the service's committed round-robin group lists the backend", [([n, b], float(r.in_group)) for n, b, r in rows], (SERVICE, "backend"))
    yield _gauge("p4lb_group_size", "Backends in the service's committed round-robin group", [([n], float(sum(r.in_group for r in rs))) for n, rs in read], (SERVICE,))
    yield _gauge("p4lb_backend_open_flows", "Flows pinned to the backend: flow places OPEN on it (backend_open; idle ones until a SYN reclaims them)", [([n, b], float(r.open_flows)) for n, b, r in rows], (SERVICE, "backend"))
    yield _gauge("p4lb_open_flows", "Flow places OPEN in the switch's flow table holding the service's flows (idle ones until a SYN reclaims them)", [([n], float(sum(r.open_flows for r in rs))) for n, rs in read], (SERVICE,))
    yield _counter("p4lb_flows_dispatched", "New flows the switch dispatched to the backend (backend_flows counter)", [([n, b], float(r.flows_dispatched)) for n, b, r in rows], (SERVICE, "backend"))


def _drop_metrics(snaps: Mapping[str, Snapshot]) -> Iterator[Metric]:
    """lb_drops by service and reason, and the two that matter most under their own names (services read so far)."""
    counted = [r for r in DropReason if r.counted]
    read = [(name, dict(s.drops)) for name, s in snaps.items() if s.drops]
    yield _counter("p4lb_lb_drops", "Packets of the service the switch dropped and counted, by DropReason", [([n, r.name], float(d.get(r, 0))) for n, d in read for r in counted], (SERVICE, "reason"))
    if read:
        yield _counter("p4lb_refused_syns", "New-flow SYNs refused because their flow slot holds another open flow", [([n], float(d.get(DropReason.FLOW_TABLE_FULL, 0))) for n, d in read], (SERVICE,))
        yield _counter("p4lb_black_holes", "Packets whose backend had no `backend` entry (dropped, never sent to port 0)", [([n], float(d.get(DropReason.NO_BACKEND_ENTRY, 0))) for n, d in read], (SERVICE,))


class Metrics:
    """The controller's metrics in a registry of their own: every service's, each series labelled with its name."""

    def __init__(self, services: Sequence[str] = ()) -> None:
        """`services`: names listed (switch down, nothing read) from the first scrape, in this order."""
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._snapshots: Mapping[str, Snapshot] = {name: Snapshot() for name in services}  # replaced whole, never changed in place
        self.registry.register(_SnapshotCollector(self.snapshots))
        self.probe_latency = Histogram("p4lb_probe_latency_seconds", "Health probe duration", (SERVICE, "backend", "result"), buckets=PROBE_BUCKETS, registry=self.registry)
        self.commits = Counter("p4lb_plan_commits", "Plans committed (their last write switched the service's vip version)", (SERVICE, "op"), registry=self.registry)
        self.commit_duration = Histogram("p4lb_plan_commit_duration_seconds", "Time to carry out an operation whose plan committed", (SERVICE, "op"), buckets=COMMIT_BUCKETS, registry=self.registry)
        self.p4runtime_errors = Counter("p4lb_p4runtime_errors", "Failed switch requests made for the service, by gRPC status code", (SERVICE, "code"), registry=self.registry)

    def snapshots(self) -> Mapping[str, Snapshot]:
        """Every service's last values read from the switch, by name (one consistent set: do not change it)."""
        with self._lock:
            return self._snapshots

    def snapshot(self, service: str) -> Snapshot:
        """One service's last values read from the switch (an empty Snapshot before its first read)."""
        return self.snapshots().get(service, Snapshot())

    def _publish(self, service: str, update: Callable[[Snapshot], Snapshot]) -> None:
        """Replace one service's Snapshot, the others kept: a scrape sees the old set or the new one."""
        with self._lock:
            self._snapshots = {**self._snapshots, service: update(self._snapshots.get(service, Snapshot()))}

    # ---- what the switch says ------------------------------------------------------------------------------
    def update_from(self, controller: Controller, quick: bool = False) -> bool:
        """Read the controller's service: status() and drops() in one read (the open-flow counts are the data plane's
        backend_open, read with the counters); `quick`: the tables read quickly (see Controller.status). On a switch
        error count it, mark the service's read failed (so the switch down) and keep its last values."""
        service = controller.settings.name
        try:
            rows, drops = controller.report(quick=quick)
            snap = snapshot_of(rows, drops, time.time())
        except SwitchError as exc:
            self.record_error(service, exc)
            self._publish(service, lambda old: replace(old, switch_up=False))
            log.warning("metrics: switch read of service %s failed: %s", service, exc)
            return False
        self._publish(service, lambda _: snap)
        return True

    # ---- what the controller does --------------------------------------------------------------------------
    def observe_probe(self, service: str, backend: int, seconds: float, ok: bool) -> None:
        """One health probe's duration."""
        self.probe_latency.labels(service, str(backend), (ProbeResult.OK if ok else ProbeResult.FAILED).value).observe(seconds)

    def observer(self, service: str) -> Callable[[int, float, bool], None]:
        """observe_probe for one service, as a HealthMonitor's observer (backend, seconds, ok)."""
        return functools.partial(self.observe_probe, service)

    def record_commit(self, service: str, op: str, writes: tuple[Write, ...] | list[Write], seconds: float) -> None:
        """An operation's outcome: a commit (and its duration) if its plan wrote anything."""
        if writes:
            self.commits.labels(service, op).inc()
            self.commit_duration.labels(service, op).observe(seconds)

    def record_error(self, service: str, exc: BaseException) -> None:
        """A failed switch request made for the service."""
        self.p4runtime_errors.labels(service, grpc_code(exc).name).inc()

    def apply(self, controller: Controller, op: Op) -> Applied:
        """controller.apply(op), timed and recorded."""
        return self._timed(controller, op_to_json(op)["op"], lambda: controller.apply(op), lambda a: a.writes)

    def converge(self, controller: Controller, update: Callable[[Pool], Pool], why: str, thorough: bool = True) -> Applied:
        """controller.converge(update, why, thorough), timed and recorded under the label `why`."""
        return self._timed(controller, why, lambda: controller.converge(update, why, thorough), lambda a: a.writes)

    def deploy(self, controller: Controller) -> list[Write]:
        """controller.deploy(), timed and recorded."""
        return self._timed(controller, "deploy", controller.deploy, lambda w: w)

    def _timed(self, controller: Controller, op: str, call: Callable[[], T], writes_of: Callable[[T], tuple[Write, ...] | list[Write]]) -> T:
        service = controller.settings.name
        started = time.monotonic()
        try:
            result = call()
        except SwitchError as exc:
            self.record_error(service, exc)
            raise
        self.record_commit(service, op, writes_of(result), time.monotonic() - started)
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
