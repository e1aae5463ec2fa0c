"""Two services on one BMv2 switch, each deployed by its own controller config (vip.service 0 on VIP:80 over lab
backends 1-2, vip.service 1 on VIP:8080 over lab backends 3-4), one P4Runtime session at a time: each service's
packets reach only its own backends; one client address and port toward both VIPs makes two independent pinned
flows; each service's lb_drops, backend_flows and backend_open cells move only for its own packets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from p4lb.controller import cli
from p4lb.controller.controller import Controller
from p4lb.controller.p4rt import P4rt
from p4lb.controller.settings import HealthCheck, Settings, SwitchTarget
from p4lb.controller.switch import P4RuntimeSwitch, SwitchView
from p4lb.lab.driver import tcp_frame
from p4lb.lab.lab import lab_build
from p4lb.lab.toolchain import artifacts, require_switch
from p4lb.model.config import P4LB_SMALL_TABLE_BITS, Backend, LbConfig, default_config
from p4lb.model.crc import ip, ip_str
from p4lb.model.packet import ACK, FIN, PSH, SYN, Packet

CLIENT = ip("10.0.0.10")
PORTS = (40000, 40001, 40002, 40003)  # the same client ports toward both VIPs


@pytest.fixture(scope="module")
def lab() -> Iterator[object]:
    """BMv2 running p4lb_small (32 flow places: a flow listing is one CPU_SCAN) between a client and 4 backends; no P4Runtime session of its own (the controllers hold theirs)."""
    require_switch()
    from p4lb.lab.lab import Lab  # noqa: PLC0415

    with Lab("p4lb", default_config(4, flow_table_bits=P4LB_SMALL_TABLE_BITS), push=False) as lab:
        yield lab


def service_config(lab_cfg: LbConfig, service: int, vip_port: int, lab_ids: tuple[int, ...]) -> LbConfig:
    """A service over some of the lab's backends (renumbered 1..N, as a config numbers them)."""
    own = tuple(Backend(i, b.ip, b.mac, b.port) for i, b in enumerate((lab_cfg.backend(j) for j in lab_ids), start=1))
    return LbConfig(vip=lab_cfg.vip, vip_port=vip_port, backends=own, service=service, client_port=lab_cfg.client_port, client_net=lab_cfg.client_net, client_prefix=lab_cfg.client_prefix, client_mac=lab_cfg.client_mac, flow_table_bits=lab_cfg.flow_table_bits)


class Service:
    """One service's controller: its config, its P4Runtime switch (a session only while in use), its controller."""

    def __init__(self, lab: object, cfg: LbConfig) -> None:
        p4info, bmv2_json = artifacts(lab_build("p4lb", cfg))
        grpc = lab.bmv2.grpc  # type: ignore[attr-defined]
        self.cfg = cfg
        self.switch = P4RuntimeSwitch(grpc, 0, (0, 1), str(p4info), str(bmv2_json), cfg)
        settings = Settings(cfg, HealthCheck(), SwitchTarget(grpc=grpc, p4info=str(p4info), bmv2_json=str(bmv2_json)), cfg.n, ())
        self.ctl = Controller(settings, self.switch, grace_s=0)
        self.ports = {b.port for b in cfg.backends}

    def deploy(self) -> None:
        """Deploy, then leave the switch to the other controller."""
        try:
            assert self.ctl.deploy()
        finally:
            self.switch.close()

    def view(self) -> SwitchView:
        """Everything read back: tables, the service's rr_next, lb_drops, backend_flows and backend_open cells."""
        try:
            return self.switch.read()
        finally:
            self.switch.close()

    def flows(self) -> list[str]:
        """`p4lb flows`: the clients of the service's open flows."""
        try:
            return sorted(str(r["client"]) for r in cli.flow_rows(self.ctl))
        finally:
            self.switch.close()


def counts(view: SwitchView) -> tuple[dict[str, int], dict[int, int], dict[int, int]]:
    return dict(view.lb_drops), dict(view.backend_flows), dict(view.backend_open)


def send(lab: object, svc: Service, port: int, flags: int) -> list[int]:
    """One client packet to the service's VIP:port; the switch ports it left on."""
    return [s.port for s in lab.send(tcp_frame(svc.cfg, Packet(CLIENT, port, flags, service=svc.cfg.service)))]  # type: ignore[attr-defined]


def test_two_services_on_one_switch_are_independent(lab):
    lab.reset()  # an empty pipeline: the first deploy finds its pipeline running and no vip entry of its own
    s0 = Service(lab, service_config(lab.cfg, 0, 80, (1, 2)))
    s1 = Service(lab, service_config(lab.cfg, 1, 8080, (3, 4)))
    s0.deploy()
    s1.deploy()  # the pipeline runs: no push, service 0's entries stay
    v0, v1 = s0.view(), s1.view()
    assert v0.version is not None and v1.version is not None
    assert set(v0.groups[v0.version]) == {1, 2} and set(v1.groups[v1.version]) == {1, 2}
    assert counts(v0) == counts(v1) == ({k: 0 for k in v0.lb_drops}, {}, {})

    # new flows: each service's SYNs reach only its backends; the same client ports toward both VIPs
    first: dict[tuple[int, int], int] = {}
    for port in PORTS:
        for svc in (s0, s1):
            out = send(lab, svc, port, SYN)
            assert len(out) == 1 and out[0] in svc.ports, (svc.cfg.service, port, out)
            first[svc.cfg.service, port] = out[0]
    a0, a1 = s0.view(), s1.view()
    assert sum(a0.backend_flows.values()) == sum(a1.backend_flows.values()) == len(PORTS)
    assert sum(a0.backend_open.values()) == sum(a1.backend_open.values()) == len(PORTS)
    assert set(a0.backend_flows) <= {1, 2} and set(a1.backend_flows) <= {1, 2}
    assert s0.flows() == s1.flows() == sorted(f"10.0.0.10:{p}" for p in PORTS)  # one flow per service per client port

    # pinned independently: the same client address and port keeps going to its own backend of each service
    for _ in range(2):
        for port in PORTS[:2]:
            for svc in (s0, s1):
                assert send(lab, svc, port, PSH | ACK) == [first[svc.cfg.service, port]]

    # a stray ACK to service 1 only: service 1's lb_drops[unknown_flow] moves, service 0's cells do not
    b0, b1 = counts(s0.view()), counts(s1.view())
    assert send(lab, s1, 41000, ACK) == []
    c0, c1 = counts(s0.view()), counts(s1.view())
    assert c0 == b0
    assert c1[0]["unknown_flow"] == b1[0]["unknown_flow"] + 1 and c1[1:] == b1[1:]

    # a FIN of service 0's flow: its backend_open cell goes down, service 1's (same client port) does not
    assert send(lab, s0, PORTS[0], FIN | ACK) == [first[0, PORTS[0]]]
    d0, d1 = counts(s0.view()), counts(s1.view())
    assert d1 == c1
    b = first[0, PORTS[0]] - min(s0.ports) + 1  # service 0's backend id of that port
    assert d0[2] == c0[2] | {b: c0[2][b] - 1} or (c0[2][b] == 1 and d0[2] == {k: v for k, v in c0[2].items() if k != b})
    assert d0[:2] == c0[:2]
    assert s0.flows() == sorted(f"10.0.0.10:{p}" for p in PORTS[1:]) and len(s1.flows()) == len(PORTS)


def service_table(name: str, cfg: LbConfig) -> str:
    """One [[service]] table of a TOML config for a service over some of the lab's backends."""
    lines = [f'[[service]]\nname = "{name}"\naddress = "{ip_str(cfg.vip)}"\nport = {cfg.vip_port}\nid = {cfg.service}\nclient_port = {cfg.client_port}',
             f'client_net = "{ip_str(cfg.client_net)}/{cfg.client_prefix}"\nclient_mac = "{mac_str(cfg.client_mac)}"']
    lines += [f'[[service.backend]]\naddress = "{ip_str(b.ip)}"\nmac = "{mac_str(b.mac)}"\nport = {b.port}' for b in cfg.backends]
    return "\n".join(lines) + "\n"


def mac_str(mac: int) -> str:
    return ":".join(f"{mac >> (8 * i) & 0xFF:02x}" for i in range(5, -1, -1))


def multi_config(lab: object, path: Path, services: dict[str, LbConfig]) -> Path:
    """A [[service]] configuration of these services on the lab's switch (its own state file beside it)."""
    p4info, bmv2_json = artifacts(lab_build("p4lb", lab.cfg))  # type: ignore[attr-defined]
    head = f'[switch]\ngrpc = "{lab.bmv2.grpc}"\np4info = "{p4info}"\nbmv2_json = "{bmv2_json}"\n[flows]\ntable_bits = {P4LB_SMALL_TABLE_BITS}\n'  # type: ignore[attr-defined]
    path.write_text(head + "".join(service_table(n, c) for n, c in services.items()))
    return path


def test_one_config_of_two_services_and_a_stale_id(lab, tmp_path, monkeypatch, capsys):
    """One [[service]] config deploys both services with one command; each service's SYNs reach only its backends
    and `flows` lists both; once service 1's vip entry is gone (its flows stay), a new service on id 1 is refused
    before any write, and deploys once the pipeline is pushed again."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    lab.reset()
    web, api = service_config(lab.cfg, 0, 80, (1, 2)), service_config(lab.cfg, 1, 8080, (3, 4))
    cfg = multi_config(lab, tmp_path / "p4lb.toml", {"web": web, "api": api})
    assert cli.main(["-c", str(cfg), "deploy"]) == 0
    for port in PORTS[:2]:
        for svc in (web, api):
            out = [s.port for s in lab.send(tcp_frame(svc, Packet(CLIENT, port, SYN, service=svc.service)))]
            assert len(out) == 1 and out[0] in {b.port for b in svc.backends}, (svc.service, port, out)
    capsys.readouterr()
    assert cli.main(["-c", str(cfg), "flows", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()][:-1]
    assert sorted((r["service"], r["client"]) for r in rows) == sorted((n, f"10.0.0.10:{p}") for n in ("web", "api") for p in PORTS[:2])

    with P4rt(lab.bmv2.grpc, election_id=(0, 200)) as rt:
        rt.load_p4info()
        rt.delete("vip", {"hdr.ipv4.dstAddr": api.vip, "hdr.tcp.dstPort": api.vip_port})
        before = {t: sorted(map(repr, rt.read_table(t))) for t in ("vip", "rr_group", "rr_member", "backend")}
    new = replace(api, vip_port=9090)
    (tmp_path / "new").mkdir()
    stale = multi_config(lab, tmp_path / "new" / "p4lb.toml", {"web": web, "new": new})
    assert cli.main(["-c", str(stale), "deploy"]) == cli.ExitCode.INPUT
    out = capsys.readouterr().out
    assert "config error: service[1].id = 1 is invalid" in out and "still holds 2 flow place(s)" in out, out
    with P4rt(lab.bmv2.grpc, election_id=(0, 200)) as rt:
        rt.load_p4info()
        assert {t: sorted(map(repr, rt.read_table(t))) for t in before} == before
    lab.reset()  # a pipeline pushed again: every service's flows gone
    assert cli.main(["-c", str(stale), "deploy"]) == 0


def test_retire_takes_one_service_off_bmv2_and_deploy_brings_it_back(lab, tmp_path, monkeypatch, capsys):
    """`p4lb retire --service api`: api's SYNs reach no backend (its vip entry gone; the VIP address's drop route
    stays, web uses it), web's entries and traffic are untouched, a deploy of every service leaves api off, and
    `deploy --service api` brings it back."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    lab.reset()
    web, api = service_config(lab.cfg, 0, 80, (1, 2)), service_config(lab.cfg, 1, 8080, (3, 4))
    cfg = multi_config(lab, tmp_path / "p4lb.toml", {"web": web, "api": api})
    assert cli.main(["-c", str(cfg), "deploy"]) == 0

    def ports(svc: LbConfig, port: int) -> list[int]:
        return [s.port for s in lab.send(tcp_frame(svc, Packet(CLIENT, port, SYN, service=svc.service)))]

    assert ports(api, PORTS[0])[0] in {b.port for b in api.backends}
    with P4rt(lab.bmv2.grpc, election_id=(0, 200)) as rt:
        rt.load_p4info()
        web_rows = sorted(repr(r) for t in ("vip", "rr_group", "rr_member", "backend") for r in rt.read_table(t) if r.params.get("service") == 0 or r.match.get("meta.lb.service") == 0)
    capsys.readouterr()
    assert cli.main(["-c", str(cfg), "retire", "--service", "api", "--wait", "0"]) == 0
    out = capsys.readouterr().out
    assert "retired api:" in out and "1 open connection(s) cut" in out, out
    assert ports(api, PORTS[1]) == [] and ports(web, PORTS[1])[0] in {b.port for b in web.backends}
    with P4rt(lab.bmv2.grpc, election_id=(0, 200)) as rt:
        rt.load_p4info()
        rows = {t: rt.read_table(t) for t in ("vip", "rr_group", "rr_member", "backend")}
    assert not [r for t, rs in rows.items() for r in rs if r.params.get("service") == 1 or r.match.get("meta.lb.service") == 1]
    assert sorted(repr(r) for rs in rows.values() for r in rs if r.params.get("service") == 0 or r.match.get("meta.lb.service") == 0) == web_rows
    assert cli.main(["-c", str(cfg), "deploy"]) == 0  # every service: api stays retired
    assert ports(api, PORTS[2]) == [] and "skipped api: retired" in capsys.readouterr().out
    assert cli.main(["-c", str(cfg), "deploy", "--service", "api"]) == 0
    assert ports(api, PORTS[2])[0] in {b.port for b in api.backends}
