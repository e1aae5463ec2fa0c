"""Where the P4 toolchain is, and why switch tests cannot run when it is not."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from p4lb.p4 import PROGRAMS, artifacts, p4_dir

__all__ = ["PROGRAMS", "artifacts", "build_all", "compile_p4", "missing_compiler", "missing_switch", "require_switch"]


def compile_p4(program: str, out_dir: Path) -> tuple[Path, Path]:
    """Run p4c-bm2-ss on p4/PROGRAM.p4 into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, p4info = out_dir / f"{program}.json", out_dir / f"{program}.p4info.txtpb"
    source = f"p4/{program}.p4"  # relative to the package folder: the JSON's source_info names it
    subprocess.run(["p4c-bm2-ss", "--arch", "v1model", "--p4runtime-files", str(p4info), "-o", str(json_path), source], check=True, cwd=p4_dir().parent)
    return p4info, json_path


def build_all() -> None:
    """Regenerate the committed artifacts of every program (`nox -s build_p4`)."""
    for program in PROGRAMS:
        compile_p4(program, p4_dir() / "build")
        print(f"built {program}: {', '.join(str(p) for p in artifacts(program))}")


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
    for program in PROGRAMS:
        for path in artifacts(program):
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
