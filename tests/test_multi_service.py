"""Several services in one configuration ([[service]] tables): parsing both forms, every error naming its field with
nothing written, one `p4lb deploy` for all, --service, status and flows of all, 64 services, the state file, the
refusal of a new service whose id still has flow entries, and `p4lb retire`. Against the fake P4Runtime switch; no BMv2 needed."""

from __future__ import annotations

import faulthandler
import json
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format
from p4.config.v1 import p4info_pb2
from p4.v1 import p4runtime_pb2

from p4lb.controller import cli
from p4lb.controller.controller import Controller, load_pool, save_pool
from p4lb.controller.errors import ConfigFileError, GrpcCode, SwitchError
from p4lb.controller.health import Probe
from p4lb.controller.loop import HealthLoop, run_all
from p4lb.controller.p4rt import P4rt
from p4lb.controller.settings import DEFAULT_SERVICE, CheckKind, Config, load_config, parse, parse_config
from p4lb.controller.switch import ModelSwitch, P4RuntimeSwitch, Switch
from p4lb.lab.fake_p4rt import FakeP4Runtime, Rpc, Table
from p4lb.model.config import P4LB_SMALL_TABLE_BITS
from p4lb.model.crc import ip
from p4lb.model.ops import Fail
from p4lb.model.p4lb import SlotState
from p4lb.model.packet import ACK, FIN, SYN, DropReason, Fate, Packet, key_service
from p4lb.model.pool import Pool

WATCHDOG_S = 120
ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "src" / "p4lb" / "p4" / "build"  # p4lb_small: 32 flow places, a scan is one request
CLIENT = ip("10.0.0.9")
TABLES = (Table.VIP, Table.RR_GROUP, Table.RR_MEMBER, Table.BACKEND, Table.FORWARD, Table.SEND_FRAME)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Lock files in a runtime folder of the test's own; a hung test kills the run (with stacks) instead of hanging it."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def fake():
    with FakeP4Runtime() as server:
        yield server


def backends(service: int, n: int = 2) -> list[dict]:
    """n backends of their own for a service (addresses 10.<1+s//200>.<s%200>.<i>, switch ports from 2)."""
    return [{"address": f"10.{1 + service // 200}.{service % 200}.{i + 1}", "mac": f"00:00:{service // 200:02x}:{service % 200:02x}:00:{i + 1:02x}", "port": 2 + (service * n + i) % 500} for i in range(n)]


def service(name: str, sid: int, port: int, n: int = 2, **extra: object) -> dict:
    return {"name": name, "address": "10.0.0.1", "port": port, "id": sid, "backend": backends(sid, n)} | extra


def doc(services: list[dict], fake: FakeP4Runtime | None = None, **top: object) -> dict:
    """A [[service]] document for the small program (the fake switch's address if given)."""
    switch = {"p4info": str(SMALL / "p4lb_small.p4info.txtpb"), "bmv2_json": str(SMALL / "p4lb_small.json")} | ({"grpc": fake.address, "lock_timeout_ms": 2000} if fake else {})
    return {"switch": switch, "flows": {"table_bits": P4LB_SMALL_TABLE_BITS}, "service": services} | top


def toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def dump(data: dict) -> str:
    """A document of scalars, tables and arrays of tables (what these tests write) as TOML."""
    lines: list[str] = []

    def table(d: dict, path: str) -> None:
        for k, v in d.items():
            if not isinstance(v, dict | list):
                lines.append(f"{k} = {toml(v)}")
        for k, v in d.items():
            if isinstance(v, dict):
                lines.append(f"[{path}{k}]")
                table(v, f"{path}{k}.")
            elif isinstance(v, list):
                for item in v:
                    lines.append(f"[[{path}{k}]]")
                    table(item, f"{path}{k}.")

    table(data, "")
    return "\n".join(lines) + "\n"


def write_config(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "p4lb.toml"
    path.write_text(dump(data))
    return path


def run(capsys, cfg: Path, *argv: object) -> tuple[int, str]:
    code = cli.main(["-c", str(cfg), *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out + out.err


def snapshot(fake: FakeP4Runtime) -> dict[Table, list[str]]:
    """Every entry of the tables the controller writes (empty without a pipeline)."""
    if fake.device.pipeline is None:
        return {}
    return {t: sorted(map(repr, fake.device.rows(t))) for t in TABLES}


# ---- parsing ---------------------------------------------------------------------------------------------------
def test_the_single_form_is_one_service_named_default():
    config = parse_config({"vip": {"service": 3, "port": 443}, "backend": backends(3)})
    assert isinstance(config, Config) and not config.multi and config.names == (DEFAULT_SERVICE,)
    s = config.services[0]
    assert (s.lb.service, s.lb.vip_port, s.where) == (3, 443, "") and parse({"vip": {"service": 3, "port": 443}, "backend": backends(3)}) == s


def test_the_example_configs_parse():
    single = load_config(ROOT / "p4lb.example.toml")
    multi = load_config(ROOT / "p4lb.multi.example.toml")
    assert single.names == (DEFAULT_SERVICE,) and multi.multi and multi.names == ("web", "api")
    web, api = multi.services
    assert (web.lb.service, web.lb.vip_port, web.active, web.weights) == (0, 80, 2, (2, 1))
    assert (api.lb.service, api.lb.vip_port, api.health.path, api.health.port, api.health.kind) == (1, 8080, "/healthz", 8080, CheckKind.HTTP)
    assert web.health.path == "/" and web.lb.idle_timeout_us == api.lb.idle_timeout_us and web.switch == api.switch


def test_services_parse_with_their_own_backends_and_health():
    config = parse_config(doc([service("a", 0, 80), service("b", 9, 81, 3, active=1, health={"kind": "tcp", "port": 22})], health={"kind": "http", "path": "/x"}))
    a, b = config.services
    assert (a.name, a.where, b.name, b.where) == ("a", "service[0]", "b", "service[1]")
    assert (a.lb.n, b.lb.n, b.active, b.lb.service) == (2, 3, 1, 9)
    assert (a.health.kind, a.health.path, b.health.kind, b.health.port, b.health.path) == (CheckKind.HTTP, "/x", CheckKind.TCP, 22, "/x")
    assert [ip_ for ip_ in b.health_addresses] == [x["address"] for x in backends(9, 3)]


# ---- errors: the field named, nothing written ------------------------------------------------------------------
ERRORS = [
    (doc([service("a", 0, 80), service("a", 1, 81)]), "service[1].name", "has this name already"),
    (doc([service("a", 0, 80), service("b", 0, 81)]), "service[1].id", "has this id already"),
    (doc([service("a", 0, 80), service("b", 1, 80)]), "service[1].port", "serves 10.0.0.1:80 already"),
    (doc([service("a", 0, 80), service("b", 1, 80, address="10.0.0.2", backend=backends(0))]), "service[1].backend[0].address", "leave from one source"),
    (doc([service("a", 0, 80), service("b", 1, 81, client_port=7)]), "service[1].client_net", "one network has one route"),
    (doc([service("a", 0, 80), service("b", 1, 81, backend=[backends(1)[0] | {"weight": 0}])]), "service[1].backend[0].weight", "use 1..8"),
    (doc([service("a", 0, 80, backend=[backends(0)[0], backends(0)[1] | {"weight": 9}])]), "service[0].backend[1].weight", "use 1..8"),
    (doc([service("a", 0, 80, n=129)]), "service[0].backend", "at most 128 backends"),
    (doc([service(f"s{i}", i % 256, 1000 + i) for i in range(257)]), "service", "at most 256 services"),
    (doc([service("a", 256, 80)]), "service[0].id", "0..255"),
    (doc([service("a", 0, 80, adress="10.0.0.3")]), "service[0].adress", "did you mean service[0].address"),
    (doc([service("a b", 0, 80)]), "service[0].name", "letters, digits"),
    (doc([{"address": "10.0.0.1", "port": 80, "backend": backends(0)}]), "service[0].name", "give the service a name"),
    (doc([service("a", 0, 80, active=3)]), "service[0].active", "use 0..2"),
    (doc([service("a", 0, 80, health={"timeout_ms": 5000})]), "service[0].health.timeout_ms", "interval_ms"),
    (doc([service("a", 0, 80, backend=[])]), "service[0].backend", "[[service.backend]]"),
    (doc([service("a", 0, 80)], vip={"port": 80}), "vip", "move the top-level vip"),
    (doc([service("a", 0, 80)], backend=backends(0)), "backend", "move the top-level backend"),
    (doc([]), "service", "add one [[service]] table"),
    (doc([service("a", 0, 0)]), "service[0].port", "1..65535"),
    ({"vip": {"port": 80}, "backend": [backends(0)[0] | {"weight": 0}]}, "backend[0].weight", "use 1..8"),
]


def test_services_of_different_vip_addresses_share_a_client_port(fake, tmp_path, capsys):
    """send_frame is keyed by (client port, backend address): each service's backends answer from its own VIP."""
    data = doc([service("a", 0, 80), service("b", 1, 80, address="10.0.0.2")], fake)
    code, out = run(capsys, write_config(tmp_path, data), "deploy")
    assert code == 0, out
    rows = {(r.match["std.egress_port"], r.match["hdr.ipv4.srcAddr"]): r.params["sip"] for r in fake.device.rows(Table.SEND_FRAME)}
    want = {(1, ip(b["address"])): ip(vip) for sid, vip in ((0, "10.0.0.1"), (1, "10.0.0.2")) for b in backends(sid)}
    assert rows == want


@pytest.mark.parametrize(("data", "field", "says"), ERRORS, ids=[e[1] + ": " + e[2] for e in ERRORS])
def test_a_bad_config_names_the_field(data: dict, field: str, says: str):
    with pytest.raises(ConfigFileError) as err:
        parse_config(data)
    assert err.value.field == field and says in str(err.value), str(err.value)


@pytest.mark.parametrize(("data", "field", "says"), [ERRORS[0], ERRORS[2], ERRORS[3], ERRORS[5], ERRORS[7]], ids=["name", "vip", "reply_source", "weight", "backends"])
def test_a_bad_config_writes_nothing(fake, tmp_path, capsys, data: dict, field: str, says: str):
    data = data | {"switch": data["switch"] | {"grpc": fake.address}}
    cfg = write_config(tmp_path, data)
    code, out = run(capsys, cfg, "deploy")
    assert code == cli.ExitCode.INPUT and f"config error: {field} = " in out and says in out, out
    assert fake.device.pipeline is None and snapshot(fake) == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p4lb.toml"]  # no state file, no lock folder


def edited_p4info(tmp_path: Path, edit) -> Path:
    info = p4info_pb2.P4Info()
    text_format.Merge((SMALL / "p4lb_small.p4info.txtpb").read_text(), info, allow_unknown_field=True)
    edit(info)
    path = tmp_path / "edited.p4info.txtpb"
    path.write_text(text_format.MessageToString(info))
    return path


def table_size(name: str, size: int):
    def edit(info: p4info_pb2.P4Info) -> None:
        for t in info.tables:
            if t.preamble.name.endswith(f".{name}") or t.preamble.name == name:
                t.size = size
    return edit


@pytest.mark.parametrize(("table", "size", "services", "field", "says"), [
    ("backend", 256 * 4, [service("a", 0, 80), service("b", 1, 81, n=5)], "service[1].backend", "at most 4 backends per service"),
    ("vip", 2, [service("a", 0, 80), service("b", 1, 81), service("c", 2, 82)], "service", "at most 2 services"),
], ids=["backends per service", "services"])
def test_a_config_beyond_the_programs_tables_is_refused_before_any_write(fake, tmp_path, capsys, table, size, services, field, says):
    """The limits read from the P4Info the switch target names (the backend table's size over the service ids, the
    vip table's size): nothing written."""
    data = doc(services, fake)
    data["switch"]["p4info"] = str(edited_p4info(tmp_path, table_size(table, size)))
    cfg = write_config(tmp_path, data)
    code, out = run(capsys, cfg, "deploy")
    assert code == cli.ExitCode.INPUT and f"config error: {field} = " in out and says in out, out
    assert fake.device.pipeline is None


def test_a_single_form_service_beyond_the_programs_backends_names_backend(fake, tmp_path, capsys):
    p4info = edited_p4info(tmp_path, table_size("backend", 256 * 4))
    cfg = write_config(tmp_path, {"switch": {"grpc": fake.address, "p4info": str(p4info), "bmv2_json": str(SMALL / "p4lb_small.json")}, "flows": {"table_bits": P4LB_SMALL_TABLE_BITS}, "backend": backends(0, 5)})
    code, out = run(capsys, cfg, "deploy")
    assert code == cli.ExitCode.INPUT and "config error: backend = 5 is invalid" in out and "at most 4 backends per service" in out, out
    assert fake.device.pipeline is None


# ---- one deploy, --service, status and flows of all ------------------------------------------------------------
def two(fake: FakeP4Runtime, tmp_path: Path) -> Path:
    return write_config(tmp_path, doc([service("web", 0, 80), service("api", 5, 8080, 3)], fake))


def test_one_deploy_deploys_every_service(fake, tmp_path, capsys):
    cfg = two(fake, tmp_path)
    code, out = run(capsys, cfg, "deploy")
    assert code == 0 and "deployed web:" in out and "deployed api:" in out, out
    rows = fake.device.rows
    assert sorted((r.match["hdr.tcp.dstPort"], r.params["service"]) for r in rows(Table.VIP)) == [(80, 0), (8080, 5)]
    assert sorted((r.exact("meta.lb.service"), r.exact("meta.lb.backend")) for r in rows(Table.BACKEND)) == [(0, 1), (0, 2), (5, 1), (5, 2), (5, 3)]
    assert fake.device.state_of(0).members(fake.device.state_of(0).version) == (1, 2)
    assert fake.device.state_of(5).members(fake.device.state_of(5).version) == (1, 2, 3)
    state = json.loads(cfg.with_suffix(".state.json").read_text())
    assert sorted(state["services"]) == ["api", "web"] and state["services"]["api"]["n"] == 3
    code, out = run(capsys, cfg, "deploy")  # again: nothing to do
    assert code == 0 and "deployed web: 0 writes" in out and "deployed api: 0 writes" in out, out


def test_a_deploy_checks_each_services_shared_settings_once(fake, tmp_path, capsys, monkeypatch):
    """check_deploy checks every service's shared settings before the first write; deploy does not check them again.
    A single-service deploy checks them too (in install_backends), and a fresh switch's deploy once per service."""
    checks: list[int] = []
    check = P4RuntimeSwitch.check_shared

    def counted(self: P4RuntimeSwitch, cfg) -> None:
        checks.append(cfg.service)
        check(self, cfg)

    monkeypatch.setattr(P4RuntimeSwitch, "check_shared", counted)
    cfg = two(fake, tmp_path)
    assert run(capsys, cfg, "deploy")[0] == 0  # no pipeline: checked in install_backends, after the push
    assert sorted(checks) == [0, 5]
    for _ in range(2):  # reconcile, then a service whose vip entry is gone (deployed afresh on the running pipeline)
        checks.clear()
        assert run(capsys, cfg, "deploy")[0] == 0
        assert sorted(checks) == [0, 5]
        delete_vip_of(fake, 5)
    checks.clear()
    assert run(capsys, cfg, "deploy", "--service", "api")[0] == 0 and checks == [5]  # the single path still checks
    checks.clear()
    assert run(capsys, cfg, "deploy", "--service", "web")[0] == 0 and checks == [0]


@pytest.mark.parametrize("cmd", [["drain", "2"], ["fail", "1"], ["heal", "1"], ["undrain", "1"], ["weight", "1", "2"], ["scale", "--active", "1"], ["flow", "10.0.0.9:4000"]])
def test_a_command_on_one_service_needs_service_when_there_are_several(tmp_path, capsys, cmd):
    cfg = write_config(tmp_path, doc([service("web", 0, 80), service("api", 5, 8080)]))
    code, out = run(capsys, cfg, "--dry-run", *cmd)
    assert code == cli.ExitCode.INPUT and "--service NAME (one of: web, api)" in out, out
    code, out = run(capsys, cfg, "--dry-run", cmd[0], "--service", "nope", *cmd[1:])
    assert code == cli.ExitCode.INPUT and "no such service (its services: web, api)" in out, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p4lb.toml"]


def test_operations_name_their_service(fake, tmp_path, capsys):
    cfg = two(fake, tmp_path)
    assert run(capsys, cfg, "deploy")[0] == 0
    code, out = run(capsys, cfg, "drain", "2", "--service", "api")
    assert code == 0, out
    assert fake.device.state_of(5).members(fake.device.state_of(5).version) == (1, 3)
    assert fake.device.state_of(0).members(fake.device.state_of(0).version) == (1, 2)  # web untouched
    code, out = run(capsys, cfg, "status", "--json")
    assert code == 0, out
    status = json.loads(out)
    assert [(r["service"], r["backend"], r["state"]) for r in status["backends"]] == [("web", 1, "serving"), ("web", 2, "serving"), ("api", 1, "serving"), ("api", 2, "draining"), ("api", 3, "serving")]
    assert [(s["name"], s["id"], s["vip"]) for s in status["services"]] == [("web", 0, "10.0.0.1:80"), ("api", 5, "10.0.0.1:8080")] and "lb_drops" not in status
    code, out = run(capsys, cfg, "status", "--json", "--service", "api")
    assert code == 0 and {r["service"] for r in json.loads(out)["backends"]} == {"api"} and "lb_drops" in json.loads(out)
    code, out = run(capsys, cfg, "status")
    assert code == 0 and "p4lb backends: web" in out and "p4lb backends: api" in out and "web: refused SYNs" in out and "api: lb_drops" in out, out


def test_status_tables_fit_80_columns_without_cutting_a_number():
    """The widest row a service can have (a 15-character address, every state, 10-digit counters) is printed
    whole at 80 columns: the state wraps, numbers and addresses never do."""
    from rich.console import Console  # noqa: PLC0415

    from p4lb.controller.controller import BackendStatus  # noqa: PLC0415

    rows = [BackendStatus(128, "192.168.100.200", 511, False, False, True, True, 8, 1_048_576, 4_294_967_295)]
    console = Console(width=80, record=True)
    console.print(cli.status_table(rows, scan=True, service="a-long-service-name"))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert all(s in text for s in ("192.168.100.200", "1048576", "4294967295", "511", "128"))


def test_flows_of_every_service_from_one_scan(fake, tmp_path, capsys, monkeypatch):
    scans: list[int] = []
    scan = P4RuntimeSwitch._scan

    def counted(self: P4RuntimeSwitch):
        scans.append(self.cfg.service)
        return scan(self)

    monkeypatch.setattr(P4RuntimeSwitch, "_scan", counted)
    cfg = two(fake, tmp_path)
    assert run(capsys, cfg, "deploy")[0] == 0
    for port, svc in ((4000, 0), (4001, 5), (4002, 5)):
        assert fake.device.inject(Packet(CLIENT, port, SYN, 0, svc)).fate is Fate.BACKEND
    scans.clear()
    code, out = run(capsys, cfg, "status", "--scan", "--json")
    assert code == 0 and len(scans) == 1, (scans, out)
    assert {s: sum(r["open_flows"] for r in json.loads(out)["backends"] if r["service"] == s) for s in ("web", "api")} == {"web": 1, "api": 2}
    scans.clear()
    code, out = run(capsys, cfg, "status", "--scan", "--json", "--service", "api")  # one service: its own scan
    assert code == 0 and scans == [5] and sum(r["open_flows"] for r in json.loads(out)["backends"]) == 2, (scans, out)
    scans.clear()
    code, out = run(capsys, cfg, "flows", "--json")
    assert code == 0 and len(scans) == 1, (scans, out)
    lines = [json.loads(x) for x in out.splitlines()]
    assert sorted((r["service"], r["client"]) for r in lines[:-1]) == [("api", "10.0.0.9:4001"), ("api", "10.0.0.9:4002"), ("web", "10.0.0.9:4000")]
    assert lines[-1] == {"open_flows": 3}
    code, out = run(capsys, cfg, "flows", "--service", "web")
    assert code == 0 and "10.0.0.9:4000" in out and "4001" not in out and "open flows: 1" in out, out
    code, out = run(capsys, cfg, "flows")
    assert code == 0 and out.splitlines()[0].startswith("service") and "open flows: 3" in out, out
    code, out = run(capsys, cfg, "flow", "10.0.0.9:4001", "--service", "api", "--json")
    assert code == 0 and json.loads(out)["held_by"] == "this connection", out


def test_sixty_four_services_deploy_each_keyed_by_its_id(fake, tmp_path, capsys):
    services = [service(f"s{i}", 3 * i, 1000 + i) for i in range(64)]
    cfg = write_config(tmp_path, doc(services, fake))
    started = time.monotonic()
    code, out = run(capsys, cfg, "deploy")
    assert code == 0, out
    assert time.monotonic() - started < 60
    rows = fake.device.rows
    assert sorted((r.match["hdr.tcp.dstPort"], r.params["service"]) for r in rows(Table.VIP)) == [(1000 + i, 3 * i) for i in range(64)]
    by_service: dict[int, set[int]] = {}
    for r in rows(Table.BACKEND):
        by_service.setdefault(r.exact("meta.lb.service"), set()).add(r.params["addr"])
    assert by_service == {3 * i: {ip(b["address"]) for b in backends(3 * i)} for i in range(64)}
    assert {r.exact("meta.lb.service") for r in rows(Table.RR_MEMBER)} == {3 * i for i in range(64)}
    for i in (0, 17, 63):
        st = fake.device.state_of(3 * i)
        assert st.members(st.version) == (1, 2)
        assert fake.device.inject(Packet(CLIENT, 4000 + i, SYN, 0, 3 * i)).fate is Fate.BACKEND
    code, out = run(capsys, cfg, "status", "--json")
    assert code == 0 and len(json.loads(out)["backends"]) == 128 and len(json.loads(out)["services"]) == 64


def test_dry_run_of_several_services_touches_no_network(tmp_path, capsys, monkeypatch):
    import socket  # noqa: PLC0415

    attempts: list[object] = []

    def refuse(*args: object, **kw: object) -> None:
        attempts.append(args)
        raise OSError("network use in a dry run")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    cfg = write_config(tmp_path, doc([service("web", 0, 80), service("api", 5, 8080)]))
    assert run(capsys, cfg, "--dry-run", "deploy")[0] == 0
    assert run(capsys, cfg, "--dry-run", "drain", "1", "--service", "web")[0] == 0
    code, out = run(capsys, cfg, "--dry-run", "status", "--json")
    assert code == 0 and [r["state"] for r in json.loads(out)["backends"]] == ["draining", "serving", "serving", "serving"], out
    assert run(capsys, cfg, "--dry-run", "run", "--rounds", "2")[0] == 0
    assert run(capsys, cfg, "--dry-run", "flows")[0] == 0
    code, out = run(capsys, cfg, "--dry-run", "run", "--rounds", "1", "--metrics", "127.0.0.1:0")  # one endpoint for both
    assert code == 0 and "metrics on http://127.0.0.1:" in out, out
    assert attempts == [] and not cfg.with_suffix(".state.json").exists()


def test_one_metrics_endpoint_serves_every_service_of_one_switch(fake, tmp_path, capsys):
    """`run`'s pieces on the fake switch (one P4Runtime session for both services): after the rounds, one scrape
    holds each service's series under its name, with its own values (web 2 backends, api 3; api's backend 2 down)."""
    import urllib.request  # noqa: PLC0415

    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    from p4lb.controller.metrics import Metrics  # noqa: PLC0415

    cfg = two(fake, tmp_path)
    assert run(capsys, cfg, "deploy")[0] == 0
    for port, svc in ((4000, 0), (4001, 5), (4002, 5), (4003, 5)):
        assert fake.device.inject(Packet(CLIENT, port, SYN, 0, svc)).fate is Fate.BACKEND
    config = load_config(cfg)
    switches = cli.make_switches(config, config.services, dry_run=False, one_shot=False)
    try:
        ctls = [Controller(s, sw, grace_s=0, state_file=cfg.with_suffix(".state.json")) for s, sw in zip(config.services, switches, strict=True)]
        metrics = Metrics([c.settings.name for c in ctls])
        loops = [HealthLoop(c, prober=lambda b, a, down=(2 if c.settings.name == "api" else 0): Probe(b != down, "test"), metrics=metrics) for c in ctls]
        assert run_all(loops, rounds=2) == 4  # fall 2: api's backend 2 fails in its second round
        server = metrics.serve("127.0.0.1:0")
        try:
            with urllib.request.urlopen(server.url, timeout=5) as rep:
                text = rep.read().decode()
        finally:
            server.stop()
    finally:
        for sw in switches:
            sw.close()
    got = {(x.name, frozenset(x.labels.items())): x.value for fam in text_string_to_metric_families(text) for x in fam.samples}

    def v(name: str, **labels: str) -> float:
        return got[(name, frozenset(labels.items()))]

    def backends_of(name: str, svc: str) -> set[str]:
        return {dict(k)["backend"] for n, k in got if n == name and ("service", svc) in k}

    assert backends_of("p4lb_backend_in_group", "web") == {"1", "2"} and backends_of("p4lb_backend_in_group", "api") == {"1", "2", "3"}
    assert (v("p4lb_group_size", service="web"), v("p4lb_group_size", service="api")) == (2, 2)
    assert v("p4lb_backend_state", service="api", backend="2", state="failed") == 1 and v("p4lb_backend_state", service="web", backend="2", state="serving") == 1
    assert (v("p4lb_open_flows", service="web"), v("p4lb_open_flows", service="api")) == (1, 3)
    assert sum(v("p4lb_flows_dispatched_total", service="api", backend=b) for b in "123") == 3
    assert sum(v("p4lb_flows_dispatched_total", service="web", backend=b) for b in "12") == 1
    assert v("p4lb_plan_commits_total", service="api", op="health") == 1 and ("p4lb_plan_commits_total", frozenset({("service", "web"), ("op", "health")})) not in got
    assert v("p4lb_probe_latency_seconds_count", service="api", backend="2", result="failed") == 2
    assert v("p4lb_probe_latency_seconds_count", service="web", backend="2", result="ok") == 2
    assert v("p4lb_switch_up") == 1


# ---- the state file --------------------------------------------------------------------------------------------
def test_the_state_file_keeps_each_service_by_name_and_reads_todays_files(tmp_path):
    a, b = parse_config(doc([service("default", 0, 80), service("b", 1, 81, 3)])).services
    path = tmp_path / "p4lb.state.json"
    save_pool(path, Fail(2).apply(Pool.initial(2)))  # today's single-service file
    assert load_pool(path, a).healthy == frozenset({1})  # read for the service named "default"
    assert load_pool(path, b) == Pool.initial(3)  # another service starts from the config
    save_pool(path, Fail(1).apply(Pool.initial(3)), b)
    save_pool(path, Pool.initial(2), a)
    data = json.loads(path.read_text())
    assert sorted(data["services"]) == ["b", "default"] and "active" not in data
    assert load_pool(path, b).healthy == frozenset({2, 3}) and load_pool(path, a) == Pool.initial(2)
    single = parse({"vip": {}, "backend": backends(0)})
    assert load_pool(path, single) == Pool.initial(2)  # the single form reads the "default" service's sets


# ---- stale flows of a new service ------------------------------------------------------------------------------
def delete_vip_of(fake: FakeP4Runtime, svc: int) -> None:
    """Remove a service's vip entry on the switch (as a crashed or foreign controller might have left it)."""
    pipeline = fake.device.pipeline
    assert pipeline is not None
    want = p4runtime_pb2.Entity(table_entry=p4runtime_pb2.TableEntry(table_id=pipeline.table_id(Table.VIP)))
    for entity in fake.device.read(want):
        action = entity.table_entry.action.action
        names = {p.id: p.name for p in pipeline.objects[action.action_id].params}
        if {names.get(p.param_id): int.from_bytes(p.value, "big") for p in action.params}.get("service") == svc:
            assert fake.device.write([p4runtime_pb2.Update(type=p4runtime_pb2.Update.DELETE, entity=entity)]) == [(0, "")]
    assert svc not in fake.device.services()


def stale_service_7(fake: FakeP4Runtime, tmp_path: Path, capsys) -> None:
    """Services 0 and 7 deployed, 3 flows of service 7 (one closing), then 7's vip entry gone: its flows stay."""
    cfg = write_config(tmp_path / "old", doc([service("web", 0, 80), service("old", 7, 9000)], fake))
    assert run(capsys, cfg, "deploy")[0] == 0
    for port in (5000, 5001, 5002):
        assert fake.device.inject(Packet(CLIENT, port, SYN, 0, 7)).fate is Fate.BACKEND
    fake.device.inject(Packet(CLIENT, 5002, 0x11, 0, 7))  # FIN|ACK: closing, still held
    delete_vip_of(fake, 7)


def test_a_new_service_whose_id_has_flow_entries_is_refused(fake, tmp_path, capsys):
    (tmp_path / "old").mkdir()
    stale_service_7(fake, tmp_path, capsys)
    before = snapshot(fake)
    cfg = write_config(tmp_path, doc([service("web", 0, 80), service("new", 7, 9001)], fake))
    code, out = run(capsys, cfg, "deploy")
    assert code == cli.ExitCode.INPUT and "config error: service[1].id = 7 is invalid" in out and "still holds 3 flow place(s)" in out and "deploy the pipeline again" in out, out
    assert snapshot(fake) == before
    cfg = write_config(tmp_path, doc([service("web", 0, 80), service("new", 8, 9001)], fake))  # an id no flow uses
    assert run(capsys, cfg, "deploy")[0] == 0 and 8 in fake.device.services()


def test_the_single_form_names_vip_service(fake, tmp_path, capsys):
    (tmp_path / "old").mkdir()
    stale_service_7(fake, tmp_path, capsys)
    before = snapshot(fake)
    s = parse({"vip": {"port": 9001, "service": 7}, "backend": backends(7), "flows": {"table_bits": P4LB_SMALL_TABLE_BITS}, "switch": doc([], fake)["switch"]})
    sw = P4RuntimeSwitch(s.switch.grpc, 0, (0, 9), s.switch.p4info, s.switch.bmv2_json, s.lb)
    try:
        with pytest.raises(ConfigFileError) as err:
            Controller(s, sw, grace_s=0).deploy()
        assert err.value.field == "vip.service" and "3 flow place(s)" in str(err.value)
    finally:
        sw.close()
    assert snapshot(fake) == before


def test_a_fresh_pipeline_clears_every_service(fake, tmp_path, capsys):
    (tmp_path / "old").mkdir()
    stale_service_7(fake, tmp_path, capsys)
    fake.device.reset()  # a switch restart: no pipeline
    cfg = write_config(tmp_path, doc([service("web", 0, 80), service("new", 7, 9001)], fake))
    code, out = run(capsys, cfg, "deploy")
    assert code == 0, out
    assert sorted(fake.device.services()) == [0, 7]


def test_a_switch_error_names_the_service(fake, tmp_path, capsys):
    cfg = two(fake, tmp_path)
    assert run(capsys, cfg, "deploy")[0] == 0
    fake.fail(Rpc.WRITE, grpc.StatusCode.RESOURCE_EXHAUSTED)
    code, out = run(capsys, cfg, "drain", "2", "--service", "api")
    assert code == cli.ExitCode.SWITCH and "switch error: service api: drain 2: write 1 of" in out, out


# ---- a known service's vip entry vanishes: the loop restores it -----------------------------------------------
def flows_of(fake: FakeP4Runtime, svc: int) -> dict[int, tuple[int, int]]:
    """The flow places held by a service's flows: slot -> (key, backend)."""
    return {i: (e.key, e.backend) for i, e in fake.device.state.flows.items() if e.state is not SlotState.FREE and key_service(e.key) == svc}


def loops_of(cfg: Path, state: Path | None) -> tuple[list[Controller], list[HealthLoop], list[Switch]]:
    """What `p4lb run` builds: one P4Runtime session for the config's services, a controller and a health loop
    each (every probe ok)."""
    config = load_config(cfg)
    switches = cli.make_switches(config, config.services, dry_run=False, one_shot=False)
    ctls = [Controller(s, sw, grace_s=0, state_file=state) for s, sw in zip(config.services, switches, strict=True)]
    return ctls, [HealthLoop(c, prober=lambda b, a: Probe(True, "test")) for c in ctls], switches


@pytest.mark.parametrize("state", [True, False], ids=["state file", "running loop only"])
def test_the_loop_restores_a_known_services_vanished_vip_entry_and_keeps_its_flows(fake, tmp_path, capsys, state):
    """api's vip entry deleted behind the controller's back while its flows remain: not a new service (the state
    file records api with id 5, or this loop saw its vip entry), so the next round restores the entry, its flows
    kept and still pinned, and the loop goes on (a round that raised would end `run`)."""
    cfg = two(fake, tmp_path)
    assert run(capsys, cfg, "deploy")[0] == 0
    for port in (4001, 4002, 4003):
        assert fake.device.inject(Packet(CLIENT, port, SYN, 0, 5)).fate is Fate.BACKEND
    pinned = {port: fake.device.inject(Packet(CLIENT, port, 0x10, 0, 5)).backend for port in (4001, 4002, 4003)}  # ACKs
    flows = flows_of(fake, 5)
    assert len(flows) == 3
    ctls, loops, switches = loops_of(cfg, cfg.with_suffix(".state.json") if state else None)
    try:
        assert [loop.round().applied.writes for loop in loops] == [(), ()]  # the loop runs: it reads both vip entries
        delete_vip_of(fake, 5)
        assert fake.device.services() == (0,) and flows_of(fake, 5) == flows
        web, api = (loop.round().applied for loop in loops)  # a round of each: api's redeploy restores its vip entry
        assert web.writes == () and api.writes and api.writes[-1].target == "vip"
        assert fake.device.services() == (0, 5) and flows_of(fake, 5) == flows
        st = fake.device.state_of(5)
        assert st.members(st.version) == (1, 2, 3)
        assert {port: fake.device.inject(Packet(CLIENT, port, 0x10, 0, 5)).backend for port in pinned} == pinned  # still pinned
        assert [loop.round().applied.writes for loop in loops] == [(), ()] and [c.converge(lambda p: p, "check").writes for c in ctls] == [(), ()]  # converged
    finally:
        for loop in loops:
            loop.monitor.close()
        for sw in switches:
            sw.close()


def test_a_new_services_loop_on_an_id_with_leftover_flows_is_still_refused(fake, tmp_path, capsys):
    """The same leftover flows, but the service running on their id is new (another config, its own state file,
    never saw a vip entry of its own): its round refuses to deploy it, naming the id, and writes nothing."""
    (tmp_path / "old").mkdir()
    stale_service_7(fake, tmp_path, capsys)
    before = snapshot(fake)
    cfg = write_config(tmp_path, doc([service("web", 0, 80), service("new", 7, 9001)], fake))
    ctls, loops, switches = loops_of(cfg, cfg.with_suffix(".state.json"))
    try:
        assert not ctls[1].manages()
        with pytest.raises(ConfigFileError) as err:
            run_all(loops[1:], rounds=1)
        assert err.value.field == "service[1].id" and "still holds 3 flow place(s)" in str(err.value)
    finally:
        for sw in switches:
            sw.close()
    assert snapshot(fake) == before


def test_a_state_file_of_the_name_under_another_id_is_a_new_service(tmp_path):
    """manages(): the state file must record the service under its name with its id."""
    path = tmp_path / "p4lb.state.json"
    web0, _ = parse_config(doc([service("web", 0, 80), service("b", 1, 81)])).services
    web3, _ = parse_config(doc([service("web", 3, 80, backend=backends(0)), service("b", 1, 81)])).services
    save_pool(path, Pool.initial(2), web0)
    assert Controller(web0, ModelSwitch(web0.lb), state_file=path).manages()
    assert not Controller(web3, ModelSwitch(web3.lb), state_file=path).manages()
    data = json.loads(path.read_text())
    del data["services"]["web"]["id"]  # a file written before ids were recorded: no evidence
    path.write_text(json.dumps(data))
    assert not Controller(web0, ModelSwitch(web0.lb), state_file=path).manages()


def test_loops_built_before_one_that_fails_are_closed(tmp_path):
    """`p4lb run` builds one health loop per service: if a later one cannot be built, the ones built before it
    close their monitors (event loop, probe sockets) before the error reaches the CLI."""
    from p4lb.controller.loop import health_loops  # noqa: PLC0415

    settings = parse_config(doc([service("web", 0, 80), service("api", 1, 81), service("db", 2, 82)])).services
    ctls = [Controller(s, ModelSwitch(s.lb)) for s in settings]
    built: list[HealthLoop] = []

    def make(ctl: Controller) -> HealthLoop:
        if ctl.settings.name == "db":
            raise ConfigFileError("service[2].health", "x", "cannot probe")
        built.append(HealthLoop(ctl))
        return built[-1]

    with pytest.raises(ConfigFileError):
        health_loops(ctls, make)
    assert len(built) == 2 and all(loop.monitor.loop.is_closed() for loop in built)
    fine = health_loops(ctls[:2], HealthLoop)
    assert not any(loop.monitor.loop.is_closed() for loop in fine)
    for loop in fine:
        loop.monitor.close()


# ---- p4lb retire: a service off the switch gracefully; deploy brings it back --------------------------------------
API = 5  # two(): web is service 0 (2 backends), api service 5 (3 backends), both on 10.0.0.1


def of_service(fake: FakeP4Runtime, svc: int) -> dict[Table, list[str]]:
    """The entries keyed by (or selecting) one service."""
    def mine(r: object) -> bool:
        return getattr(r, "params", {}).get("service") == svc or r.match.get("meta.lb.service") == svc  # type: ignore[attr-defined]

    return {t: sorted(repr(r) for r in fake.device.rows(t) if mine(r)) for t in (Table.VIP, Table.RR_GROUP, Table.RR_MEMBER, Table.BACKEND)}


def return_path(fake: FakeP4Runtime) -> set[tuple[str, object]]:
    """forward destinations and send_frame source addresses."""
    return {("forward", r.match["hdr.ipv4.dstAddr"]) for r in fake.device.rows(Table.FORWARD)} | {("send_frame", r.match["hdr.ipv4.srcAddr"]) for r in fake.device.rows(Table.SEND_FRAME)}


def test_retire_takes_one_service_off_and_leaves_the_other(fake, tmp_path, capsys, monkeypatch):
    """The vip entry goes first (no packet of the service reaches its groups or backends after it), the groups and
    backends next, the return path last; web's entries, routes and traffic are untouched."""
    cfg = two(fake, tmp_path)
    assert run(capsys, cfg, "deploy")[0] == 0
    assert fake.device.inject(Packet(CLIENT, 4001, SYN, 0, API)).fate is Fate.BACKEND
    web, paths = of_service(fake, 0), return_path(fake)
    order: list[str] = []
    real = P4rt.delete
    monkeypatch.setattr(P4rt, "delete", lambda rt, table, match: (order.append(table), real(rt, table, match))[1])
    code, out = run(capsys, cfg, "retire", "--service", "api", "--wait", "0")
    assert code == 0 and "retired api:" in out and "1 open connection(s) cut" in out and "p4lb deploy --service api" in out, out
    assert order[0] == "vip" and order.count("vip") == 1 and f"{len(order)} table entries deleted" in out
    assert order.index("rr_member") < order.index("backend") < order.index("forward") and set(order[-3:]) == {"send_frame"}
    assert fake.device.services() == (0,) and of_service(fake, API) == {t: [] for t in (Table.VIP, Table.RR_GROUP, Table.RR_MEMBER, Table.BACKEND)}
    assert of_service(fake, 0) == web  # web's entries untouched
    api_addrs = {ip(b["address"]) for b in backends(API, 3)}
    gone = paths - return_path(fake)
    assert gone == {("forward", (a, 32)) for a in api_addrs} | {("send_frame", a) for a in api_addrs}, gone  # the VIP address and client route serve web too
    assert fake.device.inject(Packet(CLIENT, 4002, SYN, 0, 0)).fate is Fate.BACKEND  # web still balances
    state = json.loads(cfg.with_suffix(".state.json").read_text())
    assert state["services"]["api"]["retirement"] == "retired" and "retirement" not in state["services"]["web"]
    code, out = run(capsys, cfg, "status", "--json")
    assert code == 0 and [s["retirement"] for s in json.loads(out)["services"]] == [None, "retired"], out


def test_retire_waits_for_open_connections_and_refuses_new_ones_meanwhile(fake, tmp_path, capsys):
    cfg = two(fake, tmp_path)
    assert run(capsys, cfg, "deploy")[0] == 0
    pinned = fake.device.inject(Packet(CLIENT, 4001, SYN, 0, API)).backend
    config = load_config(cfg)
    api = config.service("api")
    assert api is not None
    sw = cli.make_switches(config, (api,), dry_run=False, one_shot=True)[0]
    ctl = Controller(api, sw, grace_s=0, state_file=cfg.with_suffix(".state.json"))
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(ctl.retire(10.0, [s.lb for s in config.services if s.name != "api"], poll_s=0.05)))
    try:
        worker.start()
        deadline = time.monotonic() + 5
        while fake.device.state_of(API).members(fake.device.state_of(API).version) and time.monotonic() < deadline:
            time.sleep(0.02)  # the drain's commit: an empty group
        refused = fake.device.inject(Packet(CLIENT, 4002, SYN, 0, API))
        assert refused.fate is Fate.DROP and refused.reason is DropReason.NO_ELIGIBLE  # new connections refused
        assert fake.device.inject(Packet(CLIENT, 4001, ACK, 0, API)).backend == pinned  # the open one still served
        assert worker.is_alive() and API in fake.device.services()  # waiting for it
        code, out = run(capsys, cfg, "fail", "2", "--service", "web")  # meanwhile another controller writes: retire holds no session
        assert code == 0 and fake.device.state_of(0).members(fake.device.state_of(0).version) == (1,), out
        code, out = run(capsys, cfg, "undrain", "1", "--service", "api")
        assert code == cli.ExitCode.INPUT and "service api is retiring" in out, out
        fake.device.inject(Packet(CLIENT, 4001, FIN | ACK, 0, API))  # it ends
        worker.join(10)
    finally:
        sw.close()
    (r,) = got
    assert r.open_left == 0 and r.waited_s < 10 and r.deleted > 0 and fake.device.services() == (0,)  # type: ignore[attr-defined]


def test_a_retired_service_refuses_operations_the_loop_leaves_it_off_and_deploy_brings_it_back(fake, tmp_path, capsys):
    cfg = two(fake, tmp_path)
    assert run(capsys, cfg, "deploy")[0] == 0
    assert run(capsys, cfg, "drain", "3", "--service", "api")[0] == 0  # a set that must survive the retirement
    assert run(capsys, cfg, "retire", "--service", "api", "--wait", "0")[0] == 0
    before = snapshot(fake)
    code, out = run(capsys, cfg, "fail", "1", "--service", "api")
    assert code == cli.ExitCode.INPUT and "refused: service api is retired" in out and "p4lb deploy --service api" in out, out
    code, out = run(capsys, cfg, "retire", "--service", "api")
    assert code == cli.ExitCode.INPUT and "already retired" in out, out
    code, out = run(capsys, cfg, "deploy")  # every service: api stays off
    assert code == 0 and "skipped api: retired" in out and fake.device.services() == (0,), out
    assert snapshot(fake) == before
    _, loops, switches = loops_of(cfg, cfg.with_suffix(".state.json"))
    try:
        assert [loop.round().applied.writes for loop in loops] == [(), ()] and fake.device.services() == (0,)  # left off
    finally:
        for loop in loops:
            loop.monitor.close()
        for sw in switches:
            sw.close()
    code, out = run(capsys, cfg, "deploy", "--service", "api")
    assert code == 0, out
    st = fake.device.state_of(API)
    assert fake.device.services() == (0, API) and st.members(st.version) == (1, 2)  # its sets as before: 3 draining
    assert "retirement" not in json.loads(cfg.with_suffix(".state.json").read_text())["services"]["api"]
    assert fake.device.inject(Packet(CLIENT, 4003, SYN, 0, API)).fate is Fate.BACKEND


def test_an_interrupted_retire_keeps_the_sets_and_resumes(fake, tmp_path, capsys, monkeypatch):
    """The deletes miss their deadline after the drain's commit: the state file says retiring with the sets as they
    were, operations are refused, `retire` again finishes (the vip entry already gone or not), `deploy` restores."""
    cfg = two(fake, tmp_path)
    assert run(capsys, cfg, "deploy")[0] == 0
    assert run(capsys, cfg, "drain", "3", "--service", "api")[0] == 0
    real = P4rt.delete
    calls = []

    def flaky(rt: P4rt, table: str, match: dict) -> None:
        calls.append(table)
        if len(calls) == 2:
            raise SwitchError("write missed its deadline", GrpcCode.DEADLINE_EXCEEDED)
        real(rt, table, match)

    monkeypatch.setattr(P4rt, "delete", flaky)
    code, out = run(capsys, cfg, "retire", "--service", "api", "--wait", "0")
    assert code == cli.ExitCode.SWITCH and "missed its deadline" in out, out
    sets = json.loads(cfg.with_suffix(".state.json").read_text())["services"]["api"]
    assert sets["retirement"] == "retiring" and sets["draining"] == [3] and API not in fake.device.services()  # the vip entry went first
    code, out = run(capsys, cfg, "scale", "--active", "1", "--service", "api")
    assert code == cli.ExitCode.INPUT and "service api is retiring" in out, out
    code, out = run(capsys, cfg, "status", "--service", "api")
    assert code == 0 and "retiring (p4lb retire)" in out and "run p4lb retire again" in out, out
    code, out = run(capsys, cfg, "retire", "--service", "api", "--wait", "0")
    assert code == 0 and "retired api:" in out, out
    assert of_service(fake, API) == {t: [] for t in (Table.VIP, Table.RR_GROUP, Table.RR_MEMBER, Table.BACKEND)}
    assert run(capsys, cfg, "deploy", "--service", "api")[0] == 0
    st = fake.device.state_of(API)
    assert st.members(st.version) == (1, 2)


def test_a_retire_interrupted_by_a_switch_restart_finishes_with_nothing_to_delete(fake, tmp_path, capsys, monkeypatch):
    cfg = two(fake, tmp_path)
    assert run(capsys, cfg, "deploy")[0] == 0
    monkeypatch.setattr(P4rt, "delete", lambda rt, table, match: (_ for _ in ()).throw(SwitchError("switch gone", GrpcCode.UNAVAILABLE)))
    assert run(capsys, cfg, "retire", "--service", "api", "--wait", "0")[0] == cli.ExitCode.SWITCH
    monkeypatch.undo()
    fake.device.reset()  # restarted: no pipeline
    code, out = run(capsys, cfg, "retire", "--service", "api", "--wait", "0")
    assert code == 0 and "0 table entries deleted" in out, out
    assert json.loads(cfg.with_suffix(".state.json").read_text())["services"]["api"]["retirement"] == "retired"


def test_deploy_brings_back_a_service_whose_group_is_empty(fake, tmp_path, capsys):
    """Every backend drained, retired, deployed again: its vip entry commits the empty group (new flows counted as
    no_eligible), so operations reach it again."""
    cfg = two(fake, tmp_path)
    assert run(capsys, cfg, "deploy")[0] == 0
    for b in (1, 2, 3):
        assert run(capsys, cfg, "drain", b, "--service", "api")[0] == 0
    assert run(capsys, cfg, "retire", "--service", "api", "--wait", "0")[0] == 0
    code, out = run(capsys, cfg, "deploy", "--service", "api")
    assert code == 0 and "deployed: 1 writes" in out and API in fake.device.services(), out
    refused = fake.device.inject(Packet(CLIENT, 4001, SYN, 0, API))
    assert refused.fate is Fate.DROP and refused.reason is DropReason.NO_ELIGIBLE
    assert run(capsys, cfg, "undrain", "2", "--service", "api")[0] == 0
    assert fake.device.inject(Packet(CLIENT, 4002, SYN, 0, API)).backend == 2


def test_retiring_the_only_service_deletes_its_whole_return_path(fake, tmp_path, capsys):
    cfg = write_config(tmp_path, doc([service("solo", 3, 80)], fake))
    assert run(capsys, cfg, "deploy")[0] == 0
    code, out = run(capsys, cfg, "retire", "--wait", "0")
    assert code == 0 and "no open connection left" in out, out
    assert {t: rows for t, rows in snapshot(fake).items() if rows} == {}


def test_retiring_every_service_in_turn_empties_the_tables(fake, tmp_path, capsys):
    """The shared routes (the VIP address's drop, the client route) go with the last service on the switch."""
    cfg = two(fake, tmp_path)
    assert run(capsys, cfg, "deploy")[0] == 0
    assert run(capsys, cfg, "retire", "--service", "web", "--wait", "0")[0] == 0
    assert ("forward", (ip("10.0.0.1"), 32)) in return_path(fake)
    assert run(capsys, cfg, "retire", "--service", "api", "--wait", "0")[0] == 0
    assert {t: rows for t, rows in snapshot(fake).items() if rows} == {}


def test_a_retired_vip_entry_deleted_by_hand_is_nothing_to_retire(fake, tmp_path, capsys):
    cfg = two(fake, tmp_path)
    assert run(capsys, cfg, "deploy")[0] == 0
    delete_vip_of(fake, API)
    before = snapshot(fake)
    code, out = run(capsys, cfg, "retire", "--service", "api")
    assert code == cli.ExitCode.INPUT and "no vip entry on the switch selects it" in out, out
    assert snapshot(fake) == before


@pytest.mark.parametrize(("argv", "says"), [(["--wait", "-1"], "out of range"), (["--wait", "soon"], "is not a number of seconds"), ([], "give `retire` --service NAME")])
def test_bad_retire_arguments_write_nothing(fake, tmp_path, capsys, argv, says):
    cfg = two(fake, tmp_path)
    assert run(capsys, cfg, "deploy")[0] == 0
    before = snapshot(fake)
    code, out = run(capsys, cfg, "retire", *argv, *(["--service", "api"] if argv else []))
    assert code == cli.ExitCode.INPUT and says in out, out
    assert snapshot(fake) == before
