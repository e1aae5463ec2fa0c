"""`python -m p4lb.verify.bmv2 [p4lb|seed]`: prove the compiled programs equal to the model, per packet.

A program that differs gets its counterexample written to out/bmv2-cex-<program>-<hash>.json, and the one
command that replays it on BMv2 is printed: `python -m p4lb.lab.replay FILE` (see p4lb/lab/replay.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from pathlib import Path

from p4lb.verify.bmv2.equivalence import PROGRAMS, EquivalenceResult, Verdict, check_equivalence
from p4lb.verify.errors import VerifyError
from p4lb.verify.results import QUERY_TIMEOUT_MS

log = logging.getLogger(__name__)

WIDTH = 80
OUT_DIR = Path("out")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(prog="python -m p4lb.verify.bmv2", description="Per-packet equivalence of the BMv2 JSON and the model, in Z3.")
    p.add_argument("programs", nargs="*", default=list(PROGRAMS), help="p4lb and/or seed (default both)")
    p.add_argument("-n", "--backends", type=int, default=4, help="N backends for p4lb (default 4)")
    p.add_argument("--timeout", type=int, default=QUERY_TIMEOUT_MS // 1000, help=f"seconds per Z3 query (default {QUERY_TIMEOUT_MS // 1000})")
    p.add_argument("-v", "--verbose", action="store_true", help="log every query")
    p.add_argument("--json", type=Path, help="check this compiled BMv2 JSON (e.g. a mutant) instead of the committed build (one program)")
    p.add_argument("--p4info", type=Path, help="the P4Info a replay pushes with --json's program (default: the committed one)")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="where counterexamples are written (default out/)")
    args = p.parse_args(argv)
    bad = [x for x in args.programs if x not in PROGRAMS]
    if bad:
        p.error(f"unknown program {bad[0]!r}: use {' or '.join(PROGRAMS)}")
    if args.json is not None and len(set(args.programs)) != 1:
        p.error("--json checks one program: name it (p4lb or seed)")
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
        shown = {k: v for k, v in r.counterexample.items() if k != "input"}  # the whole packet goes to the file
        for line in json.dumps(shown, indent=1, default=str).splitlines():
            print(textwrap.shorten("    " + line, WIDTH, placeholder="...") if len(line) > WIDTH - 4 else "    " + line)


def check(args: argparse.Namespace) -> int:
    """0 iff every program is proven equivalent; a differing one's counterexample saved and its replay printed."""
    data = None
    if args.json is not None:
        try:
            data = json.loads(args.json.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise VerifyError(f"cannot read the BMv2 JSON {args.json}: {getattr(exc, 'strerror', None) or exc}") from None
    results = [check_equivalence(p, n=args.backends, data=data, timeout_ms=args.timeout * 1000) for p in dict.fromkeys(args.programs)]
    for r in results:
        print_result(r)
    print("-" * WIDTH)
    for r in results:
        print(f"{r.program:<8} {r.verdict.value:<12} {r.seconds:>6.1f}s  {len(r.checks)} checks")
    for r in results:
        if r.verdict is Verdict.DIFFERS and r.counterexample is not None:
            save(r, args)
    return 0 if all(r.verdict is Verdict.EQUIVALENT for r in results) else 1


def save(r: EquivalenceResult, args: argparse.Namespace) -> None:
    """Write a differing program's counterexample and print the command that replays it on BMv2."""
    from p4lb.verify.bmv2.cex import replay_command, save_counterexample  # noqa: PLC0415

    path = save_counterexample(r, args.out, args.json, args.p4info, args.backends)
    print(f"{r.program}: counterexample written to {path}")
    print(f"  replay it on BMv2: {replay_command(path)}")


def main(argv: list[str] | None = None) -> int:
    """0 iff every program is proven equivalent; errors as one line on stderr (exit 2)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return check(args)
    except (VerifyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
