"""Controller: configuration errors, health checks on 127.0.0.1, plans executed as proven, reconcile."""

import http.server
import json
import socket
import threading
import time

import pytest

from p4lb.controller import cli
from p4lb.controller.controller import Controller
from p4lb.controller.errors import ConfigFileError, ControllerError
from p4lb.controller.health import Hysteresis, probe
from p4lb.controller.settings import HealthCheck, load, parse
from p4lb.controller.switch import ModelSwitch
from p4lb.model.config import P4LB_TABLE_BITS, default_backends
from p4lb.model.ops import Drain, Fail, Heal, Scale
from p4lb.model.p4lb import P4LB, p4lb_plan
from p4lb.model.packet import flow_key
from p4lb.model.pool import Pool

BACKENDS = [{"address": f"10.0.{i + 1}.{i + 1}", "mac": f"00:00:00:00:0{i + 1}:0{i + 1}", "port": i + 1} for i in range(1, 5)]


def config(**over):
    data = {"vip": {"address": "10.0.0.1", "port": 80}, "backend": [dict(b) for b in BACKENDS], "health": {"kind": "tcp", "interval_ms": 100, "timeout_ms": 50}}
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            if section == "backend0":
                data["backend"][0][field] = value
            else:
                data.setdefault(section, {})[field] = value
        else:
            data[section] = value
    return data


BAD = [
    ("vip__address", "10.0.0", "vip.address"),
    ("vip__port", 0, "vip.port"),
    ("backend0__mac", "zz:00", "backend[0].mac"),
    ("backend0__port", 600, "backend[0].port"),
    ("backend0__address", "10.0.0.1", "backend[0].address"),
    ("health__kind", "icmp", "health.kind"),
    ("health__timeout_ms", 500, "health.timeout_ms"),
    ("health__rise", 0, "health.rise"),
    ("flows__table_bits", 99, "flows.table_bits"),
    ("active", 9, "active"),
    ("switch__grpc", "nowhere", "switch.grpc"),
]


@pytest.mark.parametrize(("key", "value", "field"), BAD)
def test_bad_config_field_is_named_and_nothing_is_written(key, value, field, tmp_path, monkeypatch):
    with pytest.raises(ConfigFileError) as err:
        parse(config(**{key: value}))
    assert err.value.field == field and "invalid" in str(err.value)
    path = tmp_path / "p4lb.toml"
    path.write_text(_toml(config(**{key: value})))
    made = []
    monkeypatch.setattr(cli, "make_switch", lambda *a: made.append(a) or ModelSwitch(None))
    assert cli.main(["-c", str(path), "deploy"]) == cli.EXIT_INPUT
    assert made == []  # no switch was even contacted


def _toml(data) -> str:
    lines = []
    for key, value in data.items():
        if not isinstance(value, (dict, list)):
            lines.append(f"{key} = {json.dumps(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in value.items()]
        elif isinstance(value, list):
            for item in value:
                lines.append(f"[[{key}]]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def test_config_file_roundtrip(tmp_path):
    path = tmp_path / "p4lb.toml"
    path.write_text(_toml(config()))
    s = load(path)
    assert s.lb.n == 4 and s.health.interval_ms == 100 and s.active == 4


# ---- health checks against real servers on 127.0.0.1 -------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    status = 200
    delay = 0.0

    def do_GET(self):  # noqa: N802
        time.sleep(self.delay)
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    started = []

    def start(status=200, delay=0.0):
        handler = type("H", (Handler,), {"status": status, "delay": delay})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
        return srv.server_address[1]

    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tcp_up_and_down(server):
    assert probe("127.0.0.1", HealthCheck("tcp", server(), timeout_ms=200)).ok
    assert not probe("127.0.0.1", HealthCheck("tcp", free_port(), timeout_ms=200)).ok


def test_http_status_and_slow(server):
    assert probe("127.0.0.1", HealthCheck("http", server(200), "/", 200, timeout_ms=500)).ok
    bad = probe("127.0.0.1", HealthCheck("http", server(500), "/", 200, timeout_ms=500))
    assert not bad.ok and "status 500" in bad.reason
    slow = probe("127.0.0.1", HealthCheck("http", server(200, delay=0.5), "/", 200, timeout_ms=100))
    assert not slow.ok and "timeout" in slow.reason.lower()


def test_flapping_is_damped_by_rise_and_fall():
    check = HealthCheck(rise=2, fall=3)
    h = Hysteresis(True)
    seen = []
    for ok in [False, False, True, False, False, False, True, True]:
        h = h.feed(ok, check)
        seen.append(h.healthy)
    assert seen == [True, True, True, True, True, False, False, True]


# ---- controller on the executable model -------------------------------------------------------------------


def controller(active=4):
    s = parse(config(active=active))
    return Controller(s, ModelSwitch(s.lb), grace_s=0)


def test_operations_execute_the_models_plan():
    ctl = controller()
    ctl.deploy()
    before = ctl.switch.state
    expected = p4lb_plan(P4LB, before, Fail(2).apply(ctl.pool))
    applied = ctl.apply(Fail(2))
    assert list(applied.writes) == expected
    assert ctl.switch.state.members(ctl.switch.state.version) == (1, 4, 3) == applied.group  # 4 took 2's place; 1 and 3 stayed
    for op, group in ((Drain(3), (1, 4)), (Scale(2), (1,)), (Heal(2), (1, 2))):
        ctl.apply(op)
        assert ctl.switch.state.members(ctl.switch.state.version) == group


def test_redeploy_and_reconcile_write_nothing():
    ctl = controller()
    ctl.deploy()
    n = len(ctl.switch.log)
    assert ctl.deploy() == [] and ctl.reconcile() == [] and len(ctl.switch.log) == n


def test_restart_after_partial_operation_converges():
    ctl = controller()
    ctl.deploy()
    live = ctl.switch.state.version
    target = Fail(1).apply(ctl.pool)
    plan = p4lb_plan(P4LB, ctl.switch.state, target)
    for w in plan[:2]:  # killed after staging two writes: the live version is untouched
        ctl.switch.write(w)
    assert ctl.switch.state.version == live and ctl.switch.state.members(live) == (1, 2, 3, 4)
    restarted = Controller(ctl.settings, ctl.switch, grace_s=0)
    restarted.pool = target
    restarted.reconcile()
    assert ctl.switch.state.members(ctl.switch.state.version) == (4, 2, 3)
    assert restarted.reconcile() == []


def test_bad_backend_writes_nothing():
    ctl = controller()
    ctl.deploy()
    n = len(ctl.switch.log)
    with pytest.raises(Exception, match="backend"):
        ctl.apply(Fail(7))
    assert len(ctl.switch.log) == n and ctl.pool == Pool.initial(4)


def test_cli_dry_run_status_json(tmp_path, capsys):
    path = tmp_path / "p4lb.toml"
    path.write_text(_toml(config()))
    assert cli.main(["-c", str(path), "--dry-run", "status", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["in_group"] for r in out["backends"]] == [True] * 4
    assert out["lb_drops"] == {"no_eligible": 0, "flow_table_full": 0, "unknown_flow": 0, "malformed": 0, "no_backend_entry": 0}


def test_cli_operations_persist_between_commands(tmp_path):
    path = tmp_path / "p4lb.toml"
    path.write_text(_toml(config()))
    settings = load(path)
    state = tmp_path / "p4lb.state.json"
    first = Controller(settings, ModelSwitch(settings.lb), grace_s=0, state_file=state)
    first.deploy()
    first.apply(Fail(2))
    second = Controller(settings, first.switch, grace_s=0, state_file=state)
    assert second.pool.healthy == frozenset({1, 3, 4})
    assert second.reconcile() == []


def test_state_file_whose_backend_changed_address_is_refused(tmp_path):
    path = tmp_path / "p4lb.toml"
    path.write_text(_toml(config()))
    state = tmp_path / "p4lb.state.json"
    state.write_text('{"n": 4, "active": [1], "healthy": [1], "draining": [], "backends": ["10.9.9.9"]}')
    with pytest.raises(ControllerError, match="keep ids stable"):
        Controller(load(path), ModelSwitch(load(path).lb), state_file=state)


def test_adding_and_removing_backends_at_the_end(tmp_path):
    path, state = tmp_path / "p4lb.toml", tmp_path / "p4lb.state.json"
    path.write_text(_toml(config()))
    first = Controller(load(path), ModelSwitch(load(path).lb), grace_s=0, state_file=state)
    first.deploy()
    first.apply(Fail(2))
    grown = load(path)
    grown = type(grown)(type(grown.lb)(backends=default_backends(5)), grown.health, grown.switch, 5, grown.health_addresses + ("127.0.0.1",))
    ctl = Controller(grown, first.switch, grace_s=0, state_file=state)
    assert ctl.pool.healthy == frozenset({1, 3, 4, 5}) and ctl.pool.active == frozenset({1, 2, 3, 4, 5})
    ctl.deploy()
    assert ctl.switch.state.members(ctl.switch.state.version) == (1, 4, 3, 5)  # the new backend goes last
    shrunk = Controller(load(path), first.switch, grace_s=0, state_file=state)
    shrunk.deploy()
    assert shrunk.switch.state.members(shrunk.switch.state.version) == (1, 4, 3)


def test_suspect_backend_is_rechecked_sooner():
    from p4lb.controller.health import HealthMonitor

    m = HealthMonitor(("127.0.0.1",), HealthCheck("tcp", free_port(), interval_ms=100, timeout_ms=50, fall=2))
    try:
        assert m.next_delay() == 0.1
        assert m.round() == []  # first failure: still healthy, now suspect
        assert m.next_delay() == 0.05
        (tr,) = m.round()
        assert not tr.healthy and "refused" in tr.reason.lower()
    finally:
        m.close()


def test_cli_flow_on_the_model(tmp_path, capsys):
    path = tmp_path / "p4lb.toml"
    path.write_text(_toml(config()))
    assert cli.main(["-c", str(path), "--dry-run", "flow", "10.0.1.1:1000"]) == 0
    assert "FREE" in capsys.readouterr().out
    assert cli.main(["-c", str(path), "--dry-run", "flow", "10.0.1.1"]) == 2


def test_status_counts_open_places_and_flows_stream_open_flows(capsys):
    """status reads backend_open (places OPEN: an idle flow counts until a SYN reclaims its place); status --scan and
    flows read every place and leave idle flows out; flows --json is one object per line, the count last."""
    from p4lb.model.p4lb import p4lb_packet  # noqa: PLC0415
    from p4lb.model.packet import ACK, FIN, SYN, Packet  # noqa: PLC0415

    ctl = controller()
    ctl.deploy()
    sw = ctl.switch

    def send(*pkts: Packet) -> None:
        for pkt in pkts:
            sw.state = p4lb_packet(sw.cfg, P4LB, sw.state, pkt)[0]

    send(Packet(0x0A000101, 1000, SYN, 0), Packet(0x0A000101, 1001, SYN, 1), Packet(0x0A000101, 1002, SYN, 2), Packet(0x0A000101, 1001, FIN | ACK, 3))
    assert [r.open_flows for r in ctl.status()] == [1, 0, 1, 0] == [r.open_flows for r in ctl.status(scan=True)]  # 1001 (backend 2) is closing
    cli.show_flows(ctl, True, cli.Console())
    *flows, total = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted((f["client"], f["backend"]) for f in flows) == [("10.0.1.1:1000", 1), ("10.0.1.1:1002", 3)] and total == {"open_flows": 2}
    idle = sw.cfg.idle_timeout_us + 10
    send(Packet(0x0A000102, 5, ACK, idle))  # the clock passes the idle timeout
    assert [r.open_flows for r in ctl.status(scan=True)] == [0, 0, 0, 0]  # idle: not open any more
    assert [r.open_flows for r in ctl.status()] == [1, 0, 1, 0]  # ... but their places are OPEN until reclaimed
    send(Packet(0x0A000101, 1000, SYN, idle + 1))  # 1000's own place taken again: backend 1's count moves to the new flow's (4)
    assert [r.open_flows for r in ctl.status()] == [0, 0, 1, 1] and [r.open_flows for r in ctl.status(scan=True)] == [0, 0, 0, 1]
    cli.show_flows(ctl, False, cli.Console(width=80))
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["slot", "client", "backend", "address", "port"] and out[-1] == "p4lb open flows: 1"
    assert out[1].split()[1:] == ["10.0.1.1:1000", "4", "10.0.5.5", "5"]


def test_status_caption_says_what_open_counts(capsys):
    ctl = controller()
    ctl.deploy()
    cli.show_status(ctl, False, cli.Console(width=200))
    out = " ".join(capsys.readouterr().out.split())
    assert "idle ones included until a new SYN reclaims their place" in out
    cli.show_status(ctl, False, cli.Console(width=200), scan=True)
    assert "from a read of every flow place (--scan)" in " ".join(capsys.readouterr().out.split())
    cli.show_status(ctl, True, cli.Console(), scan=True)
    assert json.loads(capsys.readouterr().out)["open_flows_from"] == "scan"


def test_cli_status_scan_option(tmp_path, capsys):
    path = tmp_path / "p4lb.toml"
    path.write_text(_toml(config()))
    assert cli.main(["-c", str(path), "--dry-run", "status", "--scan", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["open_flows_from"] == "scan" and [r["open_flows"] for r in got["backends"]] == [0, 0, 0, 0]
    assert cli.main(["-c", str(path), "--dry-run", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["open_flows_from"] == "backend_open"


def test_cpu_open_answer_decodes_per_backend():
    from p4lb.controller.switch import OPEN_CELL, OPEN_WIDTH, open_block  # noqa: PLC0415

    payload = b"".join(OPEN_CELL.pack(i * 3 if i % 2 else 0) for i in range(OPEN_WIDTH))
    got = open_block(1, payload)
    assert got[OPEN_WIDTH + 1] == 3 and got[OPEN_WIDTH + 2] == 0 and len(got) == OPEN_WIDTH and min(got) == OPEN_WIDTH
    with pytest.raises(ControllerError, match="CPU_OPEN answer"):
        open_block(0, payload[:20])


def test_cpu_scan_answer_decodes_open_slots_only():
    from p4lb.controller.switch import SCAN_SLOT, SCAN_WIDTH, scan_block  # noqa: PLC0415

    cells = [(0, 0, 0, 0)] * SCAN_WIDTH
    cells[3] = (1, 2, flow_key(7, 0x0A000101, 1000), 500)  # open, idle 500 us (service 7: the key's top byte)
    cells[4] = (2, 1, 7, 900)  # closing
    cells[5] = (1, 4, 8, 10)  # open but idle past the timeout
    payload = b"".join(SCAN_SLOT.pack(s, b, k.to_bytes(7, "big"), t.to_bytes(6, "big")) for s, b, k, t in cells)
    assert SCAN_SLOT.size == 15  # flow_scan_t: 8 + 8 + 56 + 48 bits
    got = scan_block({"index": 2, "now": 1000, "idle_timeout": 600}, payload)
    assert {slot: (e.backend, e.key) for slot, e in got.items()} == {2 * SCAN_WIDTH + 3: (2, flow_key(7, 0x0A000101, 1000))}
    with pytest.raises(ControllerError, match="CPU_SCAN answer"):
        scan_block({"index": 0, "now": 0, "idle_timeout": 1}, payload[:20])


def test_flow_table_size_must_match_the_p4_program():
    from p4lb.controller.switch import P4RuntimeSwitch  # noqa: PLC0415
    from p4lb.lab.toolchain import artifacts  # noqa: PLC0415

    s = parse(config(flows={"table_bits": 12}))
    p4info, bmv2_json = artifacts("p4lb")
    sw = P4RuntimeSwitch("127.0.0.1:1", 0, (0, 1), str(p4info), str(bmv2_json), s.lb)
    with pytest.raises(ConfigFileError) as err:
        sw.install_pipeline()  # refused before any connection is made
    assert err.value.field == "flows.table_bits" and str(1 << P4LB_TABLE_BITS) in str(err.value)


def test_status_table_names_each_backends_state(tmp_path, capsys):
    ctl = controller(active=3)
    ctl.deploy()
    ctl.apply(Fail(2))
    ctl.apply(Drain(1))
    cli.show_status(ctl, False, cli.Console(width=120))
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()[:1] and line.split()[0].isdigit()}
    assert "draining" in lines["1"] and "failed" in lines["2"] and "serving" in lines["3"] and "inactive" in lines["4"]
    assert "refused SYNs: 0   black holes: 0" in out
