"""The P4 programs and their compiled artifacts, shipped as package data (importlib.resources)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

PROGRAMS = ("p4lb", "seed", "forward")


def p4_dir() -> Path:
    """The folder holding the P4 sources (and build/ with the compiled artifacts)."""
    return Path(str(files(__package__)))


def source(program: str) -> Path:
    """The P4_16 source of a program."""
    return p4_dir() / f"{program}.p4"


def artifacts(program: str) -> tuple[Path, Path]:
    """(P4Info text, BMv2 JSON) of a program: the order P4Runtime's pipeline push takes them."""
    build = p4_dir() / "build"
    return build / f"{program}.p4info.txtpb", build / f"{program}.json"
