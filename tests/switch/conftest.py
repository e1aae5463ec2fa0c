"""Switch tests skip, with the reason printed, where BMv2, p4c or the compiled programs are missing."""

from __future__ import annotations

import pytest
from hypothesis import Phase, settings

from p4lb.lab.toolchain import missing_compiler, missing_switch, require_switch
from p4lb.model.config import P4LB_SMALL_TABLE_BITS, default_config

# `pytest --hypothesis-profile=p4lb-find`: no example database and no shrinking, to time how soon a run against a
# mutant program ($P4LB_SWITCH_JSON) finds its first disagreement
settings.register_profile("p4lb-find", settings.get_profile("p4lb"), database=None, phases=(Phase.explicit, Phase.generate))


def pytest_report_header(config):
    reasons = [r for r in (missing_switch(), missing_compiler()) if r]
    return [f"switch tests: skipped: {r}" for r in reasons] or ["switch tests: BMv2 and p4c found"]


@pytest.fixture(scope="module")
def p4lb_lab():
    """BMv2 running p4lb.p4 between a client, 4 backends and a sink; reset per test by `lab` fixtures."""
    require_switch()
    from p4lb.lab.lab import Lab  # noqa: PLC0415

    with Lab("p4lb") as lab:
        yield lab


@pytest.fixture(scope="module")
def p4lb_small_lab():
    """BMv2 running p4lb_small.json (p4lb.p4 with -DFLOW_BITS=5: 32 flow places, every flow's candidates), with the
    matching LbConfig: where a test can hold every candidate of a flow and see refusals."""
    require_switch()
    from p4lb.lab.lab import Lab  # noqa: PLC0415

    with Lab("p4lb", default_config(4, flow_table_bits=P4LB_SMALL_TABLE_BITS)) as lab:
        yield lab


@pytest.fixture
def p4lb_small_sw(p4lb_small_lab):
    """The small-table lab with a freshly pushed pipeline."""
    p4lb_small_lab.reset()
    return p4lb_small_lab


@pytest.fixture(scope="module")
def seed_lab():
    """BMv2 running seed.p4 on the seed's topology."""
    require_switch()
    from p4lb.lab.lab import Lab  # noqa: PLC0415

    with Lab("seed") as lab:
        yield lab


@pytest.fixture
def p4lb_sw(p4lb_lab):
    """The p4lb lab with a freshly pushed pipeline (every register and table empty)."""
    p4lb_lab.reset()
    return p4lb_lab


@pytest.fixture
def seed_sw(seed_lab):
    """The seed lab with a freshly pushed pipeline."""
    seed_lab.reset()
    return seed_lab
