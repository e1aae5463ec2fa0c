"""P1-P8 on BMv2 running p4lb.p4: packets and controller operations, fates compared with the model, state read back.

P6 and P8 need every candidate place of a flow held by open flows: they run on the small build (p4lb_small: 32
places, each flow's 4 ways x 8 candidates are the whole table) with the matching LbConfig; the rest on p4lb.json."""

from __future__ import annotations

from p4lb.lab.driver import StepCompare, assert_agree, fillers, p4lb_design, place_of, run_both, tcp_frame
from p4lb.model.crc import ip
from p4lb.model.ops import Drain, Fail, Heal, Scale
from p4lb.model.p4lb import SlotState, flow_places
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
    # the flow table on the switch holds what the model holds, at the place the model's steps put each flow
    for p, b in zip(flows, first, strict=True):
        slot = place_of(p4lb_sw.cfg, run.state, syn(p).key)
        assert slot is not None
        regs = p4lb_sw.read_slot(slot)
        assert regs["flow_state"] == SlotState.OPEN and regs["flow_backend"] == b == run.state.flows[slot].backend
        assert regs["flow_key"] == run.state.flows[slot].key


def test_p5_round_robin_is_fair_and_counted(p4lb_sw):
    _, cmp = check(p4lb_sw, [syn(4000 + i) for i in range(10)])
    counts = {b: backends_of(cmp).count(b) for b in (1, 2, 3, 4)}
    assert max(counts.values()) - min(counts.values()) <= 1 and sum(counts.values()) == 10
    assert p4lb_sw.switch.read().backend_flows == counts


def places_held_then(sw, first: Packet, extra: int) -> tuple[list[Packet], list[Packet]]:
    """SYNs of other clients competing for `first`'s candidate places: as many as hold the rest of them, and `extra` more."""
    k = sw.cfg.flow_ways * sw.cfg.flow_bucket
    others = fillers(sw.cfg, first, k - 1 + extra)
    return others[: k - 1], others[k - 1 :]


def test_p6_isolation_a_colliding_client_cannot_move_or_kill_an_open_flow(p4lb_small_sw):
    victim = syn(5000)
    held, (attacker,) = places_held_then(p4lb_small_sw, victim, 1)  # the victim and 31 others hold all 32 places
    a = (attacker.src_ip, attacker.src_port)
    run, cmp = check(p4lb_small_sw, [victim, *held, attacker, Packet(*a, ACK), Packet(*a, RST), data(5000)])
    got = backends_of(cmp)
    assert got[: len(held) + 1] == [1, 2, 3, 4] * 8 and got[len(held) + 1 :] == [0, 0, 0, 1]
    assert [c.switch.reason for c in cmp[-4:-1]] == [DropReason.FLOW_TABLE_FULL, DropReason.UNKNOWN_FLOW, DropReason.UNKNOWN_FLOW]
    slot = place_of(p4lb_small_sw.cfg, run.state, victim.key)
    assert slot == flow_places(p4lb_small_sw.cfg, victim)[0]  # where it went in, on an empty table
    assert p4lb_small_sw.read_slot(slot)["flow_key"] == (victim.src_ip << 16) | victim.src_port


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


def test_p8_full_table_refuses_and_counts_instead_of_evicting(p4lb_small_sw):
    first = syn(8000)
    held, rivals = places_held_then(p4lb_small_sw, first, 3)
    run, cmp = check(p4lb_small_sw, [first, *held, *rivals, data(8000), Packet(first.src_ip, 8000, FIN), rivals[0]])
    # every candidate held by an open flow: the rivals are refused and counted (rr_next not advanced); closing the
    # first flow frees its place, and the next rival SYN is admitted there
    assert backends_of(cmp) == [1, 2, 3, 4] * 8 + [0, 0, 0, 1, 1, 1]
    assert p4lb_small_sw.switch.read().lb_drops["flow_table_full"] == 3
    slot = flow_places(p4lb_small_sw.cfg, first)[0]
    assert place_of(p4lb_small_sw.cfg, run.state, rivals[0].key) == slot
    assert p4lb_small_sw.read_slot(slot)["flow_key"] == rivals[0].key


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
    p4lb_sw.rt.delete("backend", {"meta.lb.service": 0, "meta.lb.backend": 2})
    seen = p4lb_sw.send(tcp_frame(p4lb_sw.cfg, syn(9101)))  # round robin: backend 2
    assert seen == []  # neither backend 2's port nor the sink on port 0
    assert p4lb_sw.switch.read().lb_drops["no_backend_entry"] == 1
