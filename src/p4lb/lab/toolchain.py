"""Where the P4 toolchain is, and why switch tests cannot run when it is not."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from p4lb.p4 import BUILDS, PROGRAMS, artifacts, p4_dir

__all__ = ["BUILDS", "PROGRAMS", "artifacts", "build_all", "compile_p4", "missing_compiler", "missing_switch", "require_switch"]


def compile_p4(build: str, out_dir: Path) -> tuple[Path, Path]:
    """Run p4c-bm2-ss on a build's program (BUILDS: p4/PROGRAM.p4 with its -D defines) into out_dir/BUILD.*."""
    program, defines = BUILDS[build]
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, p4info = out_dir / f"{build}.json", out_dir / f"{build}.p4info.txtpb"
    source = f"p4/{program}.p4"  # relative to the package folder: the JSON's source_info names it
    flags = [f"-D{name}={value}" for name, value in defines]
    subprocess.run(["p4c-bm2-ss", "--arch", "v1model", *flags, "--p4runtime-files", str(p4info), "-o", str(json_path), source], check=True, cwd=p4_dir().parent)
    return p4info, json_path


def build_all() -> None:
    """Regenerate the committed artifacts of every build (`nox -s build_p4`)."""
    for build in BUILDS:
        compile_p4(build, p4_dir() / "build")
        print(f"built {build}: {', '.join(str(p) for p in artifacts(build))}")


def missing_compiler() -> str | None:
    """Why p4c cannot be used here, or None."""
    if shutil.which("p4c-bm2-ss") is None:
        return "p4c-bm2-ss (p4lang/p4c) is not on PATH: install p4c to compile the P4 programs"
    return None


def missing_switch() -> str | None:
    """Why the BMv2 tests cannot run here, or None."""
    if shutil.which("simple_switch_grpc") is None:
        return "simple_switch_grpc (p4lang/behavioral-model built with PI) is not on PATH"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is missing: the tests build their hosts with network namespaces and veth pairs"
    if os.geteuid() != 0:
        return "the switch tests need root to create network namespaces"
    for build in BUILDS:
        for path in artifacts(build):
            if not path.exists():
                return f"{path} is missing: run `nox -s build_p4` (needs p4c)"
    try:
        import p4runtime_sh  # noqa: F401, PLC0415
        import scapy  # noqa: F401, PLC0415
    except ImportError as exc:
        return f"{exc.name} is not installed: pip install -e '.[switch]'"
    return None


def require_switch() -> None:
    """Skip the calling test (printing why) unless simple_switch_grpc, root, iproute2 and the compiled programs are here."""
    import pytest  # noqa: PLC0415

    reason = missing_switch()
    if reason:
        print(f"\nSKIP switch tests: {reason}")
        pytest.skip(reason)


HOW_TO_GET = """How to get them:
  - Ubuntu: p4lang publishes packages of p4c (p4c-bm2-ss) and BMv2 with PI/P4Runtime (simple_switch_grpc);
    p4lang's container images of p4c and behavioral-model carry both too.
  - Elsewhere (Debian bookworm is known to work) build from p4lang's sources, outside this repository:
    p4lang/PI with protobuf/gRPC support (no thrift, no CLI needed), then p4lang/behavioral-model with PI
    (no thrift needed; its current sources also need the xxhash and jsoncpp headers), then p4lang/p4c at
    tag v1.2.4.8 (the newest that builds against Debian bookworm's abseil and protobuf), BMv2 backend only.
    Known to work together on Debian bookworm (protobuf 3.21, gRPC 1.51): PI at commit f96af95,
    behavioral-model 1.15.5 (commit 9674187), p4c v1.2.4.8.
  - The switch tests also need root (network namespaces) and iproute2; everything else runs without them."""


def _version(tool: str) -> str:
    """The first line `tool --version` prints, or why it could not run."""
    try:
        res = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run: {exc}"
    lines = (res.stdout or res.stderr).strip().splitlines()
    return lines[0] if lines else f"exit {res.returncode}"


def doctor() -> int:
    """Print what the switch tests need and what is here; 0 if they can run."""
    for tool, what in (("simple_switch_grpc", "BMv2 with PI/P4Runtime"), ("p4c-bm2-ss", "p4c, BMv2 backend")):
        path = shutil.which(tool)
        print(f"{tool:20} {what:24} {(_version(tool) + '  ' + path) if path else 'missing'}")
    reasons = [r for r in (missing_switch(), missing_compiler()) if r]
    for r in reasons:
        print(f"switch tests skip: {r}")
    if reasons:
        print(HOW_TO_GET)
        return 1
    print("switch tests: will run")
    return 0


if __name__ == "__main__":
    raise SystemExit(doctor())
