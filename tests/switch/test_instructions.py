"""Instructions per packet (callgrind on simple_switch_grpc) are a stable figure: forward's is positive and the
same in two runs within a few percent, and p4lb's is larger. Uses $P4LB_BMV2_BIN if set; skips without valgrind."""

from __future__ import annotations

import pytest

from p4lb.lab.toolchain import require_switch

COUNT = 40  # a small batch: three switches under valgrind in well under a minute
KIND = ("established",)


def test_instructions_per_packet_stable_and_p4lb_above_forward() -> None:
    require_switch()
    from p4lb.lab.instructions import build_of, chosen_binary, measure, missing  # noqa: PLC0415
    from p4lb.lab.lab import Launch  # noqa: PLC0415

    reason = missing(chosen_binary())
    if reason:
        print(f"\nSKIP instruction counts: {reason}")
        pytest.skip(reason)
    launch = Launch(binary=build_of(chosen_binary()).path)
    first, second = (measure("forward", COUNT, launch, KIND)[0] for _ in range(2))
    p4lb = measure("p4lb", COUNT, launch, KIND)[0]
    assert first.per_packet > 0 and first.lost == second.lost == p4lb.lost == 0
    assert abs(second.per_packet / first.per_packet - 1) < 0.03, (first, second)
    assert first.spread_pct < 5 and abs(first.batch_mean / first.per_packet - 1) < 0.05, first  # per packet, not per window
    assert p4lb.per_packet > first.per_packet, (p4lb, first)
