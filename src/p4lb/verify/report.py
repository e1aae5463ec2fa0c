"""Readable output: a verdict table per design x property, and counterexamples as packet tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from p4lb.model.crc import ip_str
from p4lb.model.packet import Packet, flags_str
from p4lb.model.trace import OpStep, Run, Trace, WriteStep
from p4lb.verify.results import Result, Verdict
from p4lb.verify.runner import Report

STYLE = {Verdict.PROVEN: "green", Verdict.REFUTED: "red", Verdict.UNKNOWN: "bold magenta"}


def verdict_table(title: str, results: list[Result]) -> Table:
    """One row per (design, property)."""
    t = Table(title=title, title_justify="left")
    for col in ("design", "property", "verdict", "time (s)", "depth / invariant", "counterexample"):
        t.add_column(col)
    for r in results:
        t.add_row(r.design, f"{r.prop.name} {r.prop.value}", f"[{STYLE[r.verdict]}]{r.verdict.value}[/]", f"{r.seconds:.2f}", r.detail, r.trace_path or "")
    return t


def describe_step(step: object, cfg_vip: int, vip_port: int) -> tuple[str, str]:
    """(kind, what) for a trace step."""
    if isinstance(step, Packet):
        return "packet", f"{ip_str(step.src_ip)}:{step.src_port} -> {ip_str(cfg_vip)}:{vip_port} [{flags_str(step.flags)}] t={step.time_us}us"
    if isinstance(step, OpStep):
        return "operation", str(step.op)
    assert isinstance(step, WriteStep)
    suffix = f"  (commit: {step.pool.describe()})" if step.pool is not None else ""
    return "write", f"{step.write}{suffix}"


def trace_table(trace: Trace, run: Run) -> Table:
    """A counterexample as the packets and operations that lead to it, replayed on the executable model."""
    cfg = run.design.cfg
    t = Table(title=f"{trace.design if trace.design == 'seed' else trace.variant.name()} breaks {trace.prop.name if trace.prop else '?'} (start: {trace.pool.describe()})", title_justify="left")
    for col in ("step", "kind", "what", "switch did", "broken"):
        t.add_column(col)
    for res in run.results:
        kind, what = describe_step(res.step, cfg.vip, cfg.vip_port)
        did = str(res.outcome) if res.outcome is not None else "; ".join(str(w) for w in res.writes) or "(no write needed)"
        broken = ", ".join(sorted({p.name for p, _ in res.violations}))
        t.add_row(str(res.index), kind, what, did, f"[red]{broken}[/]" if broken else "")
    return t


def print_report(report: Report, console: Console) -> None:
    """The whole run, for a person."""
    for name, inv in report.invariants.items():
        state = "inductive" if inv.ok else f"NOT inductive: {inv.failed}"
        console.print(f"p4lb invariant ({name}): {inv.clauses} clause families, {state} [{inv.seconds:.2f}s]")
    console.print(verdict_table(f"Verdicts, N = {report.n} backends for p4lb (the seed has 4)", report.results))
    if report.mutants:
        console.print(verdict_table("Mutants: each must be refuted on the property it breaks (shows the prover can fail)", report.mutants))
    for r in report.results + report.mutants:
        if r.trace is not None:
            console.print(trace_table(r.trace, r.trace.run()))
            if r.trace_path:
                console.print(f"  replay: python -m p4lb.verify replay {r.trace_path}")
    bad = report.failures()
    console.print(f"{len(report.results)} verdicts, {len(report.mutants)} mutants, {report.seconds:.1f}s; " + ("[red]FAILED: " + "; ".join(bad) + "[/]" if bad else "[green]all p4lb properties proven, all mutants refuted[/]"))
