"""probe_swar.json's lane-parallel probe computes exactly the 64 tests it stands for (a floor lab.instructions measures).

Proven on the compiled JSON by the BMv2 symbolic executor, for every register content, client, clock and timestamp:
the probe reads bucket j * 32768 + (crc32 of way j's fields mod 32768) for way j, and byte k of `masks` is place k
of those 4 buckets: its bit j is "holds the key" (state != FREE and key = 0 ++ client address ++ client port) in
way j's bucket, its bit 4 + j "held" (state OPEN and now - last_seen <= the timeout, 48-bit) there. The lanes'
guard bits (48, 51, 108) and bits 109..127 are 0, as the layout keeps them. A benchmark whose probe tested
something else would measure nothing. The crc32 values are left free: which bucket a flow hashes to is not the point.
"""

from __future__ import annotations

import z3

from p4lb.verify.bmv2.program import load
from p4lb.verify.bmv2.symbolic import Environment, Unlisted, execute, fresh_input

LANE = 128
WAY_BUCKETS = 32768
TIMEOUT = 60_000_000  # probe_swar.p4's fixed timeout (probe_floor.p4's)


def _selects(term: z3.ExprRef, array: z3.ArrayRef) -> list[z3.ExprRef]:
    """The reads of `array` inside term."""
    seen: set[int] = set()
    found: list[z3.ExprRef] = []
    todo = [term]
    while todo:
        t = todo.pop()
        if t.get_id() in seen:
            continue
        seen.add(t.get_id())
        if z3.is_select(t) and t.arg(0).eq(array):
            found.append(t)
        todo.extend(t.children())
    return found


def _uses(term: z3.ExprRef, var: z3.ExprRef) -> bool:
    return any(t.eq(var) for t in _selects_any(term))


def _selects_any(term: z3.ExprRef) -> list[z3.ExprRef]:
    seen: set[int] = set()
    out, todo = [], [term]
    while todo:
        t = todo.pop()
        if t.get_id() not in seen:
            seen.add(t.get_id())
            out.append(t)
            todo.extend(t.children())
    return out


def _no_products(term: z3.ExprRef) -> z3.ExprRef:
    """term with each product by a constant written as the sum of the shifted copies it is (bit-blasts small)."""
    pairs = []
    for t in _selects_any(term):
        if z3.is_app_of(t, z3.Z3_OP_BMUL) and t.num_args() == 2:
            a, b = t.arg(0), t.arg(1)
            c, x = (a, b) if z3.is_bv_value(z3.simplify(a)) else (b, a)
            c = z3.simplify(c)
            if z3.is_bv_value(c):
                v = c.as_long()
                parts = [x << i for i in range(v.bit_length()) if v >> i & 1]
                pairs.append((t, sum(parts[1:], parts[0]) if parts else z3.BitVecVal(0, t.size())))
    return z3.substitute(term, *pairs) if pairs else term


def test_swar_masks_are_the_per_place_tests():
    prog = load("probe_swar")
    buckets = z3.Array("buckets", z3.BitVecSort(17), z3.BitVecSort(1024))
    inp = fresh_input(prog, "swar")
    res = execute(prog, Environment(registers={"FwdIngress.buckets": buckets}, unlisted=Unlisted.ARBITRARY), inp, "swar")
    crc = [z3.BitVec(f"crc{j}", h.value.size()) for j, h in enumerate(res.hashes)]
    assert len(crc) == 4  # one per way, in way order
    free = lambda t: z3.substitute(t, *[(h.value, c) for h, c in zip(res.hashes, crc, strict=True)])  # noqa: E731
    masks, ran = free(res.field("scalars", "metadata.masks")), free(z3.And(res.valid["ipv4"], res.valid["tcp"]))
    masks = _no_products(masks)
    reads = _selects(masks, buckets)
    way = {j: [r for r in reads if _uses(r.arg(1), crc[j])] for j in range(4)}
    assert all(len(rs) == 1 for rs in way.values()), "one read per way"
    cells = {j: rs[0] for j, rs in way.items()}
    key = z3.Concat(z3.BitVecVal(0, 8), inp.field("ipv4", "srcAddr"), inp.field("tcp", "srcPort"))
    laid_out, tests = [], []
    for j, cell in cells.items():
        want = z3.BitVecVal(j * WAY_BUCKETS, 17) + z3.Extract(16, 0, z3.URem(crc[j], WAY_BUCKETS))
        tests.append(cell.arg(1) == want)
        for k in range(8):
            lane = lambda hi, lo, k=k, cell=cell: z3.Extract(LANE * k + hi, LANE * k + lo, cell)  # noqa: E731
            bit = lambda b, k=k: z3.Extract(8 * k + b, 8 * k + b, masks) == 1  # noqa: E731
            laid_out += [lane(48, 48) == 0, lane(51, 51) == 0, lane(127, 108) == 0]
            tests.append(bit(j) == z3.And(lane(50, 49) != 0, lane(107, 52) == key))
            tests.append(bit(4 + j) == z3.And(lane(50, 49) == 1, z3.ULE(inp.timestamp - lane(47, 0), TIMEOUT)))
    for test in tests:  # one query per bit: each is a lane's carry against its comparison (all at once, Z3 gives up)
        s = z3.Solver()
        s.set("timeout", 60_000)
        s.add(ran, *laid_out, z3.Not(test))
        assert s.check() == z3.unsat, test
    s = z3.Solver()
    s.add(ran, *laid_out, *[z3.Extract(8 * k + b, 8 * k + b, masks) == 1 for k in (0, 7) for b in (0, 7)])  # not vacuous
    assert s.check() == z3.sat
