"""Hypothesis-generated runs give the same outcome on the executable model and on the Z3 encoding, step by step."""

from hypothesis import given, settings
from hypothesis import strategies as st

from p4lb.model.crc import ip
from p4lb.model.design import make_design
from p4lb.model.ops import Drain, Fail, Heal, Scale, Undrain
from p4lb.model.p4lb import Variant
from p4lb.model.packet import ACK, FIN, PSH, RST, SYN, Packet
from p4lb.model.pool import Pool
from p4lb.model.trace import OpStep, Run
from p4lb.verify.crosscheck import comparable, z3_outcomes
from p4lb.verify.mutants import MUTANTS

FLAGS = [SYN, SYN, SYN, ACK, PSH | ACK, FIN | ACK, RST, SYN | ACK, SYN | FIN, 0]


def steps(n: int, seed_ops: bool):
    packet = st.builds(lambda h, p, f, dt: (Packet(ip("10.0.1.0") + h, 1000 + p, f, 0), dt), st.integers(1, 3), st.integers(0, 3), st.sampled_from(FLAGS), st.integers(0, 4000))
    backend = st.integers(1, n)
    ops = [st.builds(Scale, st.integers(0, n)), st.builds(Fail, backend), st.builds(Heal, backend)]
    if not seed_ops:
        ops += [st.builds(Drain, backend), st.builds(Undrain, backend)]
    return st.lists(st.one_of(packet, packet, packet, st.one_of(*ops).map(OpStep)), min_size=1, max_size=16)


def timed(raw):
    t, out = 0, []
    for s in raw:
        if isinstance(s, tuple):
            pkt, dt = s
            t += dt
            out.append(Packet(pkt.src_ip, pkt.src_port, pkt.flags, t))
        else:
            out.append(s)
    return out


def check(design, raw):
    seq = timed(raw)
    pool = Pool.initial(design.cfg.n)
    run = Run.start(design, pool)
    expected = [run.step(s).outcome for s in seq]
    got = z3_outcomes(design, pool, seq)
    for i, (a, b) in enumerate(zip(expected, got, strict=True)):
        if a is not None:
            assert comparable(a) == comparable(b), f"step {i} {seq[i]}: model {a} vs encoding {b}"


@given(steps(4, seed_ops=True))
def test_seed_model_equals_encoding(raw):
    check(make_design("seed"), raw)


@settings(max_examples=80)
@given(steps(4, seed_ops=False))
def test_p4lb_model_equals_encoding(raw):
    check(make_design("p4lb", 4, flow_table_bits=2, idle_timeout_us=5000), raw)


@given(steps(3, seed_ops=False), st.sampled_from(sorted(MUTANTS.values(), key=Variant.name)))
def test_mutant_model_equals_encoding(raw, variant):
    check(make_design("p4lb", 3, variant, flow_table_bits=2, idle_timeout_us=5000), raw)
