"""Sessions: prove (the main job), tests, lint, bench."""

from __future__ import annotations

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["prove", "tests", "lint"]


@nox.session
def prove(session: nox.Session) -> None:
    """Prove P1-P8 for p4lb (N=64 by default), refute the seed and every mutant with minimal traces."""
    session.install("-e", ".")
    session.run("python", "-m", "p4lb.verify", "prove", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit, cross-check and proof tests; switch tests skip with a printed reason where BMv2/p4c are missing."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff; mypy --strict on the whole package: model/, verify/, lab/, controller/ ([tool.mypy] in pyproject.toml)."""
    session.install("-e", ".[dev]")  # ruff, mypy and the type stubs (grpc, protobuf), with the test dependencies mypy reads
    session.run("ruff", "check", ".")
    session.run("mypy")


@nox.session
def mutate(session: nox.Session) -> None:
    """Mutation score of the checks: each realistic bug in a temporary copy must make prove or the tests fail (tools/mutate.py)."""
    session.install("-e", ".[test]")
    session.run("python", "tools/mutate.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Prove time/memory for N = 4..128; flow-table refusals vs occupancy (10^6 SYNs per shape; spot-checked on BMv2); failover vs the seed's loop; BMv2 packets/s and latency, instructions/packet (callgrind), P4Runtime ops/s."""
    session.install("-e", ".[switch]")
    session.run("python", "-m", "p4lb.verify.bench", *session.posargs)
    session.run("python", "-m", "p4lb.model.capacity", success_codes=[0, 1])  # 1: the chosen table shape missed a goal (printed)
    session.run("python", "-m", "p4lb.lab.capacity")  # the same on BMv2 (p4lb_mid, 1,024 places), counted as the model counts
    session.run("python", "-m", "p4lb.controller.bench", success_codes=[0, 1])  # 1: a controller goal missed (printed)
    session.run("python", "-m", "p4lb.lab.bench")
    session.run("python", "-m", "p4lb.lab.instructions", success_codes=[0, 1])  # 1: callgrind could not run the switch here (printed)


@nox.session(python=False)
def build_p4(session: nox.Session) -> None:
    """Compile p4/p4lb.p4, p4/seed.p4 and p4/forward.p4 into p4/build/ (BMv2 JSON + P4Info); needs p4c-bm2-ss."""
    session.run("python3", "-c", "import sys; sys.path.insert(0, 'src'); from p4lb.lab.toolchain import build_all; build_all()", external=True)


@nox.session
def switch(session: nox.Session) -> None:
    """The BMv2 packet tests only (they skip, printing why, where BMv2 or the artifacts are missing)."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/switch", "-rs", *session.posargs)


@nox.session
def toolchain(session: nox.Session) -> None:
    """Report whether the switch tests can run here (simple_switch_grpc, p4c-bm2-ss, versions) and how to get what is missing."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "p4lb.lab.toolchain", success_codes=[0, 1])
