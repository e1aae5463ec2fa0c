#!/usr/bin/env python3
"""Mutation score of p4lb's checks: apply one realistic bug at a time to a copy of the repository and run the checks.

The working tree is never written: its tracked and untracked non-ignored files are copied once into a snapshot in
a temporary directory, each mutant gets its own copy of the snapshot, and every check runs there with PYTHONPATH
at the copy's src (the installed editable package is not used; each copy checks that). A mutant is KILLED when
`python -m p4lb.verify prove --no-mutants` exits non-zero or, if it survives that, when its layer's pytest
selection fails. A mutant still running after --timeout seconds is stopped and reported as undecided (timeout):
not a kill, since a slow check is not a failing one; the run then exits non-zero, naming the mutants to run again
alone with a larger --timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mutants import LAYERS, MODEL, MUTANTS, P4, Z3, Mutant, StaleMutant  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PINNING = "tests/test_pinning.py"  # included where it exists (being written concurrently)
PYTEST = ("-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-rfE", "--no-header")
LAYER_TESTS: dict[str, list[list[str]]] = {
    MODEL: [["tests/test_model.py", "tests/test_crc.py", "tests/test_checkers.py", "tests/test_weights.py", "tests/test_open_counts.py", "tests/test_crosscheck.py", "tests/test_bmv2_equivalence.py::test_executor_agrees_with_executable_model", PINNING]],
    Z3: [["tests/test_proofs.py", "tests/test_checkers.py", "tests/test_open_counts.py", "tests/test_crosscheck.py", PINNING, "-k", "not 64"]],
    P4: [["tests/test_bmv2_equivalence.py", "-k", "compiled_program or executor", PINNING], ["tests/switch/test_malformed.py"]],
}
_LIVE: set[int] = set()  # process groups of running checks (ended on Ctrl-C)
_LOCK = threading.Lock()


@dataclass
class Ran:
    """A finished (or timed out) command."""

    rc: int | None
    out: str
    err: str

    @property
    def timed_out(self) -> bool:
        """The command hit the deadline and was ended."""
        return self.rc is None


@dataclass
class Outcome:
    """What happened to one mutant."""

    mutant: Mutant
    status: str  # killed | timeout | survived | skipped | error
    by: str
    seconds: float


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(prog="tools/mutate.py", description=__doc__.splitlines()[0])
    p.add_argument("--only", action="append", default=[], metavar="ID", help="run only these mutants (repeatable, or comma-separated)")
    p.add_argument("--list", action="store_true", help="list the mutants (checking each still applies) and exit")
    p.add_argument("--jobs", type=int, default=1, help="mutants run in parallel (default 1)")
    p.add_argument("--layer", choices=LAYERS, action="append", help="only mutants of this layer (repeatable)")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds per mutant before it is stopped and reported undecided (default 180)")
    p.add_argument("--no-baseline", action="store_true", help="skip checking that the unmutated snapshot passes every selected check")
    p.add_argument("--keep", action="store_true", help="keep the temporary copies")
    return p.parse_args(argv)


def select(args: argparse.Namespace) -> list[Mutant]:
    """The mutants the options ask for; an unknown --only id is an error."""
    only = {x for arg in args.only for x in arg.split(",") if x}
    unknown = only - {m.id for m in MUTANTS}
    if unknown:
        raise SystemExit(f"unknown mutant id(s): {', '.join(sorted(unknown))} (see --list)")
    return [m for m in MUTANTS if (not only or m.id in only) and (not args.layer or m.layer in args.layer)]


# ---- the copies -----------------------------------------------------------------------------------------


def repo_files(root: Path) -> list[str]:
    """Tracked files and untracked files that are not ignored (read-only git query)."""
    out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"], capture_output=True, check=True)
    return sorted({f for f in out.stdout.decode().split("\0") if f})


def snapshot(root: Path, dest: Path) -> Path:
    """Copy the repository's files (as they are now) into dest; later mutants all start from this one state."""
    for rel in repo_files(root):
        src = root / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def check_ids(mutants: Iterable[Mutant], base: Path) -> None:
    """Raise StaleMutant (naming every stale one) unless each mutant's edit applies exactly once to base."""
    stale = []
    for m in mutants:
        try:
            mutate_text(m, base)
        except (StaleMutant, OSError) as exc:
            stale.append(f"{m.id}: {exc}")
    if stale:
        raise StaleMutant("stale mutants (update tools/mutants.py):\n  " + "\n  ".join(stale))


def mutate_text(m: Mutant, base: Path) -> str | None:
    """The mutated content of m's file under base (None for the unmutated baseline)."""
    if m.edit is None:
        return None
    return m.edit.apply((base / m.path).read_text(), m.path)


def make_copy(m: Mutant, snap: Path, work: Path) -> Path:
    """A fresh copy of the snapshot with m applied."""
    copy = work / m.id
    shutil.copytree(snap, copy, symlinks=True)
    text = mutate_text(m, copy)
    if text is not None:
        (copy / m.path).write_text(text)
    return copy


def env_for(copy: Path) -> dict[str, str]:
    """The environment of every check: the copy's src first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "1000"  # rich wraps at COLUMNS: keep prove's error line whole
    return env


# ---- running checks -------------------------------------------------------------------------------------


def run(cmd: list[str], copy: Path, deadline: float, cwd: Path | None = None) -> Ran:
    """Run a command in the copy (or cwd) until it ends or the deadline passes (then its process group is ended)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return Ran(None, "", "")
    proc = subprocess.Popen(cmd, cwd=cwd or copy, env=env_for(copy), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    with _LOCK:
        _LIVE.add(proc.pid)
    try:
        out, err = proc.communicate(timeout=remaining)
        return Ran(proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        _end(proc.pid)
        out, err = proc.communicate()
        return Ran(None, out, err)
    finally:
        with _LOCK:
            _LIVE.discard(proc.pid)


def _end(pgid: int) -> None:
    """End one process group this tool started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def assert_isolated(copy: Path) -> None:
    """Fail loudly unless `import p4lb` in the copy's environment loads the copy's package."""
    got = run([sys.executable, "-c", "import p4lb; print(p4lb.__file__)"], copy, time.monotonic() + 60)
    path = Path(got.out.strip() or "?")
    if got.rc != 0 or not path.is_relative_to(copy / "src"):
        raise RuntimeError(f"p4lb is imported from {path}, not from the copy {copy}/src: {got.err.strip()}")


def missing_p4c() -> str | None:
    """Why P4 source mutants cannot be compiled here, or None."""
    return None if shutil.which("p4c-bm2-ss") else "skipped: p4c-bm2-ss not on PATH"


def compile_p4(copy: Path, deadline: float) -> Ran:
    """Rebuild the copy's p4lb.json from its p4lb.p4 (source path p4/p4lb.p4, as the committed JSON names it)."""
    cmd = ["p4c-bm2-ss", "--arch", "v1model", "--p4runtime-files", "p4/build/p4lb.p4info.txtpb", "-o", "p4/build/p4lb.json", "p4/p4lb.p4"]
    return run(cmd, copy, deadline, cwd=copy / "src" / "p4lb")


def last_line(*texts: str) -> str:
    """The last non-empty line of the first text that has one."""
    for text in texts:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if lines:
            return lines[-1]
    return "?"


def prove_reason(r: Ran) -> str:
    """Why prove failed: its first failure line, or the error it ended with."""
    try:
        failures = json.loads(r.out)["failures"]
    except (ValueError, KeyError, TypeError):
        errors = [ln.strip() for ln in r.out.splitlines() if ln.startswith("error:")]
        return errors[-1] if errors else last_line(r.err, r.out) if "Traceback" in r.err else last_line(r.out, r.err)
    if not failures:
        return f"exit {r.rc}"
    more = f" (+{len(failures) - 1})" if len(failures) > 1 else ""
    return failures[0] + more


def pytest_reason(r: Ran) -> str:
    """Why a pytest selection failed: the failing test's name, or pytest's error."""
    for line in r.out.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            node = line.split(" ", 1)[1].split(" - ", 1)[0]
            return node.rsplit("/", 1)[-1].removesuffix(".py").replace(".py::", "::")
    return f"pytest exit {r.rc}: {last_line(r.out, r.err)}"


def test_selections(m: Mutant, copy: Path) -> list[list[str]]:
    """The pytest argument lists for m's layer (the baseline's layer is 'model+z3+...'), without missing files."""
    layers = m.layer.split("+")
    return [[a for a in sel if a != PINNING or (copy / PINNING).exists()] for layer in layers for sel in LAYER_TESTS[layer]]


def check(m: Mutant, copy: Path, deadline: float) -> tuple[str, str]:
    """(status, by) of the checks on a prepared copy: prove first, then the pytest selections."""
    if m.recompile:
        built = compile_p4(copy, deadline)
        if built.timed_out:
            return "timeout", "timeout (p4c)"
        if built.rc != 0:
            return "error", f"p4c failed: {last_line(built.err, built.out)}"
    proved = run([sys.executable, "-m", "p4lb.verify", "prove", "--no-mutants", "--json", "--out", "out/mutate-traces"], copy, deadline)
    if proved.timed_out:
        return "timeout", "timeout (prove)"
    if proved.rc != 0:
        return "killed", "prove: " + prove_reason(proved)
    for sel in test_selections(m, copy):
        tested = run([sys.executable, *PYTEST, *sel], copy, deadline)
        if tested.timed_out:
            return "timeout", "timeout (pytest)"
        if tested.rc != 0:
            return "killed", "test: " + pytest_reason(tested)
    return "survived", "-"


def run_mutant(m: Mutant, snap: Path, work: Path, timeout: float, keep: bool) -> Outcome:
    """Copy, mutate, check, clean up: one mutant's outcome."""
    start = time.monotonic()
    if m.recompile and (why := missing_p4c()):
        return Outcome(m, "skipped", why, 0.0)
    copy = make_copy(m, snap, work)
    try:
        assert_isolated(copy)
        status, by = check(m, copy, start + timeout)
    finally:
        if not keep:
            shutil.rmtree(copy, ignore_errors=True)
    return Outcome(m, status, by, time.monotonic() - start)


# ---- report ---------------------------------------------------------------------------------------------


def print_list(mutants: list[Mutant]) -> None:
    """One line per mutant: id, layer, file, description."""
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    t = Table(title=f"{len(mutants)} mutants", title_justify="left")
    for col in ("id", "layer", "file", "description"):
        t.add_column(col)
    for m in mutants:
        t.add_row(m.id, m.layer, m.path.removeprefix("src/p4lb/"), m.desc)
    Console(width=80).print(t)


def shorten(text: str, limit: int) -> str:
    """text cut to limit characters (with an ellipsis)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_table(outcomes: list[Outcome]) -> None:
    """The results table (80 columns)."""
    from rich.console import Console  # noqa: PLC0415
    from rich.markup import escape  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    t = Table(title="Mutants", title_justify="left")
    for col in ("id", "layer", "description", "killed by", "s"):
        t.add_column(col, justify="right" if col == "s" else "left", ratio={"description": 4, "killed by": 5}.get(col))
    for o in outcomes:
        by = {"survived": "[red]SURVIVED[/]", "error": f"[red]ERROR {escape(o.by)}[/]", "timeout": f"[yellow]UNDECIDED {escape(o.by)}[/]", "skipped": escape(o.by)}.get(o.status, escape(o.by))
        t.add_row(o.mutant.id, o.mutant.layer, escape(o.mutant.desc), shorten(by, 90), f"{o.seconds:.0f}")
    Console(width=80, highlight=False).print(t)


def summary(outcomes: list[Outcome], seconds: float) -> tuple[str, bool]:
    """(the summary lines, whether every mutant that ran was killed: a timeout is undecided, not a kill)."""
    ran = [o for o in outcomes if o.status != "skipped"]
    killed = [o for o in ran if o.status == "killed"]
    lines = [f"killed {len(killed)}/{len(ran)} in {seconds:.0f}s"]
    for status in ("survived", "error"):
        ids = [o.mutant.id for o in ran if o.status == status]
        if ids:
            lines.append(f"{status}: {', '.join(ids)}")
    slow = [o.mutant.id for o in ran if o.status == "timeout"]
    if slow:
        lines.append(f"undecided (timeout, not counted as killed): {', '.join(slow)}; run them alone: tools/mutate.py --only {','.join(slow)} --timeout 600")
    skipped = [o for o in outcomes if o.status == "skipped"]
    if skipped:
        lines.append(f"skipped {len(skipped)} ({skipped[0].by.removeprefix('skipped: ')}): {', '.join(o.mutant.id for o in skipped)}")
    return "\n".join(lines), bool(ran) and len(killed) == len(ran)


# ---- main -----------------------------------------------------------------------------------------------


def baselines(mutants: list[Mutant]) -> list[Mutant]:
    """Unmutated copies that must pass every selected check (plus one recompiled, if P4 source mutants will run)."""
    layers = "+".join(layer for layer in LAYERS if any(m.layer == layer for m in mutants))
    out = [Mutant("base", layers, "", None, "unmutated snapshot")]
    if any(m.recompile for m in mutants) and not missing_p4c():
        out.append(Mutant("base-p4c", P4, "src/p4lb/p4/p4lb.p4", None, "unmutated p4lb.p4, recompiled"))
    return out


def run_baselines(mutants: list[Mutant], snap: Path, work: Path, args: argparse.Namespace) -> list[Outcome]:
    """The baselines that failed (any failure makes kills meaningless)."""
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        done = list(pool.map(lambda b: run_mutant(b, snap, work, 2 * args.timeout, args.keep), baselines(mutants)))
    return [o for o in done if o.status != "survived"]


def run_all(mutants: list[Mutant], snap: Path, work: Path, args: argparse.Namespace) -> list[Outcome]:
    """Every mutant, --jobs at a time, printing one line as each finishes."""
    def one(m: Mutant) -> Outcome:
        o = run_mutant(m, snap, work, args.timeout, args.keep)
        print(f"  {o.mutant.id:5} {o.status:8} {o.seconds:5.0f}s  {o.by}", flush=True)
        return o

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        return list(pool.map(one, mutants))


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 iff every mutant that ran was killed; 2 for stale mutants or a failing baseline."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    mutants = select(args)
    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="p4lb-mutate-"))
    try:
        snap = snapshot(ROOT, work / "snapshot")
        check_ids(mutants, snap)
        if args.list:
            print_list(mutants)
            return 0
        return _run(mutants, snap, work, args, start)
    except StaleMutant as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        with _LOCK:
            for pgid in list(_LIVE):
                _end(pgid)
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _run(mutants: list[Mutant], snap: Path, work: Path, args: argparse.Namespace, start: float) -> int:
    """Baseline, mutants, table, summary; the exit code."""
    print(f"snapshot of {ROOT} in {snap}; {len(mutants)} mutants, {args.jobs} at a time", flush=True)
    if not args.no_baseline:
        failed = run_baselines(mutants, snap, work, args)
        for base in failed:
            print(f"error: {base.mutant.desc} fails its checks ({base.status}: {base.by}); fix that first", file=sys.stderr)
        if failed:
            return 2
        print(f"baseline: unmutated snapshot passes prove and the tests [{time.monotonic() - start:.0f}s]", flush=True)
    outcomes = run_all(mutants, snap, work, args)
    print_table(outcomes)
    text, ok = summary(outcomes, time.monotonic() - start)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
