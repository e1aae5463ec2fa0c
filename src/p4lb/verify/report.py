"""Readable output: a verdict table per design x property, and counterexamples as packet tables."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from p4lb.model.crc import ip_str
from p4lb.model.packet import Packet, flags_str
from p4lb.model.trace import OpStep, Run, Trace, WriteStep
from p4lb.verify.binding import BindingResult
from p4lb.verify.bmv2.cex import replay_command
from p4lb.verify.bmv2.equivalence import EquivalenceResult
from p4lb.verify.bmv2.equivalence import Verdict as Equivalence
from p4lb.verify.results import Result, Verdict
from p4lb.verify.runner import Report
from p4lb.verify.vacuity import ADMITTED, VacuityReport

STYLE = {Verdict.PROVEN: "green", Verdict.REFUTED: "red", Verdict.UNKNOWN: "bold magenta"}


def verdict_table(title: str, results: list[Result]) -> Table:
    """One row per (design, property); fits 80 columns (the trace files are listed with their tables)."""
    t = Table(title=title, title_justify="left")
    for col in ("design", "property", "verdict", "s", "how"):
        t.add_column(col, justify="right" if col == "s" else "left")
    for r in results:
        t.add_row(r.design, f"{r.prop.name} {r.prop.value}", f"[{STYLE[r.verdict]}]{r.verdict.value}[/]", f"{r.seconds:.1f}", r.detail)
    return t


def binding_table(bindings: list[BindingResult]) -> Table:
    """One row per kind of step: the model's step and the encoding's are proven equal."""
    t = Table(title="Model = Z3 encoding (every state, every input)", title_justify="left")
    for col in ("design", "step", "verdict", "paths", "s"):
        t.add_column(col, justify="right" if col in ("paths", "s") else "left")
    for b in bindings:
        verdict = "equal" if b.verdict is Verdict.PROVEN else f"{b.verdict.value}: {b.detail}"
        t.add_row(b.design, b.step, f"[{STYLE[b.verdict]}]{escape(verdict)}[/]", str(b.paths), f"{b.seconds:.2f}")
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


def compiled_table(results: list[EquivalenceResult]) -> Table:
    """One row per compiled program: its BMv2 JSON makes the model's decision and state change for every packet."""
    t = Table(title="Compiled BMv2 JSON = model (every packet)", title_justify="left")
    for col in ("program", "verdict", "checks", "s"):
        t.add_column(col, justify="right" if col in ("checks", "s") else "left")
    for c in results:
        style = "green" if c.verdict is Equivalence.EQUIVALENT else "red"
        t.add_row(f"{c.program}.json", f"[{style}]{c.verdict.value}[/]", str(len(c.checks)), f"{c.seconds:.1f}")
    return t


def print_compiled(results: list[EquivalenceResult], console: Console, cex_files: dict[str, str] | None = None) -> None:
    """The equivalence table, its assumptions (the controller discipline among them) and any counterexample with its replay."""
    console.print(compiled_table(results))
    for c in results:
        console.print(f"{c.program}.json assumes:", style="bold")
        for a in c.assumptions:
            console.print(escape(f"  - {a}"))
        if c.counterexample is not None:
            console.print(escape(f"  differs: {c.counterexample}"), style="red")
            if c.program in (cex_files or {}):
                console.print(escape(f"  replay on BMv2: {replay_command(Path((cex_files or {})[c.program]))}"))


def vacuity_table(reports: list[VacuityReport]) -> Table:
    """Each kind of step: the shortest run from deployment that ends with it, per mode, and the induction premises admit it."""
    reach_n = min((v.reach_n for v in reports), default=0)
    t = Table(title=f"Non-vacuity: every kind of step happens (run length from deployment, N = {reach_n}; premises at the proof's N)", title_justify="left")
    t.add_column("kind of step")
    for v in reports:
        t.add_column(v.mode.replace("operations", "ops"), justify="right")
    for name in max((list(v.reached) for v in reports), key=len, default=[]):
        cells = []
        for v in reports:
            depth, prem = v.reached.get(name, -1), v.premises.get(name)
            cells.append("-" if depth == -1 else f"[red]{'never' if depth is None else depth} ({prem})[/]" if depth is None or prem not in ADMITTED else f"{depth}")
        t.add_row(name, *cells)
    return t


def print_report(report: Report, console: Console) -> None:
    """The whole run, for a person."""
    if report.bindings:
        console.print(binding_table(report.bindings))
    if report.compiled:
        print_compiled(report.compiled, console, report.compiled_cex)
    if report.vacuity:
        console.print(vacuity_table(report.vacuity))
    for name, inv in report.invariants.items():
        state = "inductive" if inv.ok else f"NOT inductive: {inv.failed}"
        shared = f" ({', '.join(inv.shared)} steps: the atomic mode's, the same transitions)" if inv.shared else ""
        console.print(f"p4lb invariant ({name}): {inv.clauses} clause families, {state}{shared} [{inv.seconds:.2f}s]")
    n = f"N = {report.n} backends for p4lb" if "p4lb" in report.designs else "the seed's 4 backends"
    console.print(verdict_table(f"Verdicts ({n})", report.results))
    if report.mutants:
        console.print(verdict_table("Mutants: each must be refuted on the property it breaks (shows the prover can fail)", report.mutants))
    for r in report.results + report.mutants:
        if r.trace is not None:
            console.print(trace_table(r.trace, r.trace.run()))
            if r.trace_path:
                console.print(f"  replay: python -m p4lb.verify replay {r.trace_path}", soft_wrap=True)
    bad = report.failures()
    if bad and not report.results:
        console.print("[red]The proofs were not run:[/] the encoding they would use is not the model or the compiled program.")
    console.print(escape(f"{report.summary()} [{report.seconds:.1f}s]"))
    if bad:
        console.print("[red]FAILED:[/] " + escape("; ".join(bad)))
