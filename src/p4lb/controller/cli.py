"""`p4lb`: deploy, status, scale, fail, heal, drain, undrain, run (health loop), flows, flow, prove.

Exit codes: 0 done; 1 the prover found a problem; 2 bad input (config or arguments, nothing written);
3 switch unreachable or refused a request.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from p4lb.controller.controller import Controller
from p4lb.controller.errors import ConfigFileError, ControllerError, SwitchError
from p4lb.controller.health import HealthMonitor
from p4lb.controller.settings import Settings, load
from p4lb.controller.switch import ModelSwitch, P4RuntimeSwitch, Switch
from p4lb.model.crc import ip, ip_str
from p4lb.model.errors import ConfigError
from p4lb.model.ops import Drain, Fail, Heal, Scale, Undrain
from p4lb.model.p4lb import SlotState, flow_slot
from p4lb.model.packet import Packet

log = logging.getLogger("p4lb")
EXIT_OK, EXIT_PROVER, EXIT_INPUT, EXIT_SWITCH = 0, 1, 2, 3


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="p4lb", description="Operate a p4lb load balancer on a P4Runtime switch.")
    p.add_argument("-c", "--config", type=Path, default=Path("p4lb.toml"), help="TOML configuration (default p4lb.toml)")
    p.add_argument("--state", type=Path, default=None, help="where the operator's sets persist between commands (default: CONFIG with .state.json)")
    p.add_argument("--dry-run", action="store_true", help="run against the executable model instead of a switch")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("deploy", help="push the pipeline, backends and group (reconciles if already deployed)")
    st = sub.add_parser("status", help="table of backends")
    st.add_argument("--json", action="store_true")
    sc = sub.add_parser("scale", help="make backends 1..K active")
    sc.add_argument("--active", type=int, required=True)
    for name in ("fail", "heal", "drain", "undrain"):
        sub.add_parser(name, help=f"{name} one backend").add_argument("backend", type=int)
    run = sub.add_parser("run", help="health-check loop: fail/heal backends automatically")
    run.add_argument("--rounds", type=int, default=0, help="stop after this many rounds (0: forever)")
    fs = sub.add_parser("flows", help="list the open flows (client, backend) read from every flow slot")
    fs.add_argument("--json", action="store_true")
    fl = sub.add_parser("flow", help="show the flow slot of one client connection (CLIENT_IP:PORT)")
    fl.add_argument("client", help="client address and port, e.g. 10.0.0.10:40000")
    sub.add_parser("prove", help="run the prover (python -m p4lb.verify)")
    return p


def make_switch(settings: Settings, dry_run: bool, one_shot: bool = True) -> Switch:
    """The switch to talk to. A one-shot command takes the election id above the health loop's, so it can write
    while `p4lb run` holds its session (the state-file lock keeps their operations apart)."""
    if dry_run:
        return ModelSwitch(settings.lb)
    t = settings.switch
    election = (t.election_id[0], t.election_id[1] + 1) if one_shot else t.election_id
    return P4RuntimeSwitch(t.grpc, t.device_id, election, t.p4info, t.bmv2_json, settings.lb)


def show_status(ctl: Controller, as_json: bool, console: Console) -> None:
    """Print the status table."""
    rows = ctl.status()
    drops = ctl.drops()
    if as_json:
        print(json.dumps({"backends": rows, "lb_drops": drops}, indent=2))
        return
    t = Table(title="p4lb backends")
    for col in ("backend", "address", "state", "in group", "open flows", "dispatched"):
        t.add_column(col, justify="right" if col in ("open flows", "dispatched") else "left")
    for r in rows:
        t.add_row(str(r["backend"]), r["address"].split(" ", 1)[-1], backend_state(r), "yes" if r["in_group"] else "no", str(r["open_flows"]), str(r["flows_dispatched"]))
    console.print(t)
    console.print(f"refused SYNs: {drops['flow_table_full']}   black holes: {drops['no_backend_entry']} (P3 proves none)")
    console.print("lb_drops: " + ", ".join(f"{k}={v}" for k, v in drops.items()))


def backend_state(row: dict) -> str:
    """One word (or two) for the operator's sets: serving, inactive (scaled out), draining, failed."""
    words = [w for w, on in (("failed", not row["healthy"]), ("draining", row["draining"]), ("inactive", not row["active"])) if on]
    return ", ".join(words) or "serving"


def show_flow(ctl: Controller, client: str, console: Console) -> None:
    """Print the slot a client's connection hashes to: state, owner, backend, idle time."""
    addr, _, port = client.rpartition(":")
    try:
        pkt = Packet(ip(addr), int(port), 0)
        if not 0 < pkt.src_port < 65536:
            raise ValueError
    except ValueError:
        raise ConfigError("client", client, "give CLIENT_IP:PORT, e.g. 10.0.0.10:40000") from None
    slot = flow_slot(ctl.settings.lb, pkt)
    regs = ctl.switch.read_slot(slot)
    owner = regs["flow_key"]
    state = SlotState(regs["flow_state"]).name
    mine = "this connection" if owner == pkt.key else f"{ip_str(owner >> 16)}:{owner & 0xFFFF}"
    idle_s = (regs["now"] - regs["flow_last_seen"]) / 1e6
    console.print(f"slot {slot}: {state}, held by {mine}, backend {regs['flow_backend']}, idle {idle_s:.1f} s (timeout {regs['idle_timeout'] / 1e6:g} s)")


def show_flows(ctl: Controller, as_json: bool, console: Console) -> None:
    """Print every open flow: slot, client address and port, backend."""
    addresses = {b.id: str(b) for b in ctl.settings.lb.backends}
    rows = [{"slot": slot, "client": f"{ip_str(e.key >> 16)}:{e.key & 0xFFFF}", "backend": e.backend, "address": addresses.get(e.backend, "?")}
            for slot, e in sorted(ctl.switch.open_flows().items())]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title=f"p4lb open flows: {len(rows)}")
    for col in ("slot", "client", "backend", "address"):
        t.add_column(col)
    for r in rows:
        t.add_row(*[str(v) for v in r.values()])
    console.print(t)


def health_loop(ctl: Controller, rounds: int) -> None:
    """Probe every interval; where the checker's verdict and the operator's healthy set differ, fail or heal.

    Comparing verdicts with the (re-read) healthy set each round, rather than acting on transitions only, makes
    the loop converge after a restart, after a manual fail/heal, and after a write the switch refused.
    """
    s = ctl.settings
    pool = ctl.current_pool()
    monitor = HealthMonitor(s.health_addresses, s.health, initial={b: b in pool.healthy for b in range(1, s.lb.n + 1)})
    try:
        ctl.switch.read()  # open the P4Runtime session now, not at the first failover (it takes ~0.2 s)
    except SwitchError as exc:
        log.error("switch not reachable yet, will retry at the first transition: %s", exc)
    n = 0
    try:
        while rounds == 0 or n < rounds:
            started = time.monotonic()
            monitor.round()
            healthy = ctl.current_pool().healthy
            for backend, ok in monitor.verdicts().items():
                if ok == (backend in healthy):
                    continue
                try:
                    applied = ctl.apply(Heal(backend) if ok else Fail(backend))
                except SwitchError as exc:
                    log.error("backend %d: %s failed, retrying next round: %s", backend, "heal" if ok else "fail", exc)
                    continue
                log.warning("%s: %s (%d writes)", applied.op, monitor.reasons[backend], len(applied.writes))
            n += 1
            time.sleep(max(0.0, monitor.next_delay() - (time.monotonic() - started)))
    finally:
        monitor.close()


def dispatch(args: argparse.Namespace, ctl: Controller, console: Console) -> int:
    """Run one subcommand."""
    ops = {"fail": Fail, "heal": Heal, "drain": Drain, "undrain": Undrain}
    if args.cmd == "deploy":
        writes = ctl.deploy()
        console.print(f"deployed: {len(writes)} writes")
    elif args.cmd == "status":
        show_status(ctl, args.json, console)
    elif args.cmd == "scale":
        console.print(f"{ctl.apply(Scale(args.active)).op}")
    elif args.cmd in ops:
        applied = ctl.apply(ops[args.cmd](args.backend))
        console.print(f"{applied.op}: {len(applied.writes)} writes; eligible now {sorted(applied.after.eligible)}")
    elif args.cmd == "run":
        health_loop(ctl, args.rounds)
    elif args.cmd == "flows":
        show_flows(ctl, args.json, console)
    elif args.cmd == "flow":
        show_flow(ctl, args.client, console)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `p4lb` console script."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    console = Console()
    if args.cmd == "prove":
        from p4lb.verify.__main__ import main as prove_main  # noqa: PLC0415

        return prove_main(["prove"])
    try:
        settings = load(args.config)
        state = args.state or args.config.with_suffix(".state.json")
        switch = make_switch(settings, args.dry_run, one_shot=args.cmd != "run")
        ctl = Controller(settings, switch, state_file=None if args.dry_run else state)
        try:
            if args.dry_run:
                ctl.deploy()
            return dispatch(args, ctl, console)
        finally:
            switch.close()
    except (ConfigFileError, ConfigError) as exc:
        console.print(f"[red]config error: {exc}[/]")
        return EXIT_INPUT
    except SwitchError as exc:
        console.print(f"[red]switch error: {exc}[/]")
        return EXIT_SWITCH
    except ControllerError as exc:
        console.print(f"[red]error: {exc}[/]")
        return EXIT_SWITCH


if __name__ == "__main__":
    sys.exit(main())
