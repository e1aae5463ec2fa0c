"""`python -m p4lb.verify`: prove P1..P8 and P4b for the seed and p4lb, or replay a counterexample."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from rich.console import Console

from p4lb.model.design import DESIGNS
from p4lb.model.errors import ModelError
from p4lb.model.spec import Prop
from p4lb.model.trace import Trace
from p4lb.verify.errors import VerifyError
from p4lb.verify.report import print_report, trace_table
from p4lb.verify.runner import run


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(prog="python -m p4lb.verify", description="Prove p4lb's properties P1..P8 and P4b for all packet sequences; refute them with minimal traces.")
    sub = p.add_subparsers(dest="cmd")
    pr = sub.add_parser("prove", help="check designs x properties (the default)")
    pr.add_argument("--design", choices=DESIGNS, action="append", help="seed or p4lb (repeatable; default both)")
    pr.add_argument("--property", "-p", action="append", help="P1..P8 or P4b (repeatable; default all)")
    pr.add_argument("-n", "--backends", type=int, default=64, help="N for p4lb (default 64; the seed always has 4)")
    pr.add_argument("--json", action="store_true", help="print the whole report as JSON")
    pr.add_argument("--out", type=Path, default=None, help="where counterexample traces are saved (default out/traces, or out/traces-SUBSET for a subset run)")
    pr.add_argument("--no-mutants", action="store_true", help="skip the mutant checks")
    pr.add_argument("--max-depth", type=int, default=8, help="deepest counterexample searched")
    pr.add_argument("--jobs", "-j", type=int, default=None, help="checks run in this many processes (default: one per CPU; 1: all in this process)")
    rp = sub.add_parser("replay", help="replay a saved counterexample on the executable model")
    rp.add_argument("trace", type=Path)
    args = p.parse_args(argv if argv and argv[0] in ("prove", "replay", "-h", "--help") else ["prove", *argv])
    return args


def traces_dir(designs: list[str], props: list[Prop], n: int, no_mutants: bool) -> Path:
    """out/traces for the full default run; a folder of its own for any other run, so it never overwrites the full run's traces."""
    if sorted(designs) == sorted(DESIGNS) and props == list(Prop) and n == 64 and not no_mutants:
        return Path("out/traces")
    size = f"-n{n}" if "p4lb" in designs else ""
    return Path("out") / f"traces-{'+'.join(designs)}-{'+'.join(p.name for p in props)}{size}{'-nomutants' if no_mutants else ''}"


def cmd_prove(args: argparse.Namespace, console: Console) -> int:
    """Run the prover; 0 iff every p4lb verdict is proven, none is unknown and every mutant is refuted."""
    try:
        props = [Prop.parse(x) for x in args.property] if args.property else list(Prop)
    except KeyError as exc:
        console.print(f"[red]--property {exc.args[0]!r} is invalid: use P1..P8 or P4b[/]")
        return 2
    designs = args.design or list(DESIGNS)
    report = run(designs, props, args.backends, not args.no_mutants, args.out or traces_dir(designs, props, args.backends, args.no_mutants), args.max_depth, args.jobs)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print_report(report, console)
    return 1 if report.failures() else 0


def cmd_replay(args: argparse.Namespace, console: Console) -> int:
    """Replay: 0 if the trace still breaks its property at the recorded step, 1 if not."""
    trace = Trace.load(args.trace)
    result = trace.run()
    console.print(trace_table(trace, result))
    last = result.results[-1]
    broken = {p for p, _ in last.violations}
    for p, why in last.violations:
        console.print(f"  {p.name}: {why}")
    if trace.prop is not None and trace.prop not in broken:
        console.print(f"[yellow]{trace.prop.name} no longer breaks at step {last.index}[/]")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    try:
        return cmd_replay(args, console) if args.cmd == "replay" else cmd_prove(args, console)
    except (ModelError, VerifyError, OSError, ValueError) as exc:
        console.print(f"[red]error: {exc}[/]")
        return 2


if __name__ == "__main__":
    sys.exit(main())
