"""The P4 programs and their compiled artifacts, shipped as package data (importlib.resources)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from p4lb.model.config import P4LB_MID_TABLE_BITS, P4LB_SMALL_TABLE_BITS, P4LB_TABLE_BITS

PROGRAMS = ("p4lb", "seed", "forward", "probe_floor", "probe_swar")
# Every committed build: its name (of build/NAME.json and build/NAME.p4info.txtpb) -> (program, p4c -D defines).
# p4lb_small: p4lb.p4 on a table of one bucket per way (4 ways x 8 = 32 places), where tests can fill every
# candidate of a flow and see refusals.
BUILDS: dict[str, tuple[str, tuple[tuple[str, int], ...]]] = {
    "p4lb": ("p4lb", ()),
    "p4lb_small": ("p4lb", (("FLOW_BITS", P4LB_SMALL_TABLE_BITS),)),
    "p4lb_mid": ("p4lb", (("FLOW_BITS", P4LB_MID_TABLE_BITS),)),
    "seed": ("seed", ()),
    "forward": ("forward", ()),
    "probe_floor": ("probe_floor", ()),  # forward.p4 + a 32-candidate probe, place by place (lab.instructions)
    "probe_swar": ("probe_swar", ()),  # forward.p4 + the same probe on packed buckets, 8 places per test (lab.instructions)
}
P4LB_BUILDS = {P4LB_TABLE_BITS: "p4lb", P4LB_SMALL_TABLE_BITS: "p4lb_small", P4LB_MID_TABLE_BITS: "p4lb_mid"}  # flow table bits -> build of p4lb.p4


def p4_dir() -> Path:
    """The folder holding the P4 sources (and build/ with the compiled artifacts)."""
    return Path(str(files(__package__)))


def source(program: str) -> Path:
    """The P4_16 source of a program."""
    return p4_dir() / f"{program}.p4"


def artifacts(build: str) -> tuple[Path, Path]:
    """(P4Info text, BMv2 JSON) of a build (a program's name for its default build; see BUILDS): the order
    P4Runtime's pipeline push takes them."""
    folder = p4_dir() / "build"
    return folder / f"{build}.p4info.txtpb", folder / f"{build}.json"


def p4lb_build(table_bits: int) -> str:
    """The committed build of p4lb.p4 with a flow table of 2**table_bits places (ValueError if there is none)."""
    if table_bits not in P4LB_BUILDS:
        sizes = ", ".join(f"{b} ({name})" for b, name in sorted(P4LB_BUILDS.items()))
        raise ValueError(f"no committed build of p4lb.p4 has 2^{table_bits} flow places: table bits {sizes}, or compile it with -DFLOW_BITS={table_bits}")
    return P4LB_BUILDS[table_bits]
