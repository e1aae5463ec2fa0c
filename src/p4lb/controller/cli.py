"""`p4lb`: deploy, status, scale, fail, heal, drain, undrain, weight, run (health loop), flows, flow, retire, prove.

Exit codes:
  0    done
  1    the prover found a problem (`p4lb prove`)
  2    bad input (arguments, config file, state file), or a command refused
       as the service stands (a retired service's operations): nothing was
       written, not even a lock file
  3    the switch is unreachable, refused a request or missed a deadline
       (switch.rpc_timeout_ms), another controller holds its lock, or the
       switch extra (gRPC, p4runtime) is not installed
  4    internal error: one line naming the log file that holds the traceback
       (--debug prints the traceback instead)
  130  interrupted (Ctrl-C)

--dry-run runs every command against the executable model: no switch is
contacted, `run` probes nothing (each verdict is what the state file says),
and the operator's sets persist in CONFIG.dry-run.state.json beside the real
state file, which a dry run never reads or writes: a dry-run sequence behaves
like a real one.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import ipaddress
import json
import logging
import os
import sys
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from p4lb.controller.controller import BackendStatus, Census, Controller, Mark, load_mark
from p4lb.controller.errors import ConfigFileError, ControllerError, LockError, RefusedError, StateFileError, SwitchError, UsageError
from p4lb.controller.health import Prober, StateProber
from p4lb.controller.lock import SwitchLock
from p4lb.controller.loop import HealthLoop, health_loops, run_all
from p4lb.controller.settings import Config, Settings, load_config, named
from p4lb.controller.switch import ModelSwitch, P4RuntimeSwitch, Switch
from p4lb.model.config import LbConfig
from p4lb.model.crc import ip_str
from p4lb.model.errors import ConfigError
from p4lb.model.flowtable import choose
from p4lb.model.ops import Drain, Fail, Heal, Scale, Undrain, Weight
from p4lb.model.p4lb import FlowEntry, SlotState, find, flow_places, is_open
from p4lb.model.packet import Packet, key_service
from p4lb.model.pool import MAX_WEIGHT
from p4lb.model.spec import key_str

if TYPE_CHECKING:
    from p4lb.controller.metrics import Metrics

log = logging.getLogger(__name__)
N = TypeVar("N", int, float)


class ExitCode(enum.IntEnum):
    """What `p4lb` exits with (see the module docstring)."""

    OK = 0
    PROVER = 1
    INPUT = 2
    SWITCH = 3
    INTERNAL = 4
    INTERRUPTED = 130


EXIT_OK, EXIT_PROVER, EXIT_INPUT, EXIT_SWITCH, EXIT_INTERNAL = ExitCode.OK, ExitCode.PROVER, ExitCode.INPUT, ExitCode.SWITCH, ExitCode.INTERNAL
EPILOG = __doc__.split("\n\n", 1)[1]
OPS: dict[str, type[Fail | Heal | Drain | Undrain]] = {"fail": Fail, "heal": Heal, "drain": Drain, "undrain": Undrain}
ONE_SERVICE = frozenset({"scale", "fail", "heal", "drain", "undrain", "weight", "flow", "retire"})  # commands that act on one service
RETIRE_WAIT_S = 60.0  # `retire`: how long open connections get to end before the service's entries go
MAX_WAIT_S = 86_400
OP_HELP = {
    "fail": "mark a backend failed: it gets no new flows; its open flows stay pinned to it",
    "heal": "mark a failed backend healthy again: it rejoins the group if active and not draining",
    "drain": "stop new flows to a backend; its open flows finish on it",
    "undrain": "let a drained backend take new flows again",
}


class ArgParser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so main() labels it and returns 2."""

    def error(self, message: str) -> NoReturn:
        """Raise instead of printing and exiting."""
        raise UsageError(message, self.format_usage(), self.prog)


def _checked(text: str, convert: Callable[[str], N], not_a: str, ok: Callable[[N], bool], why: Callable[[N], str]) -> N:
    """An argument converted, or ArgumentTypeError: `not_a` if it does not convert, why(value) if not ok(value)."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {not_a}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(why(value))
    return value


def weight_value(text: str) -> int:
    """A weight argument: a whole number in 1..MAX_WEIGHT."""
    return _checked(text, int, f"a weight: give a whole number in 1..{MAX_WEIGHT}", lambda v: 1 <= v <= MAX_WEIGHT, lambda v: f"{v} is out of range: a weight is 1..{MAX_WEIGHT}")


def backend_id(text: str) -> int:
    """A backend id argument: a whole number from 1 (checked against the config later)."""
    return _checked(text, int, "a backend id: give a whole number such as 2", lambda v: v >= 1, lambda v: f"{v} is not a backend id: ids start at 1")


def seconds(text: str) -> float:
    """A duration argument: seconds, 0 or more."""
    return _checked(text, float, "a number of seconds: give e.g. 30 or 0.5", lambda v: 0 <= v <= MAX_WAIT_S, lambda v: f"{v:g} is out of range: give 0..{MAX_WAIT_S} seconds")


def count(text: str) -> int:
    """A non-negative whole number argument."""
    return _checked(text, int, "a whole number", lambda v: v >= 0, lambda v: f"{v} is negative: give 0 or more")


def client_address(text: str) -> Packet:
    """CLIENT_IP:PORT as the packet whose flow slot `flow` shows."""
    addr, _, port = text.rpartition(":")
    try:
        pkt = Packet(int(ipaddress.IPv4Address(addr)), int(port), 0)
    except ValueError:
        pkt = None
    if pkt is None or not 0 < pkt.src_port < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a client connection: give CLIENT_IP:PORT, e.g. 10.0.0.10:40000")
    return pkt


def metrics_address(text: str) -> str:
    """HOST:PORT for the metrics server."""
    from p4lb.controller.metrics import parse_address  # noqa: PLC0415  (prometheus_client only when asked)

    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def parser() -> ArgParser:
    """The command line."""
    p = ArgParser(prog="p4lb", description="Operate a p4lb load balancer on a P4Runtime switch.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", type=Path, default=Path("p4lb.toml"), help="TOML configuration (default p4lb.toml); relative paths in it are taken from its folder")
    p.add_argument("--state", type=Path, default=None, help="where the operator's sets persist between commands (default: beside CONFIG, with .state.json)")
    p.add_argument("--dry-run", action="store_true", help="run against the executable model: no switch, no health probes, a separate .dry-run.state.json")
    p.add_argument("-v", "--verbose", action="store_true", help="log each operation and health transition")
    p.add_argument("--debug", action="store_true", help="log everything and print tracebacks of errors")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND", parser_class=ArgParser, help="what to do (p4lb COMMAND --help describes its arguments)")

    def command(name: str, text: str, add_help: bool = True, usage: str | None = None) -> ArgParser:
        cmd = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".", add_help=add_help, usage=usage)
        if name != "prove":
            every = "required when the config has several" if name in ONE_SERVICE else "default: every service of the config"
            cmd.add_argument("--service", metavar="NAME", default=None, help=f"the service ([[service]] name) to act on ({every}; a config of one service needs none)")
        return cmd

    command("deploy", "push the pipeline, backends and group (reconciles if already deployed)")
    st = command("status", "table of backends: state, group membership, open and dispatched flows")
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")
    st.add_argument("--scan", action="store_true", help="count open flows by reading every flow place (exact at the switch clock, idle flows left out; 16,384 requests at 2^20 places) instead of reading the switch's per-backend counts")
    command("scale", "make backends 1..K active (the others take no new flows)").add_argument("--active", type=count, required=True, metavar="K", help="how many backends are active (0..number of backends)")
    for name, text in OP_HELP.items():
        command(name, text).add_argument("backend", type=backend_id, help="backend id: its position in the config's [[backend]] list, from 1")
    wt = command("weight", f"set a backend's weight (1..{MAX_WEIGHT}): its share of new flows is its weight over the eligible backends' total")
    wt.add_argument("backend", type=backend_id, help="backend id: its position in the config's [[backend]] list, from 1")
    wt.add_argument("weight", type=weight_value, help=f"the new weight, 1..{MAX_WEIGHT} (staged and committed like every change)")
    run = command("run", "health-check loop: probe every backend, fail and heal them automatically")
    run.add_argument("--rounds", type=count, default=0, help="stop after this many rounds (default 0: forever)")
    run.add_argument("--metrics", type=metrics_address, default=None, metavar="HOST:PORT", help="serve Prometheus metrics of every service run at http://HOST:PORT/metrics, labelled service=NAME (port 0: any free one, printed)")
    command("flows", "list the open flows (client, backend) read from every flow slot, as the reads answer").add_argument("--json", action="store_true", help="print one JSON object per line (a flow per line, then the count)")
    fl = command("flow", "show the flow slot of one client connection: state, owner, backend, idle time")
    fl.add_argument("client", type=client_address, help="client address and port, e.g. 10.0.0.10:40000")
    fl.add_argument("--json", action="store_true", help="print JSON instead of a sentence")
    rt = command("retire", "take a service off the switch: refuse its new connections, wait for its open ones, delete its entries (`deploy` brings it back)")
    rt.add_argument("--wait", type=seconds, default=RETIRE_WAIT_S, metavar="S", help=f"seconds to wait for its open connections to end before deleting its entries (default {RETIRE_WAIT_S:g}; 0: at once, cutting them)")
    command("prove", "run the prover: ARGS go to `python -m p4lb.verify prove` (p4lb prove --help lists them)", add_help=False, usage="p4lb prove [ARGS ...]")
    return p


def parse_command_line(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The parsed arguments and, for `prove` only, the arguments passed on to the prover."""
    p = parser()
    args, rest = p.parse_known_args(argv)
    if rest and args.cmd != "prove":
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    return args, rest


def state_file(args: argparse.Namespace) -> Path:
    """The state file this invocation uses: the real one, or in a dry run its own one beside it."""
    real = args.state or args.config.with_suffix(".state.json")
    return dry_run_state(real) if args.dry_run else real


def dry_run_state(real: Path) -> Path:
    """The dry run's state file beside the real one: p4lb.state.json -> p4lb.dry-run.state.json."""
    stem = real.name.removesuffix(".state.json") if real.name.endswith(".state.json") else real.name
    return real.with_name(f"{stem}.dry-run.state.json")


def make_switch(settings: Settings, dry_run: bool, one_shot: bool = True) -> Switch:
    """The switch to talk to. A one-shot command takes the election id above the health loop's, so it can write
    while `p4lb run` holds its session (the state-file lock keeps their operations apart)."""
    if dry_run:
        return ModelSwitch(settings.lb)
    from p4lb.controller.p4rt import Tls  # noqa: PLC0415
    from p4lb.controller.switch import P4RuntimeSwitch  # noqa: PLC0415  (imports p4runtime-shell lazily)

    t = settings.switch
    election = t.election_id
    if one_shot:
        above = (election[0] << 64 | election[1]) + 1
        election = (above >> 64, above & ((1 << 64) - 1))
    tls = Tls(t.root_cert, t.client_cert, t.client_key) if t.tls else None
    switch = P4RuntimeSwitch(t.grpc, t.device_id, election, t.p4info, t.bmv2_json, settings.lb, timeout_s=t.rpc_timeout_ms / 1000, tls=tls)
    switch.preflight()
    return switch


def make_lock(settings: Settings, state: Path, dry_run: bool) -> SwitchLock:
    """The switch's lock (address and device id); a dry run locks its own state file instead."""
    key = f"dry-run:{state.resolve()}" if dry_run else settings.switch.key
    return SwitchLock(key, settings.switch.lock_timeout_ms / 1000)


def simulate_deployed(ctl: Controller) -> None:
    """Dry run: bring the fresh model switch to what a switch deployed with the state file's sets holds."""
    if ctl.retired():
        return  # a retired service is off the switch
    seed = Controller(ctl.settings, ctl.switch, grace_s=0)
    seed.pool = ctl.pool
    seed.deploy()


def check_args(args: argparse.Namespace, settings: Settings) -> None:
    """Refuse arguments the config rules out, before anything is written."""
    n = settings.lb.n
    if (args.cmd in OPS or args.cmd == "weight") and args.backend > n:
        raise UsageError(f"backend {args.backend} does not exist: use a backend id in 1..{n} (the config has {n} backends)")
    if args.cmd == "scale" and args.active > n:
        raise UsageError(f"--active {args.active} is out of range: use 0..{n} (the config has {n} backends)")


def show_status(ctls: Controller | Sequence[Controller], as_json: bool, console: Console, scan: bool = False, shared: bool = True) -> None:
    """Print the status table (or JSON) of one service or several (a table each; with `scan`, the open flows
    counted from open_flows_of: with `shared`, one scan of the flow table for all)."""
    ctls = as_list(ctls)
    scanned: dict[int, Counter[int]] = {c.settings.lb.service: Counter() for c in ctls} if scan else {}
    if scan:
        for c, _, e in open_flows_of(ctls, shared):
            scanned[c.settings.lb.service][e.backend] += 1
    reports = [(c.settings, *c.report(scan=scan, scanned=scanned.get(c.settings.lb.service))) for c in ctls]
    marks = {c.settings.name: c.mark.value for c in ctls if c.retired() and c.mark is not None}
    if as_json:
        out: dict[str, object] = {"backends": [r.to_json() | {"service": s.name} for s, rows, _ in reports for r in rows]}
        if len(reports) == 1:
            out["lb_drops"] = reports[0][2]
        out["services"] = [{"name": s.name, "id": s.lb.service, "vip": f"{ip_str(s.lb.vip)}:{s.lb.vip_port}", "retirement": marks.get(s.name), "lb_drops": drops} for s, _, drops in reports]
        print(json.dumps(out | {"open_flows_from": "scan" if scan else "backend_open"}, indent=2))
        return
    for s, rows, _ in reports:  # several services: a table each, titled by its name (a service column left 80 columns too narrow)
        console.print(status_table(rows, scan, s.name if len(reports) > 1 else ""))
    for s, _, drops in reports:
        who = f"{s.name}: " if len(reports) > 1 else ""
        if s.name in marks:
            where = "off the switch" if marks[s.name] == Mark.RETIRED.value else "drained, its entries not yet deleted (run p4lb retire again to finish)"
            console.print(f"{who}{marks[s.name]} (p4lb retire): {where}; `p4lb deploy --service {s.name}` brings it back", soft_wrap=True)
        console.print(f"{who}refused SYNs: {drops['flow_table_full']}   black holes: {drops['no_backend_entry']} (P3 proves none)", soft_wrap=len(reports) > 1)
        console.print(f"{who}lb_drops: " + ", ".join(f"{k}={v}" for k, v in drops.items()), soft_wrap=len(reports) > 1)


OPEN_CAPTION = "open: the switch's count of flows on the backend, idle ones included until a new SYN reclaims their place (--scan: flows open now)"
SCAN_CAPTION = "open: flows open at the switch clock, from a read of every flow place (--scan)"


def status_table(rows: Sequence[BackendStatus], scan: bool = False, service: str = "") -> Table:
    """One line per backend of one service (its name in the title, if given); fits 80 columns, numbers never cut."""
    t = Table(title=f"p4lb backends: {service}" if service else "p4lb backends", caption=SCAN_CAPTION if scan else OPEN_CAPTION, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False)
    t.add_column("backend", justify="right", no_wrap=True)
    t.add_column("address", no_wrap=True)
    t.add_column("port", justify="right", no_wrap=True)
    t.add_column("state", min_width=len("draining,"))
    t.add_column("group", no_wrap=True)
    t.add_column("weight", justify="right", no_wrap=True)
    t.add_column("open", justify="right", no_wrap=True)
    t.add_column("dispatched", justify="right", no_wrap=True)
    for r in rows:
        t.add_row(str(r.backend), r.address, str(r.switch_port), backend_state(r), "yes" if r.in_group else "no", str(r.weight), str(r.open_flows), str(r.flows_dispatched))
    return t


def backend_state(row: BackendStatus) -> str:
    """One word (or more) for the operator's sets: serving, inactive (scaled out), draining, failed."""
    return ", ".join(s.value for s in row.states)


def _entry(regs: dict[str, int]) -> FlowEntry:
    """A place's flow registers as the CPU port reads them."""
    return FlowEntry(SlotState(regs["flow_state"]), regs["flow_key"], regs["flow_backend"], regs["flow_last_seen"])


def flow_report(ctl: Controller, pkt: Packet) -> dict[str, object]:
    """Where a client's connection sits among its candidate places (the model's find), else the place its next SYN
    takes (the model's choose) or that it would be refused: state, owner, backend, idle time."""
    lb = ctl.settings.lb
    pkt = replace(pkt, service=lb.service)  # the connection to this service's VIP: its key starts with the service
    places = flow_places(lb, pkt)
    regs = [ctl.switch.read_slot(p) for p in places]
    entries = [_entry(r) for r in regs]
    now, timeout = regs[0]["now"], regs[0]["idle_timeout"]
    c = find(entries, pkt.key)
    found = c < len(places)
    if not found:
        c = choose(lb.shape, [is_open(e, now, timeout) for e in entries])
    report: dict[str, object] = {"client": f"{ip_str(pkt.src_ip)}:{pkt.src_port}", "candidates": len(places), "found": found, "refused": c == len(places), "idle_timeout_s": timeout / 1e6}
    if c == len(places):
        return report | {"slot": None, "state": None, "held_by": None, "backend": None, "idle_s": None, "expired": False}
    e = entries[c]
    held = e.state is not SlotState.FREE
    idle_s = (now - e.last_seen) / 1e6
    return report | {
        "slot": places[c],
        "state": e.state.name.lower(),
        "held_by": ("this connection" if e.key == pkt.key else key_str(e.key, lb.service)) if held else None,
        "backend": e.backend if held else None,
        "idle_s": idle_s if held else None,
        "expired": held and now - e.last_seen > timeout,
    }


def show_flow(ctl: Controller, pkt: Packet, as_json: bool, console: Console) -> None:
    """Print where one client connection sits, or where its next SYN would go."""
    r = flow_report(ctl, pkt)
    if as_json:
        print(json.dumps(r, indent=2))
        return
    if r["refused"]:
        console.print(f"no place holds this connection, and its {r['candidates']} candidate places all hold other open flows: its SYN would be refused (flow_table_full)")
        return
    where = f"slot {r['slot']}:" if r["found"] else f"no place holds this connection; its next SYN takes slot {r['slot']}, which is"
    if r["held_by"] is None:
        console.print(f"{where} FREE")
        return
    expired = " (idle past the timeout: a new flow may take it)" if r["expired"] else ""
    console.print(f"{where} {str(r['state']).upper()}, held by {r['held_by']}, backend {r['backend']}, idle {r['idle_s']:.1f} s (timeout {r['idle_timeout_s']:g} s){expired}")


FLOW_LINE = "{slot:>8}  {client:<21}  {backend:>7}  {address:<15}  {port:>4}"
SERVICE_LINE = "{service:<12}  " + FLOW_LINE


def flow_rows(ctl: Controller) -> Iterator[dict[str, object]]:
    """Every open flow of the configured service as the scan's answers arrive (the switch skips other services'):
    slot, client address and port (the key's low 48 bits), backend, its address and port, the service's name."""
    return flow_rows_of([ctl], shared=False)


def open_flows_of(ctls: Sequence[Controller], shared: bool = True) -> Iterator[tuple[Controller, int, FlowEntry]]:
    """Every open flow of these services as (its service's controller, slot, entry), as the scan's answers arrive:
    with `shared` (their switches are one, as P4Runtime sessions of one switch are) from one scan of the flow
    table, each flow given to the service its key's id names; else each service's switch scanned for its own (a
    dry run's models). One service: its own scan (the switch skips other services' flows)."""
    if not shared or len(ctls) == 1:
        for ctl in ctls:
            for slot, e in ctl.switch.iter_open_flows():
                yield ctl, slot, e
        return
    by_id = {c.settings.lb.service: c for c in ctls}
    for slot, e in ctls[0].switch.iter_open_flows(frozenset(by_id)):
        yield by_id[key_service(e.key)], slot, e


def flow_rows_of(ctls: list[Controller], shared: bool = True) -> Iterator[dict[str, object]]:
    """Every open flow of these services (open_flows_of) as the listing's rows: slot, client address and port,
    backend, its address and port, the service's name."""
    backends = {c: {b.id: b for b in c.settings.lb.backends} for c in ctls}
    for ctl, slot, e in open_flows_of(ctls, shared):
        b = backends[ctl].get(e.backend)
        yield {"slot": slot, "client": key_str(e.key, ctl.settings.lb.service), "backend": e.backend, "address": ip_str(b.ip) if b else None, "switch_port": b.port if b else None, "service": ctl.settings.name}


def show_flows(ctls: Controller | Sequence[Controller], as_json: bool, console: Console, shared: bool = True) -> None:
    """Print every open flow as the switch's answers come in (a block of flow places at a time, each answer within
    the switch's deadline), then the count: nothing is collected, so a table of 2^20 places takes constant memory.
    Several services: a service column, one scan for all (`shared`). --json: one JSON object per line, the last one
    {"open_flows": COUNT}."""
    ctls = as_list(ctls)
    line = SERVICE_LINE if len(ctls) > 1 else FLOW_LINE
    n = 0
    if not as_json:
        console.print(line.format(service="service", slot="slot", client="client", backend="backend", address="address", port="port"), soft_wrap=True)
    for row in flow_rows_of(ctls, shared):
        n += 1
        if as_json:
            print(json.dumps(row), flush=True)
        else:
            console.print(line.format(service=row["service"], slot=row["slot"], client=row["client"], backend=row["backend"], address=row["address"] or "?", port=row["switch_port"] or "?"), soft_wrap=True)
    if as_json:
        print(json.dumps({"open_flows": n}), flush=True)
    else:
        console.print(f"p4lb open flows: {n}", soft_wrap=True)


def health_loop(ctl: Controller, rounds: int, prober: Prober | None = None, metrics: Metrics | None = None) -> int:
    """Probe every interval and make the switch match the verdicts (see p4lb.controller.loop); the rounds run."""
    return HealthLoop(ctl, prober, metrics).run(rounds)


def run_loop(ctls: Controller | Sequence[Controller], args: argparse.Namespace, console: Console) -> None:
    """`p4lb run`: one health loop per service, in one process holding the switch's run lock throughout; metrics
    of every service served if asked (one endpoint, each service's series labelled with its name)."""
    from p4lb.controller.metrics import Metrics  # noqa: PLC0415

    ctls = as_list(ctls)
    lock = ctls[0].lock or make_lock(ctls[0].settings, state_file(args), args.dry_run)
    with lock.hold("run", timeout_s=0):
        metrics = Metrics([c.settings.name for c in ctls]) if args.metrics else None
        if metrics is not None:
            for c in ctls:
                metrics.update_from(c)  # the first scrape already sees the switch
        server = metrics.serve(args.metrics) if metrics is not None else None
        if server is not None:
            console.print(f"metrics on {server.url}", soft_wrap=True)
            sys.stdout.flush()
        try:
            loops = health_loops(ctls, lambda c: HealthLoop(c, dry_prober(c) if args.dry_run else None, metrics))
            if len(loops) == 1:
                loops[0].run(args.rounds)
            else:
                run_all(loops, args.rounds)
        finally:
            if server is not None:
                server.stop()


def dry_prober(ctl: Controller) -> StateProber:
    """A dry run's prober: every verdict is what the state file says."""
    return StateProber(lambda: ctl.current_pool().healthy)


def as_list(ctls: Controller | Sequence[Controller]) -> list[Controller]:
    """One controller or several, as a list."""
    return [ctls] if isinstance(ctls, Controller) else list(ctls)


def deploy_all(ctls: list[Controller], console: Console) -> None:
    """`p4lb deploy`: every chosen service, under one hold of the switch's lock; with several, every service's
    checks (vip entries, shared settings, stale flows: one census of the flow table) pass before the first write,
    and the shared settings checked there are not checked again by each service's deploy."""
    if len(ctls) == 1:
        console.print(f"deployed: {len(ctls[0].deploy())} writes")
        return
    census = Census()
    lock = ctls[0].lock
    with lock.hold() if lock is not None else contextlib.nullcontext():
        checked = [ctl.check_deploy(census) for ctl in ctls]
        for ctl, shared_checked in zip(ctls, checked, strict=True):
            console.print(f"deployed {ctl.settings.name}: {len(ctl.deploy(census, shared_checked))} writes", soft_wrap=True)


def skip_retired(ctls: list[Controller], named_one: str | None, console: Console) -> list[Controller]:
    """`deploy` of every service of a config of several: the retired ones stay off (named with --service, or in a
    config of one service, a retired service comes back)."""
    if named_one is not None or len(ctls) == 1:
        return ctls
    for c in ctls:
        if c.retired():
            console.print(f"skipped {c.settings.name}: retired (`p4lb deploy --service {c.settings.name}` brings it back)", soft_wrap=True)
    return [c for c in ctls if c.mark is None]


def retire_others(config: Config, chosen: Sequence[Settings], state: Path | None) -> list[LbConfig]:
    """The config's services other than the retiring one and not retired: their return path stays."""
    names = {s.name for s in chosen}
    return [s.lb for s in config.services if s.name not in names and not (state is not None and load_mark(state, s) is Mark.RETIRED)]


def retire(ctl: Controller, wait_s: float, others: Sequence[LbConfig], console: Console) -> None:
    """`p4lb retire`: the service off the switch, and what is left of it."""
    name, r = ctl.settings.name, ctl.retire(wait_s, others)
    cut = f"{r.open_left} open connection(s) cut" if r.open_left else "no open connection left"
    console.print(f"retired {name}: new connections refused ({len(r.drain.writes)} writes), waited {r.waited_s:.1f} s, {cut}; {r.deleted} table entries deleted", soft_wrap=True)
    console.print(f"flow places keyed by service id {ctl.settings.lb.service} stay until new flows reclaim them; `p4lb deploy --service {name}` brings the service back, and a `p4lb run` loop leaves it off (remove it from the config to stop probing its backends)", soft_wrap=True)


def dispatch(args: argparse.Namespace, ctls: list[Controller], console: Console, others: Sequence[LbConfig] = ()) -> int:
    """Run one subcommand on the chosen services (one for a command that acts on one service); `others`: the
    config's other services (their return path stays when one retires)."""
    ctl = ctls[0]
    if args.cmd == "deploy":
        deploy_all(skip_retired(ctls, args.service, console), console)
    elif args.cmd == "status":
        show_status(ctls, args.json, console, args.scan, shared=not args.dry_run)
    elif args.cmd == "scale":
        console.print(f"{ctl.apply(Scale(args.active)).op}")
    elif args.cmd in OPS:
        applied = ctl.apply(OPS[args.cmd](args.backend))
        console.print(f"{applied.op}: {len(applied.writes)} writes; eligible now {sorted(applied.after.eligible)}")
    elif args.cmd == "weight":
        applied = ctl.apply(Weight(args.backend, args.weight))
        console.print(f"{applied.op}: {len(applied.writes)} writes; group now lists {args.backend} {args.weight} time(s) while eligible")
    elif args.cmd == "run":
        run_loop(ctls, args, console)
    elif args.cmd == "flows":
        show_flows(ctls, args.json, console, shared=not args.dry_run)
    elif args.cmd == "flow":
        show_flow(ctl, args.client, args.json, console)
    elif args.cmd == "retire":
        retire(ctl, args.wait, others, console)
    return ExitCode.OK


def prove(rest: list[str]) -> int:
    """`python -m p4lb.verify prove REST`: its exit code (0 proven, 1 a problem, 2 bad input)."""
    from p4lb.verify.__main__ import main as prove_main  # noqa: PLC0415  (z3 only when proving)

    try:
        return int(prove_main(["prove", *rest]))
    except SystemExit as exc:  # the prover's argparse: --help (0) or bad arguments (2)
        return exc.code if isinstance(exc.code, int) else ExitCode.INPUT


def chosen_services(args: argparse.Namespace, config: Config) -> tuple[Settings, ...]:
    """The services this command acts on: --service NAME, else every one (a command that acts on one service
    needs --service when the config has several)."""
    names = ", ".join(config.names)
    if args.service is not None:
        one = config.service(args.service)
        if one is None:
            raise UsageError(f"--service {args.service}: the config has no such service (its services: {names})")
        return (one,)
    if len(config.services) > 1 and args.cmd in ONE_SERVICE:
        raise UsageError(f"the config has {len(config.services)} services: give `{args.cmd}` --service NAME (one of: {names})")
    return config.services


def make_switches(config: Config, services: tuple[Settings, ...], dry_run: bool, one_shot: bool) -> list[Switch]:
    """One switch per service: in a dry run each its own model; else one P4Runtime session the services share,
    every service's config checked against the P4Info (and the whole config's services against its capacity)
    before anything is written."""
    if dry_run:
        return [ModelSwitch(s.lb) for s in services]
    with named(services[0]):
        first = make_switch(services[0], dry_run, one_shot)
    switches = [first]
    try:
        for s in services[1:]:
            with named(s):
                sibling = first.sibling(s.lb) if isinstance(first, P4RuntimeSwitch) else make_switch(s, dry_run, one_shot)
                if isinstance(sibling, P4RuntimeSwitch):
                    sibling.preflight()
            switches.append(sibling)
        if config.multi and isinstance(first, P4RuntimeSwitch) and first.files[0].is_file():
            first.check_capacity([s.lb for s in config.services])
    except BaseException:
        first.close()
        raise
    return switches


def run_command(args: argparse.Namespace, rest: list[str], console: Console) -> int:
    """Load and check the input, then run the command against the switch (or the model in a dry run)."""
    if args.cmd == "prove":
        return prove(rest)
    config = load_config(args.config)
    services = chosen_services(args, config)
    for s in services:
        check_args(args, s)
    switches = make_switches(config, services, args.dry_run, args.cmd != "run")
    try:
        state = state_file(args)
        lock = make_lock(services[0], state, args.dry_run)  # one switch: one lock for every service
        ctls = [Controller(s, sw, grace_s=0 if args.dry_run else None, state_file=state, lock=lock) for s, sw in zip(services, switches, strict=True)]
        if args.dry_run and args.cmd != "deploy":
            for ctl in ctls:
                simulate_deployed(ctl)
        return dispatch(args, ctls, console, retire_others(config, services, state) if args.cmd == "retire" else ())
    finally:
        for sw in switches:
            sw.close()


def say(console: Console, text: str) -> None:
    """Print one message as plain text: no markup ("[[backend]]" stays), never wrapped."""
    console.print(Text(" ".join(text.split("\n")), style="red"), soft_wrap=True)


def save_traceback(exc: BaseException) -> Path | None:
    """Write the traceback to a new log file in the temp folder; its path, or None if it could not be written."""
    try:
        fd, name = tempfile.mkstemp(prefix="p4lb-error-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write(f"p4lb {' '.join(sys.argv[1:])}\n")
            f.write("".join(traceback.format_exception(exc)))
    except OSError:
        return None
    return Path(name)


def report(exc: Exception, console: Console, debug: bool) -> int:
    """Print an error as one line and return its exit code; internal errors leave their traceback in a log file."""
    if debug:
        traceback.print_exception(exc)
    if isinstance(exc, UsageError | ConfigError):
        say(console, f"usage error: {exc}")
        return ExitCode.INPUT
    if isinstance(exc, ConfigFileError):
        say(console, f"config error: {exc}")
        return ExitCode.INPUT
    if isinstance(exc, RefusedError):
        say(console, f"refused: {exc}")
        return ExitCode.INPUT
    if isinstance(exc, StateFileError):
        say(console, f"state file error: {exc}")
        return ExitCode.INPUT
    if isinstance(exc, SwitchError):
        say(console, f"switch error: {exc}")
        return ExitCode.SWITCH
    if isinstance(exc, LockError):
        say(console, f"lock error: {exc}")
        return ExitCode.SWITCH
    where = "" if debug else f" (traceback in {save_traceback(exc) or 'no log file: the temp folder is not writable'}; --debug prints it)"
    label = "error" if isinstance(exc, ControllerError) else f"internal error: {type(exc).__name__}"
    say(console, f"{label}: {exc}{where}")
    return ExitCode.INTERNAL


def silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null, so the flush at exit raises nothing."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `p4lb` console script."""
    console = Console(markup=False, highlight=False)
    try:
        args, rest = parse_command_line(argv)
    except UsageError as exc:
        console.print(exc.usage, end="", soft_wrap=True)
        say(console, f"usage error: {exc} (see {exc.prog} --help)")
        return ExitCode.INPUT
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else ExitCode.OK
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s")
    try:
        return run_command(args, rest, console)
    except KeyboardInterrupt:
        say(console, "interrupted")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # the reader (`| head`) has all it wanted
        silence_stdout()
        return ExitCode.OK
    except Exception as exc:
        return report(exc, console, args.debug)


if __name__ == "__main__":
    sys.exit(main())
