"""`python -m p4lb.verify.bench`: prove time per design and property, the bindings' times, and peak memory, for growing N."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table


def measure(design: str, n: int) -> tuple[dict[str, Any], float, float]:
    """Run the prover in a child process: (report, wall seconds, peak RSS in MiB)."""
    cmd = [sys.executable, "-m", "p4lb.verify", "prove", "--design", design, "-n", str(n), "--no-mutants", "--json", "--out", os.devnull + ".d"]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"prover failed for {design} N={n}")
    return json.loads(out), wall, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    """Print the table, and the growth factor of p4lb's prove time."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="4,16,64,128", help="comma-separated N for p4lb")
    p.add_argument("--no-multiway", dest="multiway", action="store_false", help="skip the multi-way table's proof times")
    p.add_argument("--multiway-n", type=int, default=64, help="N for the multi-way table's proofs (default 64)")
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    console = Console()
    table = Table(title="Prove time per property (s), bindings (s) and peak memory; one child process per row", title_justify="left")
    for col in ("design", "N", "props", "slowest", "inv", "model=enc", "json=model", "vacuity", "wall", "MiB"):
        table.add_column(col, justify="right")
    totals: dict[int, float] = {}
    for design, n in [("seed", 4)] + [("p4lb", n) for n in sizes]:
        report, wall, rss = measure(design, n)
        slow = max(report["results"], key=lambda r: r["seconds"])
        times = [f"{sum(r['seconds'] for r in report['results']):.2f}", f"{slow['property']} {slow['seconds']:.2f}"]
        inv = sum(v["seconds"] for v in report["invariants"].values())
        binding = sum(b["seconds"] for b in report["bindings"])
        compiled = sum(c["seconds"] for c in report["compiled"])
        vacuity = sum(v["seconds"] for v in report["vacuity"])
        table.add_row(design, str(n), *times, f"{inv:.2f}", f"{binding:.2f}", f"{compiled:.2f}", f"{vacuity:.2f}", f"{wall:.1f}", f"{rss:.0f}")
        if design == "p4lb":
            totals[n] = report["seconds"]
    console.print(table)
    console.print("props: all properties' proof (or counterexample) time; inv: invariant checks; model=enc: the model's step proven equal to the encoding's; json=model: the compiled BMv2 JSON proven equal per packet; vacuity: every kind of step shown possible")
    if max(totals, default=0) >= 128:  # services: every check holds for any 8-bit service id (docs/services.md)
        n = max(totals)
        console.print(f"services: V = 256 (any 8-bit service id: P1-P8 per service, P9, the JSON for every id) x N = {n} proven in {totals[n]:.0f} s (goal: V = 64 x N = 128 under 600 s)")
    ns = sorted(totals)
    for a, b in zip(ns, ns[1:], strict=False):
        ratio = totals[b] / totals[a]
        console.print(f"p4lb prove time N={a} -> N={b}: x{ratio:.2f} for x{b / a:.0f} backends (quadratic would be x{(b / a) ** 2:.0f})")
    if args.multiway:
        console.print(multiway(args.multiway_n))
    return 0


def multiway(n: int, table: tuple[int, int, int] = (20, 4, 8)) -> Table:
    """The multi-way design's proof times at the planned shape (2^20 places, 4 ways x 8-place buckets), in this process."""
    from p4lb.model.design import make_design  # noqa: PLC0415  (the prover's imports cost a second; only this section needs them)
    from p4lb.model.spec import Prop  # noqa: PLC0415
    from p4lb.verify.binding import bind_p4lb_packet  # noqa: PLC0415
    from p4lb.verify.engine import Task, check_invariant, prove  # noqa: PLC0415

    bits, ways, bucket = table
    out = Table(title=f"multi-way table {ways}x{bucket} on 2^{bits} places, N={n}: seconds per check", title_justify="left")
    for col in ("check", "verdict", "seconds"):
        out.add_column(col, justify="right")
    t = time.monotonic()
    r = bind_p4lb_packet(make_design("p4lb", n, flow_table_bits=bits, flow_ways=ways, flow_bucket=bucket).cfg)
    out.add_row(f"model = encoding ({r.paths} paths)", r.verdict.value, f"{time.monotonic() - t:.1f}")
    for atomic, prop in ((True, Prop.P1), (False, Prop.P7)):
        t = time.monotonic()
        inv = check_invariant(Task("p4lb", n, prop, flow_table=table))
        out.add_row(f"invariant ({'atomic operations' if atomic else 'single writes'})", "inductive" if inv.ok else f"not: {inv.failed}", f"{time.monotonic() - t:.1f}")
    for prop in Prop:
        t = time.monotonic()
        res = prove(Task("p4lb", n, prop, flow_table=table))
        out.add_row(prop.name, res.verdict.value, f"{time.monotonic() - t:.1f}")
    return out


if __name__ == "__main__":
    sys.exit(main())
