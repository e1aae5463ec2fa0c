"""P1-P8 on BMv2 running p4lb.p4: packets and controller operations, fates compared with the model, state read back."""

from __future__ import annotations

from p4lb.lab.driver import StepCompare, assert_agree, p4lb_design, run_both, tcp_frame
from p4lb.model.config import LbConfig
from p4lb.model.crc import ip
from p4lb.model.ops import Drain, Fail, Heal, Scale
from p4lb.model.p4lb import SlotState, flow_slot
from p4lb.model.packet import ACK, FIN, PSH, RST, SYN, DropReason, Fate, Packet
from p4lb.model.pool import Pool
from p4lb.model.trace import OpStep, Run, Step

CLIENT = ip("10.0.1.1")


def syn(port: int, src: int = CLIENT) -> Packet:
    """First SYN of flow (src, port)."""
    return Packet(src, port, SYN)


def data(port: int, src: int = CLIENT) -> Packet:
    """A data packet of flow (src, port)."""
    return Packet(src, port, PSH | ACK)


def collisions(cfg: LbConfig, pkt: Packet, k: int) -> list[Packet]:
    """k SYNs of other clients whose crc16 slot is pkt's (searched with a table-driven crc16, checked by the model)."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    want, mask, out = flow_slot(cfg, pkt), (1 << cfg.flow_table_bits) - 1, []
    for src in range(pkt.src_ip + 1, pkt.src_ip + 64):
        head = 0
        for b in src.to_bytes(4, "big") + cfg.vip.to_bytes(4, "big") + bytes([6]):
            head = (head >> 8) ^ table[(head ^ b) & 0xFF]
        for port in range(1024, 65536):
            crc = head
            for b in port.to_bytes(2, "big") + cfg.vip_port.to_bytes(2, "big"):
                crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
            if crc & mask == want:
                other = Packet(src, port, SYN)
                assert flow_slot(cfg, other) == want
                out.append(other)
                if len(out) == k:
                    return out
                break
    raise AssertionError("no colliding 5-tuples found")


def colliding(cfg: LbConfig, pkt: Packet) -> Packet:
    """Another client's SYN in the same slot."""
    return collisions(cfg, pkt, 1)[0]


def check(lab, steps: list[Step], pool: Pool | None = None) -> tuple[Run, list[StepCompare]]:
    """Run on both, require agreement at every packet and no property violation in the model's run."""
    design = p4lb_design(lab.cfg)
    run, cmp = run_both(lab, design, pool or Pool.initial(lab.cfg.n), steps)
    assert_agree(cmp)
    broken = [(r.index, v) for r in run.results for v in r.violations]
    assert not broken, broken
    return run, cmp


def backends_of(cmp: list[StepCompare]) -> list[int]:
    """Backends the packets went to (0 for drops)."""
    return [c.switch.backend if c.switch.fate is Fate.BACKEND else 0 for c in cmp if c.switch is not None]


def test_p1_no_new_flow_to_failed_backend(p4lb_sw):
    run, cmp = check(p4lb_sw, [OpStep(Fail(2))] + [syn(1000 + i) for i in range(6)])
    assert sorted(set(backends_of(cmp))) == [1, 3, 4]
    view = p4lb_sw.switch.read()
    assert view.groups[view.version] == (1, 4, 3) == run.state.members(run.state.version)  # 4 took 2's place


def test_p2_no_new_flow_to_inactive_backend(p4lb_sw):
    _, cmp = check(p4lb_sw, [OpStep(Scale(2))] + [syn(2000 + i) for i in range(6)])
    assert backends_of(cmp) == [1, 2] * 3


def test_p3_no_black_hole_and_counted_refusal_when_none_eligible(p4lb_sw):
    steps: list[Step] = [OpStep(Fail(b)) for b in (1, 2, 3)] + [syn(3000), syn(3001)]
    steps += [OpStep(Fail(4)), syn(3002), OpStep(Heal(2)), syn(3003)]
    _, cmp = check(p4lb_sw, steps)
    assert backends_of(cmp) == [4, 4, 0, 2]
    assert p4lb_sw.switch.read().lb_drops["no_eligible"] == 1


def test_p4_pinning_through_scaling_and_failures(p4lb_sw):
    flows = [3100 + i for i in range(4)]
    steps: list[Step] = [syn(p) for p in flows]
    steps += [OpStep(Scale(1)), OpStep(Fail(3)), OpStep(Drain(2))]
    steps += [data(p) for p in flows] + [syn(p) for p in flows]  # retransmitted SYNs stay pinned too
    steps += [OpStep(Heal(3)), OpStep(Scale(4))] + [data(p) for p in flows]
    run, cmp = check(p4lb_sw, steps)
    first = backends_of(cmp)[:4]
    assert first == [1, 2, 3, 4]
    assert backends_of(cmp)[4:] == first * 3
    # the flow table on the switch holds what the model holds, at the model's crc16 slot
    for p, b in zip(flows, first, strict=True):
        slot = flow_slot(p4lb_sw.cfg, syn(p))
        regs = p4lb_sw.read_slot(slot)
        assert regs["flow_state"] == SlotState.OPEN and regs["flow_backend"] == b == run.state.flows[slot].backend
        assert regs["flow_key"] == run.state.flows[slot].key


def test_p5_round_robin_is_fair_and_counted(p4lb_sw):
    _, cmp = check(p4lb_sw, [syn(4000 + i) for i in range(10)])
    counts = {b: backends_of(cmp).count(b) for b in (1, 2, 3, 4)}
    assert max(counts.values()) - min(counts.values()) <= 1 and sum(counts.values()) == 10
    assert p4lb_sw.switch.read().backend_flows == counts


def test_p6_isolation_a_colliding_client_cannot_move_or_kill_an_open_flow(p4lb_sw):
    victim = syn(5000)
    attacker = colliding(p4lb_sw.cfg, victim)
    slot = flow_slot(p4lb_sw.cfg, victim)
    steps: list[Step] = [victim, attacker, Packet(attacker.src_ip, attacker.src_port, ACK), Packet(attacker.src_ip, attacker.src_port, RST), data(5000)]
    _, cmp = check(p4lb_sw, steps)
    assert backends_of(cmp) == [1, 0, 0, 0, 1]
    assert p4lb_sw.read_slot(slot)["flow_key"] == (victim.src_ip << 16) | victim.src_port


def test_p7_packets_between_every_single_write_of_an_operation(p4lb_sw):
    design = p4lb_design(p4lb_sw.cfg)
    flows = [6000 + i for i in range(4)]
    probe, steps = Run.start(design, Pool.initial(4)), []

    def add(step: Step) -> None:
        steps.append(step)
        probe.step(step)

    for p in flows:
        add(syn(p))
    n = 0
    for op in (Fail(1), Scale(2), Heal(1)):
        for w in probe.expand(op):  # the operation's writes one by one, a new flow and an open flow's packet after each
            add(w)
            add(syn(7000 + n))
            add(data(flows[n % 4]))
            n += 1
    _, cmp = check(p4lb_sw, steps)
    assert len([c for c in cmp if c.model is not None]) > 20


def test_p8_full_slot_refuses_and_counts_instead_of_evicting(p4lb_sw):
    first = syn(8000)
    rivals = collisions(p4lb_sw.cfg, first, 3)
    _, cmp = check(p4lb_sw, [first, *rivals, data(8000), Packet(first.src_ip, 8000, FIN), rivals[0]])
    # closing frees the slot: the next colliding SYN is admitted
    assert backends_of(cmp) == [1, 0, 0, 0, 1, 1, 2]
    assert p4lb_sw.switch.read().lb_drops["flow_table_full"] == 3


def test_unknown_flow_is_dropped_and_counted(p4lb_sw):
    _, cmp = check(p4lb_sw, [data(9000), Packet(CLIENT, 9001, FIN)])
    assert [c.switch.reason for c in cmp] == [DropReason.UNKNOWN_FLOW] * 2


def test_open_flows_read_from_every_slot_match_the_model(p4lb_sw):
    """`p4lb status`/`p4lb flows` on BMv2: a CPU_SCAN of all slots finds exactly the model's open flows."""
    others = [syn(port, CLIENT + 1) for port in range(7000, 7005)]
    run, _ = check(p4lb_sw, [syn(7000), syn(7001), data(7000), Packet(CLIENT, 7001, FIN | ACK), *others, Packet(CLIENT, 7002, ACK)])
    want = {slot: e for slot, e in run.state.flows.items() if e.state is SlotState.OPEN}
    got = p4lb_sw.switch.open_flows()
    assert len(want) == 6
    assert {s: (e.key, e.backend) for s, e in got.items()} == {s: (e.key, e.backend) for s, e in want.items()}


def test_a_missing_backend_entry_is_counted_not_black_holed(p4lb_sw):
    """A state the controller never creates (a group member without its `backend` entry): dropped and counted as
    no_backend_entry, never sent to port 0, so `p4lb status` would show a black hole instead of hiding it."""
    check(p4lb_sw, [syn(9100)])  # deploys; the flow goes to backend 1
    p4lb_sw.rt.delete("backend", {"meta.lb.backend": 2})
    seen = p4lb_sw.send(tcp_frame(p4lb_sw.cfg, syn(9101)))  # round robin: backend 2
    assert seen == []  # neither backend 2's port nor the sink on port 0
    assert p4lb_sw.switch.read().lb_drops["no_backend_entry"] == 1
