"""Differential test: hypothesis-generated packets and operations on the Python model and on BMv2, packet by packet.

Compared at every packet: egress port (backend), drop and its counted reason, black hole (port 0), and the
headers that left (MACs, addresses, ports, flags, TTL, both checksums). After each run the per-flow state on the
switch is read back at the slots the model's crc16 computes: the hash index is the same on both.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p4lb.lab.driver import assert_agree, run_both
from p4lb.model.crc import ip
from p4lb.model.design import Design, make_design
from p4lb.model.ops import Drain, Fail, Heal, Scale, Undrain
from p4lb.model.p4lb import flow_slot
from p4lb.model.packet import ACK, FIN, PSH, RST, SYN, Packet
from p4lb.model.pool import Pool
from p4lb.model.seed import seed_index
from p4lb.model.trace import OpStep, Run

FLAGS = (SYN, SYN, ACK, PSH | ACK, FIN | ACK, RST, SYN | ACK, SYN | FIN, SYN | RST, 0)
N = 4
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def steps(seed_ops: bool):
    """Lists of up to 14 steps: packets of 6 flows from 3 clients, and operations on 4 backends."""
    packet = st.builds(lambda h, p, f: Packet(ip("10.0.1.0") + h, 1000 + p, f), st.integers(1, 3), st.integers(0, 1), st.sampled_from(FLAGS))
    backend = st.integers(1, N)
    ops = [st.builds(Scale, st.integers(0, N)), st.builds(Fail, backend), st.builds(Heal, backend)]
    if not seed_ops:
        ops += [st.builds(Drain, backend), st.builds(Undrain, backend)]
    return st.lists(st.one_of(packet, packet, packet, st.one_of(*ops).map(OpStep)), min_size=1, max_size=14)


def _run_agreeing(lab, program: str, raw) -> tuple[Design, Run]:
    """A fresh pipeline, then the steps on the model and on the switch, which must agree at every packet."""
    lab.reset()
    design = make_design(program, N)
    run, cmp = run_both(lab, design, Pool.initial(N), raw)
    assert_agree(cmp)
    return design, run


@SLOW
@given(raw=steps(seed_ops=False))
def test_p4lb_model_equals_bmv2(p4lb_lab, raw):
    design, run = _run_agreeing(p4lb_lab, "p4lb", raw)
    # every slot a packet of this run hashes to, read back through the CPU port: the model's crc16 index is BMv2's
    slots = {flow_slot(design.cfg, p) for p in raw if isinstance(p, Packet)}
    for slot in sorted(slots):
        regs = p4lb_lab.read_slot(slot)
        e = run.state.flows.get(slot)
        want = (0, 0, 0) if e is None else (int(e.state), e.key, e.backend)
        assert (regs["flow_state"], regs["flow_key"], regs["flow_backend"]) == want, f"slot {slot}"
    regs = p4lb_lab.read_slot(0)
    assert (regs["rr_next0"], regs["rr_next1"]) == run.state.rr_next


@SLOW
@given(raw=steps(seed_ops=True))
def test_seed_model_equals_bmv2(seed_lab, raw):
    design, run = _run_agreeing(seed_lab, "seed", raw)
    cells = {seed_index(design.cfg, p) for p in raw if isinstance(p, Packet)}
    for cell in sorted(cells):
        assert seed_lab.read_slot(cell)["flowlet_select"] == run.state.flowlet_select.get(cell, 0), f"flowlet_select[{cell}]"
    regs = seed_lab.read_slot(0)
    assert (regs["myselect"], regs["mymax"]) == (run.state.myselect, run.state.mymax)
