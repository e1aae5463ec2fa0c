"""Capacity on BMv2: the mid-size build (1,024 places, 4 ways x 8) refuses exactly the SYNs the model refuses while
held at an occupancy level with churn, none at 50%, some at 99%; the one-way table refuses far more at 50%."""

from __future__ import annotations

from p4lb.lab.capacity import report, spot_check
from p4lb.lab.toolchain import require_switch


def test_switch_refuses_as_the_model_at_each_occupancy(capsys):
    require_switch()
    spots = spot_check(syns=150, levels=(0.50, 0.99))
    with capsys.disabled():
        print("\n" + report(spots, 0.0))
    assert all(s.switch_agrees for s in spots), report(spots, 0.0)
    half, full = spots
    assert half.multi_way.refused == 0 and half.one_way.rate > 0.3  # the goal at 50%, and the one-way table's trouble
    assert full.multi_way.refused > 0  # the levels reach refusals on the switch: its count is compared, not only zeros
