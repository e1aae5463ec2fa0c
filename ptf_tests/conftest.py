"""Switch tests skip, with the reason printed, where BMv2, p4c or the compiled programs are missing."""

import pytest

from ptf_tests.toolchain import missing_compiler, missing_switch


def pytest_report_header(config):
    reasons = [r for r in (missing_switch(), missing_compiler()) if r]
    return [f"switch tests: skipped: {r}" for r in reasons] or ["switch tests: BMv2 and p4c found"]


@pytest.fixture(scope="session")
def bmv2():
    """Skip unless simple_switch_grpc and the compiled programs are here."""
    reason = missing_switch()
    if reason:
        print(f"\nSKIP switch tests: {reason}")
        pytest.skip(reason)
    return True
