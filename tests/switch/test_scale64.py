"""p4lb.p4 with 64 backends (the size the prover proves by default): packets and operations agree with the model."""

from __future__ import annotations

import pytest

from p4lb.lab.driver import assert_agree, p4lb_design, run_both
from p4lb.lab.toolchain import require_switch
from p4lb.model.config import default_config
from p4lb.model.crc import ip
from p4lb.model.ops import Drain, Fail, Scale
from p4lb.model.p4lb import SlotState
from p4lb.model.packet import ACK, PSH, SYN, Fate, Packet
from p4lb.model.pool import Pool
from p4lb.model.trace import OpStep

N = 64


@pytest.fixture(scope="module")
def lab64():
    """BMv2 running p4lb.p4 with a client and 64 backends, each in its own namespace."""
    require_switch()
    from p4lb.lab.lab import Lab  # noqa: PLC0415

    with Lab("p4lb", default_config(N)) as lab:
        yield lab


def test_64_backends_round_robin_fail_scale_drain(lab64):
    first = [Packet(ip("10.0.1.1") + i // 8, 3000 + i, SYN) for i in range(N)]
    ops = [OpStep(Fail(10)), OpStep(Scale(40)), OpStep(Drain(5))]
    later = [Packet(ip("10.0.2.1") + i // 8, 4000 + i, SYN) for i in range(40)]
    pinned = [Packet(p.src_ip, p.src_port, PSH | ACK) for p in (first[4], first[9], first[50], first[63])]
    run, cmp = run_both(lab64, p4lb_design(lab64.cfg), Pool.initial(N), [*first, *ops, *later, *pinned])
    assert_agree(cmp)
    went = [c.switch.backend if c.switch.fate is Fate.BACKEND else 0 for c in cmp if c.switch is not None]
    assert went[:N] == list(range(1, N + 1))  # one new flow to each backend in turn
    assert not {5, 10} & set(went[N : N + 40]) and max(went[N : N + 40]) <= 40  # failed, draining, scaled out: no new flows
    assert went[N + 40 :] == [5, 10, 51, 64]  # open flows stay on their backends through fail, drain and scale-down
    want = {slot: (e.key, e.backend) for slot, e in run.state.flows.items() if e.state is SlotState.OPEN}
    assert {slot: (e.key, e.backend) for slot, e in lab64.switch.open_flows().items()} == want
