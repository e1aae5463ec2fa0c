"""`python -m p4lb.verify.bmv2 [p4lb|seed]`: prove the compiled programs equal to the model, per packet."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap

from p4lb.verify.bmv2.equivalence import PROGRAMS, EquivalenceResult, Verdict, check_equivalence

WIDTH = 80


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(prog="python -m p4lb.verify.bmv2", description="Per-packet equivalence of the BMv2 JSON and the model, in Z3.")
    p.add_argument("programs", nargs="*", default=list(PROGRAMS), help="p4lb and/or seed (default both)")
    p.add_argument("-n", "--backends", type=int, default=4, help="N backends for p4lb (default 4)")
    p.add_argument("--timeout", type=int, default=20, help="seconds per Z3 query (default 20)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every query")
    args = p.parse_args(argv)
    bad = [x for x in args.programs if x not in PROGRAMS]
    if bad:
        p.error(f"unknown program {bad[0]!r}: use {' or '.join(PROGRAMS)}")
    return args


def wrap(text: str, indent: str = "  ") -> str:
    """Text wrapped to the table width."""
    return textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ")


def print_result(r: EquivalenceResult) -> None:
    """One program: its checks, verdict, time, assumptions, notes and any counterexample."""
    print(f"{r.program}: {r.verdict.value.upper()} in {r.seconds:.1f}s")
    print(f"  {'check':<58} {'z3':>7} {'time':>8}")
    for c in r.checks:
        name = c.name if len(c.name) <= 58 else c.name[:55] + "..."
        mark = "" if c.ok else " !"
        print(f"  {name:<58} {c.answer:>7} {c.seconds:>7.2f}s{mark}")
    print("  assumptions:")
    for a in r.assumptions:
        print(wrap(f"- {a}", "    "))
    for n in r.notes:
        print(wrap(f"note: {n}"))
    if r.counterexample is not None:
        print("  counterexample:")
        for line in json.dumps(r.counterexample, indent=1, default=str).splitlines():
            print(textwrap.shorten("    " + line, WIDTH, placeholder="...") if len(line) > WIDTH - 4 else "    " + line)


def main(argv: list[str] | None = None) -> int:
    """0 iff every program is proven equivalent."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    results = [check_equivalence(p, n=args.backends, timeout_ms=args.timeout * 1000) for p in dict.fromkeys(args.programs)]
    for r in results:
        print_result(r)
    print("-" * WIDTH)
    for r in results:
        print(f"{r.program:<8} {r.verdict.value:<12} {r.seconds:>6.1f}s  {len(r.checks)} checks")
    return 0 if all(r.verdict is Verdict.EQUIVALENT for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
