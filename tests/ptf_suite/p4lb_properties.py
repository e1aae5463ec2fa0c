"""P1-P8 on a switch running p4lb.p4, as PTF tests: every packet's port and headers predicted by the model.

P6 and P8 push the small build (p4lb_small: 32 places, each flow's 4 ways x 8 candidates are the whole table) and
hold every candidate of a flow with open flows; the rest run on the p4lb build the test params name."""

from __future__ import annotations

from p4lb_ptf_base import P4lbPtfTest

from p4lb.lab.driver import fillers, place_of
from p4lb.model.config import P4LB_SMALL_TABLE_BITS
from p4lb.model.crc import ip
from p4lb.model.ops import Drain, Fail, Heal, Scale
from p4lb.model.p4lb import SlotState, flow_places
from p4lb.model.packet import ACK, FIN, PSH, RST, SYN, Packet
from p4lb.model.pool import Pool
from p4lb.model.trace import OpStep, Run, Step

CLIENT = ip("10.0.1.1")
CLIENTS = tuple(ip(f"10.0.1.{i}") for i in range(1, 5))


def syn(port: int, src: int = CLIENT) -> Packet:
    """First SYN of flow (src, port)."""
    return Packet(src, port, SYN)


def data(port: int, src: int = CLIENT) -> Packet:
    """A data packet of flow (src, port)."""
    return Packet(src, port, PSH | ACK)


def competing(test: P4lbPtfTest, first: Packet, extra: int) -> tuple[list[Packet], list[Packet]]:
    """SYNs of other clients competing for `first`'s candidate places: as many as hold the rest of them, and `extra` more."""
    k = test.cfg.flow_ways * test.cfg.flow_bucket
    others = fillers(test.cfg, first, k - 1 + extra, CLIENTS[1:])
    return others[: k - 1], others[k - 1 :]


class P1NoNewFlowToFailedBackend(P4lbPtfTest):
    """After Fail(2), new flows go to 1, 3, 4 only."""

    def runTest(self) -> None:
        got = self.run_p4lb([OpStep(Fail(2))] + [syn(1000 + i) for i in range(6)])
        self.assertEqual(sorted(set(got)), [1, 3, 4])


class P2NoNewFlowToInactiveBackend(P4lbPtfTest):
    """After Scale(2), new flows alternate between 1 and 2."""

    def runTest(self) -> None:
        self.assertEqual(self.run_p4lb([OpStep(Scale(2))] + [syn(2000 + i) for i in range(6)]), [1, 2] * 3)


class P3NoBlackHole(P4lbPtfTest):
    """With no backend eligible a SYN is dropped and counted (never sent to port 0); healing one brings flows back."""

    def runTest(self) -> None:
        steps: list[Step] = [OpStep(Fail(b)) for b in (1, 2, 3)] + [syn(3000), syn(3001)]
        steps += [OpStep(Fail(4)), syn(3002), OpStep(Heal(2)), syn(3003)]
        self.assertEqual(self.run_p4lb(steps), [4, 4, 0, 2])
        self.assertEqual(self.switch.read().lb_drops["no_eligible"], 1)


class P4PinningThroughScalingAndFailures(P4lbPtfTest):
    """Open flows keep their backend through Scale, Fail, Drain, Heal (retransmitted SYNs too)."""

    def runTest(self) -> None:
        flows = [3100 + i for i in range(4)]
        steps: list[Step] = [syn(p) for p in flows] + [OpStep(Scale(1)), OpStep(Fail(3)), OpStep(Drain(2))]
        steps += [data(p) for p in flows] + [syn(p) for p in flows] + [OpStep(Heal(3)), OpStep(Scale(4))] + [data(p) for p in flows]
        got = self.run_p4lb(steps)
        self.assertEqual(got, [1, 2, 3, 4] * 4)
        for p, b in zip(flows, got, strict=False):
            slot = place_of(self.cfg, self.run.state, syn(p).key)  # where the model's steps put the flow
            self.assertIsNotNone(slot)
            regs = self.switch.read_slot(slot)
            self.assertEqual((regs["flow_state"], regs["flow_backend"], regs["flow_key"]), (SlotState.OPEN, b, syn(p).key))


class P5RoundRobinIsFair(P4lbPtfTest):
    """10 new flows over 4 backends: counts differ by at most one, and backend_flows counts them."""

    def runTest(self) -> None:
        got = self.run_p4lb([syn(4000 + i) for i in range(10)])
        counts = {b: got.count(b) for b in (1, 2, 3, 4)}
        self.assertLessEqual(max(counts.values()) - min(counts.values()), 1)
        self.assertEqual(self.switch.read().backend_flows, counts)


class P6Isolation(P4lbPtfTest):
    """A client competing for an open flow's places, all held (32-place table), can neither move nor close it."""

    table_bits = P4LB_SMALL_TABLE_BITS

    def runTest(self) -> None:
        victim = syn(5000)
        held, (attacker,) = competing(self, victim, 1)
        a = (attacker.src_ip, attacker.src_port)
        got = self.run_p4lb([victim, *held, attacker, Packet(*a, ACK), Packet(*a, RST), Packet(victim.src_ip, victim.src_port, PSH | ACK)])
        self.assertEqual(got, [1, 2, 3, 4] * 8 + [0, 0, 0, 1])
        slot = place_of(self.cfg, self.run.state, victim.key)
        self.assertEqual(slot, flow_places(self.cfg, victim)[0])
        self.assertEqual(self.switch.read_slot(slot)["flow_key"], victim.key)


class P7PacketsBetweenEverySingleWrite(P4lbPtfTest):
    """Fail, Scale, Heal written one write at a time, a new flow and an open flow's packet after each write."""

    def runTest(self) -> None:
        design, flows = self.design(), [6000 + i for i in range(4)]
        probe, steps = Run.start(design, Pool.initial(4)), []
        for p in flows:
            steps.append(syn(p))
            probe.step(syn(p))
        n = 0
        for op in (Fail(1), Scale(2), Heal(1)):
            for w in probe.expand(op):
                for step in (w, syn(7000 + n), data(flows[n % 4])):
                    steps.append(step)
                    probe.step(step)
                n += 1
        self.assertGreater(len(self.run_p4lb(steps)), 20)


class P8FullTableRefusesAndCounts(P4lbPtfTest):
    """SYNs finding every candidate held by an open flow (32-place table) are refused and counted, evicting none;
    once the first flow closes, one gets its place."""

    table_bits = P4LB_SMALL_TABLE_BITS

    def runTest(self) -> None:
        first = syn(8000)
        held, rivals = competing(self, first, 3)
        fin = Packet(first.src_ip, first.src_port, FIN)
        got = self.run_p4lb([first, *held, *rivals, Packet(first.src_ip, first.src_port, PSH | ACK), fin, rivals[0]])
        self.assertEqual(got, [1, 2, 3, 4] * 8 + [0, 0, 0, 1, 1, 1])
        self.assertEqual(self.switch.read().lb_drops["flow_table_full"], 3)
        slot = flow_places(self.cfg, first)[0]
        self.assertEqual(place_of(self.cfg, self.run.state, rivals[0].key), slot)
        self.assertEqual(self.switch.read_slot(slot)["flow_key"], rivals[0].key)


class UnknownFlowIsDroppedAndCounted(P4lbPtfTest):
    """Data and FIN of no open flow: dropped, counted as unknown_flow."""

    def runTest(self) -> None:
        self.assertEqual(self.run_p4lb([data(9000), Packet(CLIENT, 9001, FIN)]), [0, 0])
        self.assertEqual(self.switch.read().lb_drops["unknown_flow"], 2)
