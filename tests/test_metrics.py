"""Prometheus metrics: scraped over HTTP on 127.0.0.1 and parsed, with values from a model-backed controller (and
P4Runtime errors from the fake P4Runtime switch)."""

from __future__ import annotations

import faulthandler
import urllib.error
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from p4lb.controller.controller import BackendState, Controller
from p4lb.controller.errors import SwitchError
from p4lb.controller.metrics import GrpcCode, Metrics, grpc_code, parse_address
from p4lb.controller.settings import Settings, parse, parse_config
from p4lb.controller.switch import ModelSwitch, P4RuntimeSwitch
from p4lb.lab.fake_p4rt import FakeP4Runtime, Rpc
from p4lb.model.config import P4LB_BUCKET, P4LB_TABLE_BITS, P4LB_WAYS
from p4lb.model.crc import ip
from p4lb.model.ops import Drain, Fail, Scale
from p4lb.model.p4lb import P4LB, p4lb_packet
from p4lb.model.packet import ACK, FIN, SYN, DropReason, Packet

BACKENDS = [{"address": f"10.0.{i + 1}.{i + 1}", "mac": f"00:00:00:00:0{i + 1}:0{i + 1}", "port": i + 1} for i in range(1, 5)]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def watchdog():
    """A hung test kills the run (with stacks) instead of hanging it."""
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def settings_for(grpc_addr: str = "127.0.0.1:9559", table_bits: int = 3, ways: int = 1, bucket: int = 1) -> Settings:
    """Settings for a small one-way table, or (for a switch) the compiled shape."""
    return parse({"vip": {"address": "10.0.0.1", "port": 80}, "backend": [dict(b) for b in BACKENDS], "flows": {"table_bits": table_bits, "ways": ways, "bucket": bucket}, "switch": {"grpc": grpc_addr}})


@pytest.fixture
def metrics():
    return Metrics()


@pytest.fixture
def served(metrics):
    server = metrics.serve("127.0.0.1:0")
    yield server
    server.stop()


def scrape(url: str) -> Samples:
    """Every sample of one scrape: (name, labels) -> value."""
    with urllib.request.urlopen(url, timeout=5) as rep:
        text = rep.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def traffic(sw: ModelSwitch, packets: list[Packet]) -> None:
    for pkt in packets:
        sw.state, _ = p4lb_packet(sw.cfg, P4LB, sw.state, pkt)


def test_scrape_shows_what_the_controller_reads(metrics, served):
    s = settings_for()
    sw = ModelSwitch(s.lb)
    ctl = Controller(s, sw, grace_s=0)
    metrics.deploy(ctl)
    client = ip("10.0.0.9")
    traffic(sw, [Packet(client, 1000 + i, SYN, 10 + i) for i in range(12)] + [Packet(client, 1000, ACK, 40), Packet(client, 7, ACK, 41), Packet(client, 8, SYN | FIN, 42)])
    metrics.apply(ctl, Fail(2))
    metrics.apply(ctl, Drain(3))
    metrics.apply(ctl, Scale(3))
    metrics.apply(ctl, Scale(3))  # nothing to write: not a commit
    metrics.observe_probe("default", 1, 0.002, ok=True)
    metrics.observe_probe("default", 2, 0.5, ok=False)
    assert metrics.update_from(ctl)
    got = scrape(served.url)

    rows = {r.backend: r for r in ctl.status()}
    want_state = {1: BackendState.SERVING, 2: BackendState.FAILED, 3: BackendState.DRAINING, 4: BackendState.INACTIVE}
    for b, state in want_state.items():
        for s_ in BackendState:
            assert value(got, "p4lb_backend_state", service="default", backend=str(b), state=s_.value) == float(s_ is state)
        assert value(got, "p4lb_backend_in_group", service="default", backend=str(b)) == float(b == 1)
        assert value(got, "p4lb_backend_open_flows", service="default", backend=str(b)) == rows[b].open_flows
        assert value(got, "p4lb_flows_dispatched_total", service="default", backend=str(b)) == rows[b].flows_dispatched == sw.state.backend_flows.get(b, 0)
    assert value(got, "p4lb_backend_info", service="default", backend="1", address="10.0.2.2", switch_port="2") == 1
    assert value(got, "p4lb_group_size", service="default") == 1
    assert value(got, "p4lb_open_flows", service="default") == sum(r.open_flows for r in rows.values()) > 0
    for reason in DropReason:
        if reason.counted:
            assert value(got, "p4lb_lb_drops_total", service="default", reason=reason.name) == sw.state.lb_drops[reason]
    assert value(got, "p4lb_refused_syns_total", service="default") == sw.state.lb_drops[DropReason.FLOW_TABLE_FULL] > 0  # 8 slots, 12 SYNs
    assert value(got, "p4lb_black_holes_total", service="default") == 0
    assert value(got, "p4lb_lb_drops_total", service="default", reason="UNKNOWN_FLOW") == 1 and value(got, "p4lb_lb_drops_total", service="default", reason="MALFORMED") == 1
    assert value(got, "p4lb_switch_up") == 1 and value(got, "p4lb_last_update_timestamp_seconds", service="default") > 0

    for op in ("deploy", "fail", "drain", "scale"):
        assert value(got, "p4lb_plan_commits_total", service="default", op=op) == 1
        assert value(got, "p4lb_plan_commit_duration_seconds_count", service="default", op=op) == 1
    assert value(got, "p4lb_probe_latency_seconds_count", service="default", backend="1", result="ok") == 1
    assert value(got, "p4lb_probe_latency_seconds_bucket", service="default", backend="2", result="failed", le="0.25") == 0
    assert value(got, "p4lb_probe_latency_seconds_bucket", service="default", backend="2", result="failed", le="0.5") == 1


# ---- several services: one endpoint, a service label ---------------------------------------------------------
def two_services() -> tuple[Settings, Settings]:
    """web: 4 backends (id 0, port 80); api: 2 backends (id 5, port 8080), small one-way tables."""
    api_backends = [{"address": f"10.0.9.{i}", "mac": f"00:00:00:00:09:0{i}", "port": 10 + i} for i in (1, 2)]
    doc = {"flows": {"table_bits": 8, "ways": 1, "bucket": 1},
           "service": [{"name": "web", "address": "10.0.0.1", "port": 80, "id": 0, "backend": [dict(b) for b in BACKENDS]},
                       {"name": "api", "address": "10.0.0.1", "port": 8080, "id": 5, "backend": api_backends}]}
    web, api = parse_config(doc).services
    return web, api


def series(samples: Samples, name: str, service: str) -> dict[frozenset[tuple[str, str]], float]:
    """A metric's samples of one service, by their other labels."""
    return {frozenset((k, v) for k, v in labels if k != "service"): val for (n, labels), val in samples.items() if n == name and ("service", service) in labels}


def test_one_scrape_shows_every_service_under_its_own_label(served, metrics):
    web, api = two_services()
    ctls = {s.name: Controller(s, ModelSwitch(s.lb), grace_s=0) for s in (web, api)}
    for ctl in ctls.values():
        metrics.deploy(ctl)
    client = ip("10.0.0.9")
    traffic(ctls["web"].switch, [Packet(client, 1000 + i, SYN, 10 + i) for i in range(3)])  # web: 3 flows
    traffic(ctls["api"].switch, [Packet(client, 2000, SYN, 10, 5), Packet(client, 7, ACK, 11, 5), Packet(client, 8, ACK, 12, 5)])  # api: 1 flow, 2 unknown
    metrics.apply(ctls["web"], Fail(2))
    metrics.apply(ctls["api"], Drain(1))
    metrics.apply(ctls["api"], Scale(1))
    metrics.observe_probe("api", 2, 0.5, ok=False)
    for ctl in ctls.values():
        assert metrics.update_from(ctl)
    got = scrape(served.url)

    assert {s for (_, labels) in got for k, s in labels if k == "service"} == {"web", "api"}
    for name, ctl in ctls.items():
        rows = {r.backend: r for r in ctl.status()}
        assert {dict(k)["backend"] for k in series(got, "p4lb_backend_in_group", name)} == {str(b) for b in rows}  # its own backends, no other's
        for b, r in rows.items():
            assert value(got, "p4lb_backend_state", service=name, backend=str(b), state=r.state.value) == 1
            assert value(got, "p4lb_backend_in_group", service=name, backend=str(b)) == float(r.in_group)
            assert value(got, "p4lb_backend_open_flows", service=name, backend=str(b)) == r.open_flows
            assert value(got, "p4lb_flows_dispatched_total", service=name, backend=str(b)) == r.flows_dispatched
        assert value(got, "p4lb_group_size", service=name) == sum(r.in_group for r in rows.values())
        assert value(got, "p4lb_open_flows", service=name) == sum(r.open_flows for r in rows.values())
        assert value(got, "p4lb_last_update_timestamp_seconds", service=name) > 0
        for reason in DropReason:
            if reason.counted:
                assert value(got, "p4lb_lb_drops_total", service=name, reason=reason.name) == ctl.switch.state.lb_drops[reason]
    # the values that tell the services apart: 4 backends and 2, groups (1, 3, 4) and (2,), 3 open flows and 1
    assert len(series(got, "p4lb_backend_info", "web")) == 4 and len(series(got, "p4lb_backend_info", "api")) == 2
    assert value(got, "p4lb_backend_info", service="api", backend="1", address="10.0.9.1", switch_port="11") == 1
    assert (value(got, "p4lb_group_size", service="web"), value(got, "p4lb_group_size", service="api")) == (3, 0)
    assert value(got, "p4lb_backend_state", service="web", backend="2", state="failed") == 1
    assert value(got, "p4lb_backend_state", service="api", backend="1", state="draining") == 1
    assert value(got, "p4lb_backend_state", service="api", backend="2", state="inactive") == 1
    assert (value(got, "p4lb_open_flows", service="web"), value(got, "p4lb_open_flows", service="api")) == (3, 1)
    assert value(got, "p4lb_lb_drops_total", service="api", reason="UNKNOWN_FLOW") == 2 and value(got, "p4lb_lb_drops_total", service="web", reason="UNKNOWN_FLOW") == 0
    assert value(got, "p4lb_plan_commits_total", service="web", op="fail") == 1 and value(got, "p4lb_plan_commits_total", service="api", op="drain") == 1
    assert ("p4lb_plan_commits_total", frozenset({("service", "web"), ("op", "drain")})) not in got
    assert value(got, "p4lb_plan_commits_total", service="api", op="deploy") == value(got, "p4lb_plan_commits_total", service="web", op="deploy") == 1
    assert value(got, "p4lb_probe_latency_seconds_count", service="api", backend="2", result="failed") == 1
    assert ("p4lb_probe_latency_seconds_count", frozenset({("service", "web"), ("backend", "2"), ("result", "failed")})) not in got
    assert value(got, "p4lb_switch_up") == 1  # one switch: unlabelled


def test_the_switch_is_up_only_when_every_services_last_read_succeeded():
    web, api = two_services()
    metrics = Metrics(["web", "api"])
    assert [s.switch_up for s in metrics.snapshots().values()] == [False, False] and list(metrics.snapshots()) == ["web", "api"]
    up = metrics.registry.get_sample_value
    assert up("p4lb_switch_up") == 0 and up("p4lb_last_update_timestamp_seconds", {"service": "api"}) == 0
    ctl = Controller(web, ModelSwitch(web.lb), grace_s=0)
    ctl.deploy()
    assert metrics.update_from(ctl) and up("p4lb_switch_up") == 0  # api not read yet
    before = metrics.snapshots()
    assert metrics.update_from(Controller(api, ModelSwitch(api.lb), grace_s=0))
    assert up("p4lb_switch_up") == 1 and before["api"].taken_at == 0  # a published set is never changed in place
    assert metrics.snapshot("web").backends and len(metrics.snapshot("api").backends) == 2


def test_before_any_read_the_switch_is_down_and_no_backend_is_listed(metrics, served):
    got = scrape(served.url)
    assert value(got, "p4lb_switch_up") == 0
    assert not [k for k in got if k[0].startswith("p4lb_backend")]


def test_registries_are_separate():
    a, b = Metrics(), Metrics()
    a.observe_probe("default", 1, 0.01, ok=True)
    assert a.registry.get_sample_value("p4lb_probe_latency_seconds_count", {"service": "default", "backend": "1", "result": "ok"}) == 1
    assert b.registry.get_sample_value("p4lb_probe_latency_seconds_count", {"service": "default", "backend": "1", "result": "ok"}) is None


def test_p4runtime_errors_are_counted_by_status_code(metrics, served):
    with FakeP4Runtime() as fake:
        s = settings_for(fake.address, table_bits=P4LB_TABLE_BITS, ways=P4LB_WAYS, bucket=P4LB_BUCKET)
        t = s.switch
        sw = P4RuntimeSwitch(t.grpc, t.device_id, t.election_id, t.p4info, t.bmv2_json, s.lb)
        try:
            ctl = Controller(s, sw, grace_s=0)
            metrics.deploy(ctl)
            assert metrics.update_from(ctl)
            fake.fail(Rpc.READ, grpc.StatusCode.UNAVAILABLE, times=2)  # the retry after reconnecting fails too
            assert not metrics.update_from(ctl)
            fake.fail(Rpc.WRITE, grpc.StatusCode.RESOURCE_EXHAUSTED)
            with pytest.raises(SwitchError):
                metrics.apply(ctl, Fail(2))
            got = scrape(served.url)
        finally:
            sw.close()
    assert value(got, "p4lb_p4runtime_errors_total", service="default", code="UNAVAILABLE") == 1
    assert value(got, "p4lb_p4runtime_errors_total", service="default", code="RESOURCE_EXHAUSTED") == 1
    assert value(got, "p4lb_switch_up") == 0
    assert value(got, "p4lb_backend_in_group", service="default", backend="2") == 1  # the last values read are kept
    assert ("p4lb_plan_commits_total", frozenset({("service", "default"), ("op", "fail")})) not in got


def test_grpc_code_of_errors_without_a_status_is_unknown():
    assert grpc_code(SwitchError("no PacketIn")) is GrpcCode.UNKNOWN


def test_server_stops_and_address_is_checked(metrics):
    server = metrics.serve("127.0.0.1:0")
    assert scrape(server.url)
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=2)
    for bad in ("9100", "127.0.0.1:", "127.0.0.1:http", ":9100"):
        with pytest.raises(ValueError, match="host:port"):
            parse_address(bad)


# ---- wired into the health loop ---------------------------------------------------------------------------------
def test_the_health_loop_feeds_the_metrics(metrics, served):
    from p4lb.controller.health import Probe  # noqa: PLC0415
    from p4lb.controller.loop import HealthLoop  # noqa: PLC0415

    s = settings_for()
    ctl = Controller(s, ModelSwitch(s.lb), grace_s=0)
    ctl.deploy()
    loop = HealthLoop(ctl, prober=lambda b, a: Probe(b != 3, "test"), metrics=metrics)
    try:
        for _ in range(3):
            loop.round()
    finally:
        loop.monitor.close()
    got = scrape(served.url)
    assert value(got, "p4lb_probe_latency_seconds_count", service="default", backend="3", result="failed") == 3
    assert value(got, "p4lb_probe_latency_seconds_count", service="default", backend="1", result="ok") == 3
    assert value(got, "p4lb_plan_commits_total", service="default", op="health") == 1  # fall 2: one commit, in the second round
    assert value(got, "p4lb_backend_state", service="default", backend="3", state="failed") == 1 and value(got, "p4lb_switch_up") == 1


def test_p4lb_run_serves_metrics(tmp_path):
    run_and_scrape(tmp_path, "p4lb.example.toml", ("default",))


def test_p4lb_run_serves_every_services_metrics(tmp_path):
    got = run_and_scrape(tmp_path, "p4lb.multi.example.toml", ("web", "api"))
    assert len(series(got, "p4lb_backend_info", "web")) == 2 and len(series(got, "p4lb_backend_info", "api")) == 2
    assert value(got, "p4lb_backend_info", service="api", backend="1", address="10.0.4.4", switch_port="4") == 1


def run_and_scrape(tmp_path, example: str, services: tuple[str, ...]) -> Samples:
    """`p4lb --dry-run run --metrics` on an example config in a process of its own: every service's series, the
    first scrape and once the first round's probes landed; the last scrape."""
    import shutil  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    cfg = tmp_path / "p4lb.toml"
    shutil.copy(Path(__file__).resolve().parents[1] / example, cfg)
    cmd = [sys.executable, "-c", "import sys; from p4lb.controller.cli import main; sys.exit(main())", "-c", str(cfg), "--dry-run", "run", "--rounds", "30", "--metrics", "127.0.0.1:0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**__import__("os").environ, "XDG_RUNTIME_DIR": str(tmp_path / "run")})
    try:
        line = proc.stdout.readline()
        assert line.startswith("metrics on http://127.0.0.1:"), line + proc.stderr.read()
        got = scrape(line.split()[-1])
        assert value(got, "p4lb_switch_up") == 1
        for name in services:
            assert value(got, "p4lb_backend_in_group", service=name, backend="1") == 1
        for _ in range(100):  # the first round's probes land within an interval
            got = scrape(line.split()[-1])
            if all(("p4lb_probe_latency_seconds_count", frozenset({("service", name), ("backend", "1"), ("result", "ok")})) in got for name in services):
                break
            __import__("time").sleep(0.02)
        for name in services:
            assert value(got, "p4lb_probe_latency_seconds_count", service=name, backend="1", result="ok") >= 1
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    return got
