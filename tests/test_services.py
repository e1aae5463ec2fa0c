"""One service per controller (vip.service) on a switch that serves several: against the fake P4Runtime switch, a
controller configured with service 7 writes only entries keyed by 7 and reads only service 7's register and counter
cells; a second controller (service 0, another VIP port) on the same switch leaves them alone. No BMv2 needed."""

from __future__ import annotations

import faulthandler
from dataclasses import replace
from pathlib import Path

import pytest
from google.protobuf import text_format
from p4.config.v1 import p4info_pb2
from p4.v1 import p4runtime_pb2

from p4lb.controller import cli
from p4lb.controller.controller import Controller
from p4lb.controller.errors import ConfigFileError
from p4lb.controller.settings import Settings, parse
from p4lb.controller.switch import CPU_OPEN, DROP_REASONS, OPEN_BLOCKS, P4RuntimeSwitch
from p4lb.lab.fake_p4rt import FakeP4Runtime, Table
from p4lb.model.config import P4LB_SMALL_TABLE_BITS
from p4lb.model.crc import ip
from p4lb.model.ops import Drain
from p4lb.model.p4lb import OPEN_PER_SERVICE
from p4lb.model.packet import ACK, FIN, SYN, Fate, Packet, key_service

WATCHDOG_S = 60
SERVICE = 7
CLIENT = ip("10.0.0.9")
BACKENDS = [{"address": f"10.0.{i + 1}.{i + 1}", "mac": f"00:00:00:00:0{i + 1}:0{i + 1}", "port": i + 1} for i in range(1, 5)]


@pytest.fixture(autouse=True)
def watchdog():
    """A hung test kills the run (with stacks) instead of hanging it."""
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


class Recorder:
    """What the controllers asked of the fake switch: every PacketOut's header, every counter cell read."""

    def __init__(self, fake: FakeP4Runtime) -> None:
        self.packet_outs: list[dict[str, int]] = []
        self.counter_cells: list[tuple[str, int | None]] = []
        device = fake.device
        packet_out, read = device.packet_out, device.read

        def record_packet_out(packet: p4runtime_pb2.PacketOut) -> object:
            names = device.pipeline.packet_out if device.pipeline else {}
            self.packet_outs.append({names.get(m.metadata_id, "?"): int.from_bytes(m.value, "big") for m in packet.metadata})
            return packet_out(packet)

        def record_read(entity: p4runtime_pb2.Entity) -> object:
            if entity.WhichOneof("entity") == "counter_entry" and device.pipeline is not None:
                ce = entity.counter_entry
                self.counter_cells.append((device.pipeline.counters.get(ce.counter_id, "?"), ce.index.index if ce.HasField("index") else None))
            return read(entity)

        device.packet_out = record_packet_out  # type: ignore[method-assign]
        device.read = record_read  # type: ignore[method-assign]

    def clear(self) -> None:
        """Forget what was recorded."""
        self.packet_outs.clear()
        self.counter_cells.clear()


@pytest.fixture
def fake():
    server = FakeP4Runtime().start()
    yield server
    server.stop()


SMALL = Path(__file__).resolve().parents[1] / "src" / "p4lb" / "p4" / "build"  # p4lb_small: 32 flow places, a scan is one request


def settings_for(fake: FakeP4Runtime, service: int, port: int) -> Settings:
    switch = {"grpc": fake.address, "p4info": str(SMALL / "p4lb_small.p4info.txtpb"), "bmv2_json": str(SMALL / "p4lb_small.json")}
    return parse({"vip": {"address": "10.0.0.1", "port": port, "service": service}, "flows": {"table_bits": P4LB_SMALL_TABLE_BITS}, "backend": [dict(b) for b in BACKENDS], "switch": switch})


def make_switch(settings: Settings, election_id: tuple[int, int]) -> P4RuntimeSwitch:
    t = settings.switch
    return P4RuntimeSwitch(t.grpc, t.device_id, election_id, t.p4info, t.bmv2_json, settings.lb)


def syn(port: int, service: int, flags: int = SYN) -> Packet:
    return Packet(CLIENT, port, flags, 0, service)


def test_a_service_7_controller_writes_and_reads_only_service_7(fake):
    rec = Recorder(fake)
    s7 = settings_for(fake, SERVICE, 8080)
    sw7 = make_switch(s7, (0, 1))
    ctl7 = Controller(s7, sw7, grace_s=0)
    try:
        ctl7.deploy()
        ctl7.apply(Drain(2))
        rows = fake.device.rows
        vip = rows(Table.VIP)
        assert [(r.match["hdr.tcp.dstPort"], r.params["service"]) for r in vip] == [(8080, SERVICE)]
        for table in (Table.RR_GROUP, Table.RR_MEMBER, Table.BACKEND):
            assert rows(table) and {r.exact("meta.lb.service") for r in rows(table)} == {SERVICE}, table
        assert fake.device.state_of(SERVICE).members(fake.device.state_of(SERVICE).version) == (1, 4, 3)  # in place

        for port in range(5000, 5006):  # service 7's traffic: its flows, counters and backend_open cells move
            out = fake.device.inject(syn(port, SERVICE))
            assert out.fate is Fate.BACKEND and out.backend in (1, 3, 4)
        fake.device.inject(syn(5000, SERVICE, FIN | ACK))
        fake.device.inject(syn(6000, SERVICE, ACK))  # a stray: unknown_flow
        rec.clear()
        view = sw7.read()
        assert rec.packet_outs and {p["service"] for p in rec.packet_outs} == {SERVICE}
        assert {p["index"] for p in rec.packet_outs if p["op"] == CPU_OPEN} == {SERVICE * OPEN_BLOCKS}
        cells = {name: {i for n, i in rec.counter_cells if n == name} for name in ("lb_drops", "backend_flows")}
        assert cells["lb_drops"] == set(range(SERVICE * DROP_REASONS, (SERVICE + 1) * DROP_REASONS))
        assert cells["backend_flows"] == set(range(SERVICE * OPEN_PER_SERVICE, SERVICE * OPEN_PER_SERVICE + len(BACKENDS) + 1))
        st = fake.device.state_of(SERVICE)
        assert view.rr_next == st.rr_next and sum(view.backend_flows.values()) == 6 and view.lb_drops["unknown_flow"] == 1
        assert view.backend_open == {cell - SERVICE * OPEN_PER_SERVICE: c for cell, c in st.backend_open.items() if c} and sum(view.backend_open.values()) == 5

        # a second controller: service 0 on port 80 of the same VIP, one session at a time (each is primary in turn)
        sw7.close()
        s0 = settings_for(fake, 0, 80)
        sw0 = make_switch(s0, (0, 2))
        ctl0 = Controller(s0, sw0, grace_s=0)
        try:
            ctl0.deploy()  # the pipeline runs: no push, service 7 keeps its entries and flows
            for port in range(5000, 5003):  # the same client address and ports: flows of their own
                assert fake.device.inject(syn(port, 0)).fate is Fate.BACKEND
            fake.device.inject(syn(7000, 0, ACK))
            assert sum(r.flows_dispatched for r in ctl0.status()) == 3 and ctl0.drops()["unknown_flow"] == 1
        finally:
            sw0.close()
        assert {r.exact("meta.lb.service") for r in rows(Table.RR_MEMBER)} == {0, SERVICE}
        assert sorted((r.match["hdr.tcp.dstPort"], r.params["service"]) for r in rows(Table.VIP)) == [(80, 0), (8080, SERVICE)]
        rec.clear()
        again = sw7.read()
        assert (again.version, again.groups, again.backend_flows, again.backend_open, again.lb_drops) == (view.version, view.groups, view.backend_flows, view.backend_open, view.lb_drops)
        assert {p["service"] for p in rec.packet_outs} == {SERVICE}

        listed = list(cli.flow_rows(ctl7))  # `p4lb flows`: service 7's flows only, clients from the keys' low 48 bits
        assert sorted(r["client"] for r in listed) == [f"10.0.0.9:{p}" for p in range(5001, 5006)]
        assert all(key_service(e.key) == SERVICE for _, e in sw7.iter_open_flows())
        report = cli.flow_report(ctl7, Packet(CLIENT, 5001, 0))
        assert report["found"] and report["held_by"] == "this connection"
    finally:
        sw7.close()


def deploy_service_0(fake: FakeP4Runtime) -> Settings:
    """Service 0 on port 80 of the VIP, deployed (its session closed)."""
    s0 = settings_for(fake, 0, 80)
    sw0 = make_switch(s0, (0, 1))
    try:
        Controller(s0, sw0, grace_s=0).deploy()
    finally:
        sw0.close()
    return s0


def test_a_vip_entry_of_another_service_is_a_config_error(fake):
    deploy_service_0(fake)
    s3 = settings_for(fake, 3, 80)  # the same VIP:port, another service id
    sw3 = make_switch(s3, (0, 1))
    try:
        with pytest.raises(ConfigFileError) as err:
            Controller(s3, sw3, grace_s=0).deploy()
        assert err.value.field == "vip.service" and "selects service 0" in str(err.value)
        assert {r.exact("meta.lb.service") for r in fake.device.rows(Table.RR_MEMBER)} == {0}  # nothing written
    finally:
        sw3.close()


@pytest.mark.parametrize(("changes", "field", "says"), [
    ({"vip": {"address": "10.0.0.1", "port": 81, "service": 0}}, "vip.service", "already selects service 0"),
    ({"vip": {"address": "10.0.0.1", "port": 81, "service": 4}, "flows": {"table_bits": P4LB_SMALL_TABLE_BITS, "idle_timeout_s": 5}}, "flows.idle_timeout_s", "set flows.idle_timeout_s = 60"),
    ({"vip": {"address": "10.0.0.2", "port": 81, "service": 4}}, "backend[0].address", "leave from one source"),
], ids=["same id, another VIP", "another idle timeout", "another VIP address for the same backend address"])
def test_a_second_service_that_would_change_the_first_is_refused(fake, changes: dict, field: str, says: str):
    """Service 0 deployed; a second configuration that would share its groups (same id), change the idle timeout
    every service shares, or rewrite the replies of a backend address the first one uses toward the client port to
    its own address is refused, writing nothing."""
    s0 = deploy_service_0(fake)
    before = {t: sorted(map(repr, fake.device.rows(t))) for t in (Table.VIP, Table.RR_GROUP, Table.RR_MEMBER, Table.BACKEND)}
    timeout = fake.device.idle_timeout_us
    t = s0.switch
    raw = {"vip": {"address": "10.0.0.1", "port": 80}, "flows": {"table_bits": P4LB_SMALL_TABLE_BITS}, "backend": [dict(b) for b in BACKENDS], "switch": {"grpc": fake.address, "p4info": str(t.p4info), "bmv2_json": str(t.bmv2_json)}} | changes
    s1 = parse(raw)
    sw1 = make_switch(s1, (0, 1))
    try:
        with pytest.raises(ConfigFileError) as err:
            Controller(s1, sw1, grace_s=0).deploy()
        assert err.value.field == field and says in str(err.value), str(err.value)
    finally:
        sw1.close()
    assert {t: sorted(map(repr, fake.device.rows(t))) for t in before} == before and fake.device.idle_timeout_us == timeout


def test_an_older_program_without_services_is_refused_before_any_write(fake, tmp_path: Path):
    s = settings_for(fake, 0, 80)
    info = p4info_pb2.P4Info()
    text_format.Merge(Path(s.switch.p4info).read_text(), info, allow_unknown_field=True)
    for action in info.actions:
        if action.preamble.name.endswith("lb_select"):
            keep = [p for p in action.params if p.name != "service"]
            del action.params[:]
            action.params.extend(keep)
    old = tmp_path / "old.p4info.txtpb"
    old.write_text(text_format.MessageToString(info))
    sw = P4RuntimeSwitch(s.switch.grpc, 0, (0, 1), str(old), s.switch.bmv2_json, s.lb)
    try:
        with pytest.raises(ConfigFileError) as err:
            sw.preflight()
        assert err.value.field == "switch.p4info" and "one service only" in str(err.value)
    finally:
        sw.close()


def test_the_model_switch_shows_only_its_service():
    from p4lb.controller.switch import ModelSwitch  # noqa: PLC0415

    s = parse({"vip": {"service": SERVICE}, "backend": [dict(b) for b in BACKENDS]})
    sw = ModelSwitch(s.lb)
    Controller(s, sw, grace_s=0).deploy()
    from p4lb.model.p4lb import P4LB, p4lb_packet  # noqa: PLC0415

    st, out = p4lb_packet(s.lb, P4LB, sw.state, syn(4000, SERVICE))
    assert out.fate is Fate.BACKEND
    other = replace(syn(4000, 0), src_port=4001)
    st, _ = p4lb_packet(s.lb, P4LB, st, other)  # a flow of another service in the shared table
    sw.state = st
    assert [key_service(e.key) for _, e in sw.iter_open_flows()] == [SERVICE]
    assert sw.read().backend_open == {out.backend: 1}
