"""probe_swar.json's lane-parallel probe makes exactly the 64 tests it stands for (a benchmark lab.instructions runs).

Proven on the compiled JSON by the BMv2 symbolic executor, for every register content, client, clock and bucket
hash: way j reads bucket j * 32768 + (its crc32 mod 32768), and byte k of `masks` is place k of those 4 buckets:
its bit j is "holds the key" (state != FREE and key = 0 ++ client address ++ client port) in way j's bucket, its bit
4 + j "held" (state OPEN and now - last_seen <= the program's timeout, 48-bit) there. A benchmark whose probe
tested something else would measure nothing; three bugs in the JSON are shown to fail the same check.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import z3

from p4lb.verify.bmv2.program import load, load_json
from p4lb.verify.bmv2.symbolic import Environment, Unlisted, execute, fresh_input
from p4lb.verify.encoding import subterms, uninterpreted

LANE = 128
WAY_BUCKETS = 32768
TIMEOUT = 60_000_000  # probe_swar.p4's TIMEOUT (probe_floor.p4's)


def _no_products(term: z3.ExprRef) -> z3.ExprRef:
    """term with each product by a constant written as the sum of the shifted copies it is (bit-blasts small)."""
    pairs = []
    for t in subterms([term]):
        if z3.is_app_of(t, z3.Z3_OP_BMUL) and t.num_args() == 2:
            a, b = z3.simplify(t.arg(0)), z3.simplify(t.arg(1))
            c, x = (a, t.arg(1)) if z3.is_bv_value(a) else (b, t.arg(0))
            if z3.is_bv_value(c):
                parts = [x << i for i in range(c.as_long().bit_length()) if c.as_long() >> i & 1]
                pairs.append((t, sum(parts[1:], parts[0]) if parts else z3.BitVecVal(0, t.size())))
    return z3.substitute(term, *pairs) if pairs else term


def _wrong(broken: Callable[[str, dict[str, Any]], None] | None) -> tuple[list[str], bool]:
    """The per-bit tests (and bucket choices) the JSON (broken by `broken`, if given) gets wrong ([] if none), and
    whether its premises hold with the masks' first and last bits all set (the check is not vacuous)."""
    data = load_json("probe_swar")
    if broken is not None:
        for action in data["actions"]:
            broken(action["name"], action)
    prog = load("probe_swar", data)
    buckets = z3.Array("buckets", z3.BitVecSort(17), z3.BitVecSort(1024))
    inp = fresh_input(prog, "swar")
    res = execute(prog, Environment(registers={"FwdIngress.buckets": buckets}, unlisted=Unlisted.ARBITRARY), inp, "swar")
    crc = [z3.BitVec(f"crc{j}", h.value.size()) for j, h in enumerate(res.hashes)]
    assert len(crc) == 4  # one per way, in way order
    free = lambda t: z3.substitute(t, *[(h.value, c) for h, c in zip(res.hashes, crc, strict=True)])  # noqa: E731
    masks, ran = _no_products(free(res.field("scalars", "metadata.masks"))), free(z3.And(res.valid["ipv4"], res.valid["tcp"]))
    reads = [t for t in subterms([masks]) if z3.is_select(t) and t.arg(0).eq(buckets)]
    cells = {j: [r for r in reads if any(u.eq(crc[j]) for u in uninterpreted([r.arg(1)]))] for j in range(4)}
    assert all(len(rs) == 1 for rs in cells.values()), "one read per way"
    key = z3.Concat(z3.BitVecVal(0, 8), inp.field("ipv4", "srcAddr"), inp.field("tcp", "srcPort"))
    tests: list[tuple[str, z3.BoolRef]] = []
    for j, (cell,) in cells.items():
        tests.append((f"way {j}'s bucket", cell.arg(1) == z3.BitVecVal(j * WAY_BUCKETS, 17) + z3.Extract(16, 0, z3.URem(crc[j], WAY_BUCKETS))))
        for k in range(8):
            lane = lambda hi, lo, k=k, cell=cell: z3.Extract(LANE * k + hi, LANE * k + lo, cell)  # noqa: E731
            bit = lambda b, k=k: z3.Extract(8 * k + b, 8 * k + b, masks) == 1  # noqa: E731
            tests.append((f"match {j}.{k}", bit(j) == z3.And(lane(50, 49) != 0, lane(107, 52) == key)))
            tests.append((f"held {j}.{k}", bit(4 + j) == z3.And(lane(50, 49) == 1, z3.ULE(inp.timestamp - lane(47, 0), TIMEOUT))))
    wrong = []
    for name, test in tests:  # one query per bit: each is a lane's carry against its comparison (all at once, Z3 gives up)
        s = z3.Solver()
        s.set("timeout", 60_000)
        s.add(ran, z3.Not(test))
        if s.check() != z3.unsat:
            wrong.append(name)
    s = z3.Solver()
    s.add(ran, *[z3.Extract(b, b, masks) == 1 for b in (0, 7, 56, 63)])
    return wrong, s.check() == z3.sat


def test_swar_masks_are_the_per_place_tests():
    assert _wrong(None) == ([], True)


def _replace(action: str, old: str, new: str) -> Callable[[str, dict[str, Any]], None]:
    """A bug: every constant `old` in `action`'s primitives becomes `new`."""

    def broken(name: str, act: dict[str, Any]) -> None:
        if name == action:
            text = json.dumps(act["primitives"])
            assert f'"value": "{old}"' in text
            act["primitives"] = json.loads(text.replace(f'"value": "{old}"', f'"value": "{new}"'))

    return broken


@pytest.mark.parametrize(
    "bug",
    [
        _replace("FwdIngress.probe", "0x39", "0x38"),  # the key's guard shifted onto the wrong bit
        _replace("FwdIngress.gather_1", "0x78", "0x70"),  # lanes 1, 3, 5, 7 folded onto the wrong byte
        _replace("FwdIngress.gather_high", "0x33", "0x32"),  # the fold starts one bit off
    ],
)
def test_a_broken_probe_fails_the_check(bug):
    wrong, _ = _wrong(bug)
    assert any("match" in w for w in wrong)
