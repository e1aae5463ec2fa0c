"""A tiny, fast smoke run of the controller bench: 8 loopback backends, the fake P4Runtime switch in a child."""

from __future__ import annotations

import pytest

pytest.importorskip("p4runtime_sh")

from p4lb.controller import bench  # noqa: E402

PORT = 18190  # not the bench's own port, so a running bench does not collide
INTERVAL_MS = 100


def test_table_fits_80_columns() -> None:
    """Every line of a table is at most 80 characters."""
    out = bench.table("t" * 100, ("a", "b"), [(1, "x" * 200), (22, "y")])
    assert all(len(line) <= bench.WIDTH for line in out.splitlines())


def test_churn_plan_is_bounded_and_seeded() -> None:
    """The churn is the same for a seed, within the run, at most `events` outages, never overlapping per backend."""
    a = bench.churn_plan(8, 20.0, 0.1, 30, seed=1)
    assert a == bench.churn_plan(8, 20.0, 0.1, 30, seed=1)
    assert 0 < len(a) <= 30
    assert all(1.0 <= o.down < o.up <= 19.0 for o in a)
    for b in range(1, 9):
        mine = sorted((o.down, o.up) for o in a if o.backend == b)
        assert all(u <= d for (_, u), (d, _) in zip(mine, mine[1:], strict=False))


def test_judge_counts_missed_and_false() -> None:
    """A removal within fall+1 intervals counts; a late one is missed; removing a live backend is false."""
    everyone = frozenset(range(1, 5))
    outages = [bench.Outage(1, 0, 0, at_down=10.0, at_up=11.0), bench.Outage(2, 0, 0, at_down=20.0, at_up=21.0)]
    commits = [(0.0, everyone), (10.2, everyone - {1}), (11.5, everyone), (20.9, everyone - {2}), (30.0, everyone - {2, 3})]
    judged, missed, false, latency = bench.judge(commits, outages, 0.1, 2)
    assert (judged, missed) == (2, 1)
    assert false == [(30.0, 3)]
    assert latency == [pytest.approx(0.2)]


def test_kills_and_soak_smoke() -> None:
    """Kills of 1 and 3 backends are each removed in one commit; a short soak misses nothing and removes no live one."""
    rig = bench.make_rig(8, INTERVAL_MS, 2, port=PORT)
    try:
        profile = bench.converge_profile(rig, [1], 1, seed=1)
        kills = bench.simultaneous(rig.start(), [1, 3], 1, seed=1)
    finally:
        rig.close()
    assert [r[1] for r in profile] == list(bench.PARTS)
    assert [k.k for k in kills] == [1, 3]
    assert all(k.commits == 1 and k.seconds < 2.0 for k in kills)
    s = bench.soak(3.0, 4, seed=2, interval_ms=INTERVAL_MS, n=8, port=PORT)
    assert s.rounds > 0 and s.settled and s.false == 0
    assert all(len(line) <= bench.WIDTH for line in bench.kill_tables(kills, 0.1)[0].splitlines())
    assert all(len(line) <= bench.WIDTH for line in bench.soak_table(s, 0.1, 2).splitlines())
