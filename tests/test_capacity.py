"""The capacity simulation: one-way placement is the model's own, and the multi-way shapes do what they promise."""

import random

import pytest

from p4lb.model.capacity import GOALS, LEVELS, VIP, VIP_PORT, Table, goals_missed, hash_rank, simulate
from p4lb.model.design import make_design
from p4lb.model.errors import ConfigError
from p4lb.model.flowtable import Policy, TableShape, candidates, choose
from p4lb.model.p4lb import flow_slot
from p4lb.model.packet import ACK, FIN, SYN, Packet
from p4lb.model.pool import Pool
from p4lb.model.trace import Run


def test_one_way_candidates_are_the_models_flow_slot():
    design = make_design("p4lb", 4, flow_table_bits=12, flow_ways=1, flow_bucket=1)
    rng = random.Random(3)
    for _ in range(500):
        src, port = rng.getrandbits(32), rng.getrandbits(16)
        assert candidates(TableShape(1, 1, 12), src, VIP, port, VIP_PORT) == (flow_slot(design.cfg, Packet(src, port, SYN)),)


def test_one_way_admissions_equal_the_models_on_the_same_syns_and_closes():
    """Random SYNs and FINs into a 64-place table: the simulated table and p4lb_packet admit and refuse the same SYNs."""
    run, table, rng = Run.start(make_design("p4lb", 4, flow_table_bits=6, flow_ways=1, flow_bucket=1), Pool.initial(4)), Table(TableShape(1, 1, 6)), random.Random(7)
    admitted = refused = 0
    for t in range(1, 1500):
        if table.open_keys and rng.random() < 0.45:
            key = table.open_keys[rng.randrange(len(table.open_keys))]
            assert run.step(Packet(key >> 16, key & 0xFFFF, FIN | ACK, t)).outcome.backend
            table.close(key)
            continue
        key = rng.getrandbits(48)
        if key in table.where:
            continue
        got = run.step(Packet(key >> 16, key & 0xFFFF, SYN, t)).outcome.admitted
        assert got == table.offer(key), f"step {t}: model admitted={got}"
        admitted, refused = admitted + got, refused + (not got)
    assert admitted > 300 and refused > 100  # both branches reached


def test_choose_least_loaded_takes_the_emptiest_bucket_leftmost():
    shape = TableShape(3, 2, 8, Policy.LEAST_LOADED)
    assert choose(shape, [True, False, False, False, False, True]) == 2  # way 1 is empty
    assert choose(shape, [True, False, True, False, False, True]) == 1  # all load 1: the leftmost way
    assert choose(shape, [True] * 6) == 6  # refused
    assert choose(TableShape(3, 2, 8), [True, True, True, False, False, False]) == 3  # first takeable


def test_candidates_lie_in_their_own_way_and_bucket():
    shape = TableShape(4, 8, 14, Policy.LEAST_LOADED)
    per_way = shape.places // 4
    for port in range(200):
        c = candidates(shape, 0x0A000101, VIP, port, VIP_PORT)
        assert len(c) == 32 and [p // per_way for p in c[::8]] == [0, 1, 2, 3]
        assert all(c[i + 1] == c[i] + 1 for i in range(31) if (i + 1) % 8)


def test_every_pair_of_ways_hashes_independently():
    for bits in (14, 16, 20):
        rank, full = hash_rank(TableShape(4, 8, bits, Policy.LEAST_LOADED))
        assert rank == full


def test_the_chosen_design_meets_the_goals_where_one_way_does_not():
    """A small run of the bench: 4x8 least-loaded refuses none at 50% and 80%; the one-way table refuses many."""
    chosen = simulate(TableShape(4, 8, 14, Policy.LEAST_LOADED), 5000, levels=LEVELS[:3])
    today = simulate(TableShape(1, 1, 14), 5000, levels=LEVELS[:3])
    assert not goals_missed(chosen)
    assert today.levels[1].rate > 0.2 and goals_missed(today)
    assert set(GOALS) <= set(LEVELS)


@pytest.mark.parametrize(("kw", "field"), [({"ways": 0}, "flow_ways"), ({"bucket": 3}, "flow_bucket"), ({"ways": 8, "bucket": 8, "bits": 5}, "flow_table_bits")])
def test_bad_shapes_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        TableShape(**kw)
