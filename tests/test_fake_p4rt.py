"""The real P4Runtime client (P4rt, P4RuntimeSwitch) and the controller against the fake P4Runtime switch on 127.0.0.1:
deploy and operations as the model does them, read-back, the CPU-port register protocol, arbitration and faults.
No BMv2 needed; every test is bounded by a watchdog and blocking calls run on threads with timeouts."""

from __future__ import annotations

import faulthandler
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf import text_format
from p4.v1 import p4runtime_pb2

from p4lb.controller.controller import Controller, batches
from p4lb.controller.errors import GrpcCode, SwitchError
from p4lb.controller.p4rt import P4rt
from p4lb.controller.settings import Settings, parse
from p4lb.controller.switch import CPU_READ, CPU_SCAN, CPU_WRITE_RR_NEXT, SCAN_SLOT, SCAN_WIDTH, ModelSwitch, P4RuntimeSwitch, SwitchView
from p4lb.lab.fake_p4rt import FakeP4Runtime, Rpc, Table
from p4lb.model.crc import ip
from p4lb.model.ops import Drain, Fail, Heal, Scale, Undrain
from p4lb.model.p4lb import P4LB, flow_slot, p4lb_packet
from p4lb.model.packet import ACK, FIN, SYN, DropReason, Fate, Packet
from p4lb.p4 import artifacts

WATCHDOG_S = 60  # no test may take longer: the process dumps every thread's stack and exits
BACKENDS = [{"address": f"10.0.{i + 1}.{i + 1}", "mac": f"00:00:00:00:0{i + 1}:0{i + 1}", "port": i + 1} for i in range(1, 5)]
CLIENT = ip("10.0.0.9")


@pytest.fixture(autouse=True)
def watchdog():
    """A hung test kills the run (with stacks) instead of hanging it."""
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def fake():
    server = FakeP4Runtime().start()
    yield server
    server.stop()


@pytest.fixture
def settings(fake) -> Settings:
    return parse({"vip": {"address": "10.0.0.1", "port": 80}, "backend": [dict(b) for b in BACKENDS], "switch": {"grpc": fake.address}})


def make_switch(settings: Settings, election_id: tuple[int, int] = (0, 1)) -> P4RuntimeSwitch:
    t = settings.switch
    return P4RuntimeSwitch(t.grpc, t.device_id, election_id, t.p4info, t.bmv2_json, settings.lb)


@pytest.fixture
def switch(settings):
    sw = make_switch(settings)
    yield sw
    sw.close()


@pytest.fixture
def ctl(settings, switch) -> Controller:
    return Controller(settings, switch, grace_s=0)


@dataclass
class Worker:
    """A call on its own thread, so a hang shows as a timeout rather than a hung test."""

    call: Callable[[], object]
    result: list[object] = field(default_factory=list)
    error: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result.append(self.call())
        except BaseException as exc:  # noqa: BLE001 (reported to the test)
            self.error.append(exc)

    def done_within(self, seconds: float) -> bool:
        """True if the call returned or raised within `seconds`."""
        self.thread.join(seconds)
        return not self.thread.is_alive()


def syn(port: int, t: int = 0, flags: int = SYN) -> Packet:
    return Packet(CLIENT, port, flags, t)


# ---- deploy and operations -------------------------------------------------------------------------------------
def test_deploy_installs_the_pipeline_backends_and_group(fake, ctl, settings):
    writes = ctl.deploy()
    st = fake.device.state
    assert writes[-1].target == "vip" and fake.device.deployed
    assert st.members(st.version) == (1, 2, 3, 4) and st.rr_next == (0, 0)
    assert fake.device.idle_timeout_us == settings.lb.idle_timeout_us
    assert sorted(r.match["meta.lb.backend"] for r in fake.device.rows(Table.BACKEND)) == [1, 2, 3, 4]
    assert {r.params["sip"] for r in fake.device.rows(Table.SEND_FRAME)} == {settings.lb.vip}
    assert len(fake.device.rows(Table.FORWARD)) == 6  # 4 backends, the VIP's drop, the client net
    assert fake.primary == (0, 1)
    assert ctl.deploy() == []  # idempotent: the second deploy reconciles and finds nothing to do


OPS = [Fail(2), Scale(3), Heal(2), Drain(1), Fail(3), Undrain(1), Scale(4), Fail(1), Fail(4), Heal(1)]


def test_operations_write_what_the_model_writes(fake, ctl, settings):
    model = ModelSwitch(settings.lb)
    reference = Controller(settings, model, grace_s=0)
    assert ctl.deploy() == reference.deploy()
    for op in OPS:
        assert ctl.apply(op).writes == reference.apply(op).writes, op
        st, want = fake.device.state, model.state
        assert (st.version, st.members(0), st.members(1), st.rr_next) == (want.version, want.members(0), want.members(1), want.rr_next), op
        assert ctl.switch.read(full=False) == SwitchView(version=want.version, groups=(want.members(0), want.members(1)))


def test_status_and_counters_read_back_as_the_model_counts(fake, ctl, settings):
    model = ModelSwitch(settings.lb)
    reference = Controller(settings, model, grace_s=0)
    ctl.deploy()
    reference.deploy()
    packets = [syn(1000 + i, 10 + i) for i in range(9)] + [syn(1000, 30, ACK), syn(1001, 31, FIN), syn(7, 32, ACK), syn(8, 33, SYN | FIN)]
    for pkt in packets:
        got = fake.device.inject(pkt)
        model.state, want = p4lb_packet(settings.lb, P4LB, model.state, pkt)
        assert got == want, pkt
    rows, drops = ctl.status(), ctl.drops()
    assert rows == reference.status() and drops == reference.drops()
    assert drops["unknown_flow"] == 1 and drops["malformed"] == 1
    assert sum(r.flows_dispatched for r in rows) == 9
    assert sum(r.open_flows for r in rows) == 8  # one of the nine is closing (FIN)


def test_a_backend_without_entry_is_a_counted_black_hole(fake, ctl, switch):
    ctl.deploy()
    switch.rt.delete("backend", {"meta.lb.service": 0, "meta.lb.backend": 2})
    outcomes = [fake.device.inject(syn(2000 + i)) for i in range(4)]
    assert [o.fate for o in outcomes].count(Fate.DROP) == 1
    assert ctl.drops()["no_backend_entry"] == 1
    assert fake.device.state.lb_drops[DropReason.NO_BACKEND_ENTRY] == 1


# ---- the CPU port ----------------------------------------------------------------------------------------------
def test_cpu_port_writes_rr_next_and_reads_a_flow_slot(fake, ctl, switch, settings):
    ctl.deploy()
    got = switch.cpu(CPU_WRITE_RR_NEXT, 3, 0x1_02)  # index & 1 selects the version, the value is cut to bit<8>
    assert fake.device.state.rr_next[1] == 2 and got["rr_next1"] == 2 and got["value"] == 0x102
    switch.cpu(CPU_WRITE_RR_NEXT, 1, 0)
    pkt = syn(4242, 777)
    fake.device.inject(pkt)
    slot = flow_slot(settings.lb, pkt)
    row = switch.read_slot(slot)
    assert (row["flow_state"], row["flow_key"], row["flow_backend"], row["flow_last_seen"]) == (1, pkt.key, 1, 777)
    assert row["idle_timeout"] == settings.lb.idle_timeout_us and row["now"] >= 777
    places = 1 << settings.lb.flow_table_bits
    assert switch.read_slot(slot + places)["flow_key"] == pkt.key  # the index wraps at FLOW_SLOTS, as in P4
    assert switch.cpu(CPU_READ, (slot + 1) % places)["flow_state"] == 0


def test_cpu_scan_lists_the_open_flows(fake, ctl, switch, settings):
    ctl.deploy()
    for i in range(40):
        fake.device.inject(syn(3000 + i, 100 + i))
    fake.device.inject(syn(3000, 500, FIN))  # closing: no longer open
    flows = switch.open_flows()
    want = {s: e for s, e in fake.device.state.flows.items() if e.state == 1}
    assert flows == want and len(flows) >= 38  # a crc16 collision may refuse a SYN
    fake.device.advance(settings.lb.idle_timeout_us + 1)
    assert switch.open_flows() == {}  # idle past the timeout at the switch clock


@pytest.mark.parametrize("op", ["scan", "open"])
def test_cpu_answer_layout_and_short_request(op):
    """A CPU_SCAN / CPU_OPEN request one byte short is dropped; a long enough one is answered in place, its tail kept."""
    from p4lb.controller.switch import CPU_OPEN, OPEN_CELL, OPEN_WIDTH  # noqa: PLC0415

    code, size = {"scan": (CPU_SCAN, SCAN_WIDTH * SCAN_SLOT.size), "open": (CPU_OPEN, OPEN_WIDTH * OPEN_CELL.size)}[op]
    device = FakeP4Runtime().device
    info, bmv2 = artifacts("p4lb")
    config = p4runtime_pb2.ForwardingPipelineConfig(p4_device_config=bmv2.read_bytes())
    text_format.Merge(info.read_text(), config.p4info)
    device.set_pipeline(config, p4runtime_pb2.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT)
    out = p4runtime_pb2.PacketOut(payload=bytes(size - 1))
    out.metadata.add(metadata_id=1, value=bytes([code]))
    assert device.packet_out(out) is None  # too short to fill: dropped, as p4lb.p4 does
    out.payload = bytes(size) + b"tail"
    answer = device.packet_out(out)
    assert answer is not None and len(answer.payload) == size + 4 and answer.payload.endswith(b"tail")


def test_status_reads_backend_open_in_one_cpu_request(fake, ctl, switch, settings):
    """status: one Read of the tables, one CPU_OPEN PacketOut (counts and rr_next), the two counters; no scan."""
    ctl.deploy()
    for i in range(12):
        fake.device.inject(syn(5000 + i, 100 + i))
    fake.device.inject(syn(5000, 200, FIN | ACK))  # backend 1's flow closes
    want = {b: c for b, c in fake.device.state.backend_open.items() if c}
    assert want == {1: 2, 2: 3, 3: 3, 4: 3}
    rows: list = []
    assert calls(fake, lambda: rows.extend(ctl.status())) == (0, 3, 1)
    assert {r.backend: r.open_flows for r in rows if r.open_flows} == want
    fake.device.advance(settings.lb.idle_timeout_us + 1)  # idle, not reclaimed: still counted; the scan leaves them out
    assert {r.backend: r.open_flows for r in ctl.status() if r.open_flows} == want
    assert [r.open_flows for r in ctl.status(scan=True)] == [0, 0, 0, 0]


def test_status_of_a_switch_withholding_the_cpu_answer_is_a_deadline_error(fake, ctl, switch):
    ctl.deploy()
    switch.rt.timeout_s = 0.5
    fake.hang(Rpc.PACKET_IN)
    worker = Worker(ctl.status)
    try:
        assert worker.done_within(10)
    finally:
        fake.release()
    assert worker.error and isinstance(worker.error[0], SwitchError) and worker.error[0].code is GrpcCode.DEADLINE_EXCEEDED


def test_flows_stream_every_open_flow_then_the_count(fake, ctl, switch, settings, capsys):
    """p4lb flows over P4Runtime: one JSON line per open flow as the 2^20-place scan answers, the count last; a
    switch that stops answering mid-scan is a deadline error, after the lines already printed."""
    from rich.console import Console  # noqa: PLC0415

    from p4lb.controller import cli  # noqa: PLC0415

    ctl.deploy()
    for i in range(20):
        fake.device.inject(syn(6000 + i, 100 + i))
    fake.device.inject(syn(6000, 300, FIN | ACK))
    cli.show_flows(ctl, True, Console())
    *rows, total = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    want = {s for s, e in fake.device.state.flows.items() if e.state == 1}
    assert {r["slot"] for r in rows} == want and total == {"open_flows": len(want)} and len(want) == 19
    flows = switch.iter_open_flows()
    first = next(flows)  # the scan is under way: its first answers are in
    assert first[0] in want
    switch.rt.timeout_s = 0.5
    fake.hang(Rpc.PACKET_IN)
    try:
        with pytest.raises(SwitchError) as err:
            for _ in flows:
                pass
    finally:
        fake.release()
    assert err.value.code is GrpcCode.DEADLINE_EXCEEDED


# ---- cheap commits ---------------------------------------------------------------------------------------------
def calls(fake: FakeP4Runtime, fn: Callable[[], object]) -> tuple[int, int, int]:
    """Write, Read and PacketOut calls the switch received during fn()."""
    kinds = (Rpc.WRITE, Rpc.READ, Rpc.PACKET_OUT)
    before = [fake.calls[k] for k in kinds]
    fn()
    return tuple(fake.calls[k] - b for k, b in zip(kinds, before, strict=True))  # type: ignore[return-value]


def test_a_quick_commit_is_one_read_two_writes_and_one_packet_out(fake, ctl):
    ctl.deploy()
    for op in (Fail(2), Fail(3), Heal(2), Heal(3)):  # staged entries modified (known) and inserted (unknown) alike
        assert calls(fake, lambda op=op: ctl.converge(op.apply, str(op), thorough=False)) == (2, 1, 1), op
    assert calls(fake, lambda: ctl.converge(lambda p: p, "idle", thorough=False)) == (0, 1, 0)
    st = fake.device.state
    assert st.members(st.version) == (1, 4, 2, 3)  # 4 took 2's place, then 2 and 3 came back at the end


def staged_writes(fake: FakeP4Runtime) -> Callable[[], int]:
    """A counter of the rr_member and rr_group updates the switch receives from now on."""
    seen = [0]
    write = fake.device.write

    def counted(updates):
        updates = list(updates)
        seen[0] += sum(u.entity.table_entry.table_id != fake.device.pipeline.table_id(Table.VIP) for u in updates)
        return write(updates)

    fake.device.write = counted  # type: ignore[method-assign]
    return lambda: seen[0]


def test_a_plan_writes_only_the_staged_entries_that_differ(fake, ctl):
    ctl.deploy()  # version 1 lists 1..4; version 0 is empty
    staged = staged_writes(fake)
    ctl.converge(Fail(2).apply, "fail 2", thorough=False)  # (1, 4, 3) over an empty version 0: 3 members and its size
    assert staged() == 4
    ctl.converge(Heal(2).apply, "heal 2", thorough=False)  # (1, 4, 3, 2) over version 1's 1..4: positions 1 and 3
    assert staged() == 6
    ctl.converge(Fail(3).apply, "fail 3", thorough=False)  # (1, 4, 2) over version 0's (1, 4, 3): position 2
    assert staged() == 7
    st = fake.device.state
    assert st.members(st.version) == (1, 4, 2) and st.rr_next[st.version] == 0


def test_entries_changed_behind_our_back_are_written_the_other_way(fake, ctl, switch):
    ctl.deploy()  # version 1 committed; version 0 has no entries
    switch.rt.upsert("rr_member", {"meta.lb.service": 0, "meta.lb.version": 0, "meta.lb.position": 0}, "set_member", {"backend": 4})  # INSERT will meet ALREADY_EXISTS
    assert calls(fake, lambda: ctl.converge(Fail(2).apply, "fail", thorough=False))[0] == 3  # staged Write, its fallback for one update, commit
    st = fake.device.state
    assert st.version == 0 and st.members(0) == (1, 4, 3)
    switch.rt.delete("rr_member", {"meta.lb.service": 0, "meta.lb.version": 1, "meta.lb.position": 1})  # its value changes next: MODIFY will meet NOT_FOUND
    assert calls(fake, lambda: ctl.converge(Fail(3).apply, "fail", thorough=False))[0] == 3
    st = fake.device.state
    assert st.version == 1 and st.members(1) == (1, 4)


def test_a_staged_entry_changed_through_another_session_is_read_back_before_a_plan(fake, ctl, switch, settings):
    ctl.deploy()
    ctl.converge(Fail(2).apply, "fail 2", thorough=False)  # version 0 live (1, 4, 3); version 1 still lists 1..4
    epoch = switch.rt.epoch
    other = make_switch(settings, election_id=(0, 2))
    try:  # someone else deletes a staged member whose value the next plan keeps: a plan trusting our memory writes nothing there
        other.rt.load_p4info(other.files[0])
        other.rt.delete("rr_member", {"meta.lb.service": 0, "meta.lb.version": 1, "meta.lb.position": 2})
    finally:
        other.close()
    deadline = time.monotonic() + 5
    while switch.rt.epoch == epoch and time.monotonic() < deadline:  # the arbitration updates come on the stream's thread
        time.sleep(0.01)
    assert switch.rt.epoch != epoch
    assert calls(fake, lambda: ctl.converge(Heal(2).apply, "heal 2", thorough=False))[1] == 2  # the quick Read, then every entry
    st = fake.device.state
    assert st.version == 1 and st.members(1) == (1, 4, 3, 2)


def test_a_new_session_forgets_what_the_last_one_knew(fake, ctl, switch):
    ctl.deploy()
    assert calls(fake, switch.read_quick)[1] == 1
    fake.drop_streams()
    deadline = time.monotonic() + 5
    while switch.rt.client.ended is None and time.monotonic() < deadline:  # the stream's end is seen on its own thread
        time.sleep(0.01)
    assert calls(fake, switch.read_quick)[1] == 2  # the quick read, then every entry read back (the switch may have restarted)
    assert switch.read_quick() == switch.read(full=False)


# ---- sessions and faults ---------------------------------------------------------------------------------------
def test_reconnects_after_unavailable(fake, ctl):
    ctl.deploy()
    arbitrations = fake.calls[Rpc.ARBITRATION]
    fake.fail(Rpc.WRITE, grpc.StatusCode.UNAVAILABLE)
    assert ctl.apply(Fail(2)).writes
    assert fake.calls[Rpc.ARBITRATION] == arbitrations + 1  # one reconnect, then the write was retried
    assert fake.device.state.members(fake.device.state.version) == (1, 4, 3)


def test_reconnects_after_the_stream_broke(fake, ctl):
    ctl.deploy()
    fake.drop_streams()
    assert ctl.apply(Fail(2)).writes  # "Not primary" on the first write, re-arbitration, retry
    assert fake.primary == (0, 1) and fake.device.state.members(fake.device.state.version) == (1, 4, 3)


def test_unavailable_twice_is_an_error_naming_the_switch(fake, ctl):
    ctl.deploy()
    fake.fail(Rpc.READ, grpc.StatusCode.UNAVAILABLE, times=2)
    with pytest.raises(SwitchError, match=f"failed at {fake.address}: UNAVAILABLE"):
        ctl.switch.read()


def test_rearbitrates_and_redeploys_after_a_restart(fake, ctl, switch):
    ctl.deploy()
    fake.device.inject(syn(5000))
    fake.restart()
    assert fake.primary is None and fake.device.pipeline is None
    with pytest.raises(SwitchError, match="failed at"):
        switch.read()
    assert ctl.deploy()  # reconnects, is primary again, pushes and commits
    assert fake.primary == (0, 1) and fake.restarts == 1
    st = fake.device.state
    assert st.members(st.version) == (1, 2, 3, 4) and st.flows == {}
    assert ctl.deploy() == []


def test_a_non_primary_write_is_refused(fake, ctl, settings):
    ctl.deploy()
    with P4rt(fake.address, election_id=(0, 5)) as other:
        assert fake.primary == (0, 5)
        with pytest.raises(SwitchError, match="Not primary.*higher election id"):
            ctl.apply(Fail(2))
        st = fake.device.state
        assert st.members(st.version) == (1, 2, 3, 4) and not st.rr_member.get((0, 0))  # nothing was written
        other.load_p4info()  # from the running pipeline (GetForwardingPipelineConfig)
        assert other.read_table("vip")[0].params == {"service": 0, "version": 1}  # reads are allowed to everyone
    assert fake.primary == (0, 1)  # the higher one left: we are primary again
    assert ctl.apply(Fail(2)).writes


def test_a_backup_cannot_send_packet_outs(fake, ctl, settings):
    ctl.deploy()
    backup = make_switch(settings, election_id=(0, 0))
    try:
        with pytest.raises(SwitchError):
            backup.read_slot(0)  # refused on the stream: no PacketIn comes back
    finally:
        backup.close()


def test_a_second_controller_with_the_same_election_id_is_refused(fake, ctl):
    ctl.deploy()
    with pytest.raises(SwitchError, match="did not answer arbitration"):
        P4rt(fake.address, election_id=(0, 1)).connect()
    assert fake.primary == (0, 1)


def test_wrong_device_id_is_refused(fake):
    with pytest.raises(SwitchError, match="device 7"):
        P4rt(fake.address, device_id=7).connect()


def test_an_unreachable_switch_is_an_error_within_the_timeout(fake):
    fake.stop()
    rt = P4rt(fake.address, timeout_s=0.5)
    t = time.monotonic()
    with pytest.raises(SwitchError, match="unreachable"):
        rt.connect()
    assert time.monotonic() - t < 3


def test_a_pipeline_that_is_not_p4lb_is_refused(fake, settings):
    p4info, bmv2_json = artifacts("forward")
    with P4rt(fake.address) as rt, pytest.raises(SwitchError, match="INVALID_ARGUMENT.*p4lb"):
        rt.push(p4info, bmv2_json)
    assert fake.device.pipeline is None


def test_registers_are_not_readable_over_p4runtime_as_on_bmv2(fake, ctl, switch):
    ctl.deploy()
    reg = switch.rt._obj("register", "rr_next")
    entity = p4runtime_pb2.Entity(register_entry=p4runtime_pb2.RegisterEntry(register_id=reg.preamble.id))
    with pytest.raises(grpc.RpcError) as err:
        list(switch.rt.client.read_one(entity))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_capabilities(fake):
    with P4rt(fake.address) as rt:
        assert rt.client.api_version().startswith("1.")


def test_delayed_answers_still_succeed(fake, ctl):
    ctl.deploy()
    fake.delay(0.05, Rpc.WRITE, Rpc.PACKET_IN)
    t = time.monotonic()
    applied = ctl.apply(Fail(2))
    assert time.monotonic() - t >= 0.05 * len(batches(list(applied.writes)))  # one delayed answer per request
    assert len(batches(list(applied.writes))) == 3 < len(applied.writes)  # staged table writes share one Write
    assert fake.device.state.members(fake.device.state.version) == (1, 4, 3)


def test_a_hung_switch_withholding_packet_ins_is_an_error(fake, ctl, switch):
    ctl.deploy()
    fake.hang(Rpc.PACKET_IN)
    worker = Worker(lambda: switch.read_slot(0))
    assert worker.done_within(10)
    assert worker.error and isinstance(worker.error[0], SwitchError) and "no PacketIn" in str(worker.error[0])
    fake.release()
    assert switch.read_slot(0)["op"] == CPU_READ


@pytest.mark.parametrize("rpc", [Rpc.WRITE, Rpc.READ])
def test_a_hung_switch_is_an_error_within_a_deadline(fake, ctl, switch, rpc):
    ctl.deploy()
    switch.rt.timeout_s = 1.0  # what a deadline on each call would use
    fake.hang(rpc)
    worker = Worker(lambda: ctl.apply(Fail(2)))
    try:
        finished = worker.done_within(4 * switch.rt.timeout_s)
    finally:
        fake.release()
        worker.done_within(10)
    assert finished, f"{rpc.value} to a hung switch did not return within {4 * switch.rt.timeout_s:g} s"
    assert worker.error and isinstance(worker.error[0], SwitchError) and worker.error[0].code is GrpcCode.DEADLINE_EXCEEDED


def test_write_errors_come_back_per_update_as_bmv2_sends_them(fake, ctl, switch):
    ctl.deploy()
    te = switch.rt.table_entry("backend", {"meta.lb.service": 0, "meta.lb.backend": 1}, "set_backend", {"mac": 1, "addr": 2, "port": 3})
    insert = p4runtime_pb2.Update(type=p4runtime_pb2.Update.INSERT, entity=p4runtime_pb2.Entity(table_entry=te))
    with pytest.raises(SwitchError) as err:
        switch.rt._write("insert a duplicate", [insert])
    assert err.value.code is GrpcCode.ALREADY_EXISTS  # what P4rt.upsert falls back to MODIFY on (the code, not the text)
    switch.rt.upsert("backend", {"meta.lb.service": 0, "meta.lb.backend": 1}, "set_backend", {"mac": 1, "addr": 2, "port": 3})
    assert [r.params for r in fake.device.rows(Table.BACKEND) if r.match["meta.lb.backend"] == 1] == [{"mac": 1, "addr": 2, "port": 3}]


def test_default_entry_modify_reaches_the_model(fake, ctl, switch):
    ctl.deploy()  # commits version 1; version 0 has no rr_group entry
    te = switch.rt.table_entry("rr_group", {}, "set_group", {"size": 3})
    te.is_default_action = True
    switch.rt._write("modify the default", [p4runtime_pb2.Update(type=p4runtime_pb2.Update.MODIFY, entity=p4runtime_pb2.Entity(table_entry=te))])
    assert fake.device.state.rr_group == (3, 4)
    want = p4runtime_pb2.Entity(table_entry=p4runtime_pb2.TableEntry(table_id=te.table_id, is_default_action=True))
    (rep,) = list(switch.rt.client.read_one(want))
    assert rep.entities[0].table_entry.action.action.params[0].value == b"\x03"
    with pytest.raises(SwitchError, match="INVALID_ARGUMENT"):
        switch.rt._write("insert a default", [p4runtime_pb2.Update(type=p4runtime_pb2.Update.INSERT, entity=p4runtime_pb2.Entity(table_entry=te))])
