"""Shared test settings."""

import contextlib
import importlib
import pkgutil

from hypothesis import HealthCheck, settings

import p4lb

settings.register_profile("p4lb", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("p4lb")


def _import_every_module() -> None:
    """Import every p4lb module before any test runs. Hypothesis also draws the constants it finds in the local modules
    loaded so far, so without this a derandomized test's examples (and its coverage floor) depended on which tests
    ran before it in the process (test_crosscheck's mutant run reached 2 expiries in 50 runs after test_proofs, 11
    alone)."""
    for m in pkgutil.walk_packages(p4lb.__path__, "p4lb."):
        if m.name.rsplit(".", 1)[-1] != "__main__":
            with contextlib.suppress(ImportError):  # an optional dependency (grpc, p4runtime) missing here: the same every run
                importlib.import_module(m.name)


_import_every_module()
