"""`python -m p4lb.lab.replay FILE`: a JSON-vs-model counterexample on BMv2, beside the model and the JSON.

`python -m p4lb.verify.bmv2` writes the file when a compiled program differs from the model (out/bmv2-cex-*.json).
This drives the lab's switch, running that JSON (or --json's), into the counterexample's state, sends its packet,
reads back what happened, and prints field | model says | JSON (Z3) says | BMv2 did | which of the first two BMv2
agrees with (p4lb.verify.bmv2.replay). Exit 0 if BMv2 did what the JSON's reading says on every field, 1 if not,
2 on an error (one line). --no-switch: no BMv2, the model and the JSON on the file's own state (exit 0 if they
still differ there).

BMv2's P4Runtime server (PI) answers RegisterEntry writes and reads with UNIMPLEMENTED ("Register writes are not
supported yet"), and simple_switch_grpc has no thrift CLI here, so registers are reached the way the controller
and the data plane reach them:
* p4lb: rr_next and idle_timeout through the CPU port (CPU_WRITE_RR_NEXT, CPU_WRITE_TIMEOUT); a flow slot by
  packets: a SYN of the slot's key dispatched to its backend (a one-member group for the time of the SYN), a
  FIN after it for CLOSING; an idle slot by a short idle_timeout and a wait (BMv2's clock cannot be set). The
  slot must be the candidate place the model's step gives that SYN in an empty table (its key's first).
* seed: flowlet_select, myselect and mymax by a sequence of set_max / set_status writes and SYN / non-SYN
  packets found by a breadth-first search on the executable seed model.
Whatever was reached is read back (CPU port) and is the state both predictions are made on; the packet's time
is the flow_last_seen it wrote, else the switch clock read just before it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from p4lb.controller.errors import ControllerError
from p4lb.controller.p4rt import Key, P4rt
from p4lb.controller.switch import CPU_WRITE_RR_NEXT, CPU_WRITE_TIMEOUT, P4RuntimeSwitch
from p4lb.lab.driver import step_place, tcp_frame
from p4lb.lab.lab import Lab, Seen
from p4lb.lab.toolchain import missing_switch
from p4lb.model.config import CPU_PORT, LbConfig, default_config
from p4lb.model.p4lb import P4LB, P4lbState, SlotState, flow_places, p4lb_packet
from p4lb.model.packet import ACK, FIN, SYN, Packet, key_packet, key_service
from p4lb.model.seed import SEED_INDEX_BITS
from p4lb.p4 import entries
from p4lb.verify.bmv2.cex import CexError, CexFile, Effect, Scenario, TableWrite, read_cex, signed_changes
from p4lb.verify.bmv2.reach import START, SeedStep, other_cell, seed_plan
from p4lb.verify.bmv2.replay import ReplayReport, compare, dry_replay, json_notes, print_report
from p4lb.verify.errors import VerifyError

log = logging.getLogger(__name__)

DEAD_TIMEOUT_US = 100_000  # idle_timeout while replaying an idle slot: waited past, not 60 s
OPEN_IDS = 255  # backend_open is read for every 8-bit backend id: a counterexample may name any
GUARD_US = 50_000  # a live slot stays this far inside its timeout, an idle one this far past it
REPLAY_SERVICE = 0  # the service a p4lb counterexample is replayed as: its lb_drops, backend_flows and backend_open cells are the reason's and the backend's own
CONTROLLED = ("vip", "rr_group", "rr_member")  # p4lb tables the counterexample sets (the rest are static)
REPLANS = 3  # seed: plan, run, read back, plan again from there (at most this many rounds)


class Bmv2ReplayError(RuntimeError):
    """The switch could not be driven as the replay needs."""


@dataclass(frozen=True)
class Replayed:
    """A replay: the state BMv2 held before the packet (read back, at the packet's time), what it did, and how."""

    reached: Scenario
    effect: Effect
    notes: tuple[str, ...]
    frames: tuple[Seen, ...] = ()


def lab_config(cex: CexFile) -> LbConfig:
    """The lab's configuration for a counterexample's program."""
    if cex.program == "seed":
        return default_config(cex.scenario.backends, flow_table_bits=SEED_INDEX_BITS, flow_ways=1, flow_bucket=1)
    return default_config(cex.scenario.backends)


def quiet_ptf() -> None:
    """Import ptf (the reaching packets are built with it) without the banner it prints on stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        import ptf.testutils  # noqa: F401, PLC0415


def replay_on_bmv2(cex: CexFile, bmv2_json: Path, p4info: Path, lab: Lab | None = None) -> Replayed:
    """Start a lab (unless given one holding no P4Runtime session), push `bmv2_json`, reach the state, send, read back."""
    quiet_ptf()
    with contextlib.ExitStack() as stack:
        if lab is None:
            lab = stack.enter_context(Lab(cex.program, lab_config(cex), push=False))
        if cex.program == "p4lb":
            return P4lbReplay(lab, cex.scenario, bmv2_json, p4info).run()
        return SeedReplay(lab, cex.scenario, bmv2_json, p4info).run()


def write_tables(rt: P4rt, tables: list[TableWrite]) -> None:
    """Upsert entries as the file lists them; a p4lb entry the file lists without a service (a counterexample of one
    service) is service REPLAY_SERVICE's: its table's service key and lb_select's service parameter are filled in."""
    for t in tables:
        match, params = dict(t.match), dict(t.params)
        table = rt.p4_object("table", t.table)
        if table is not None and any(mf.name == entries.SERVICE_KEY for mf in table.match_fields):
            match.setdefault(entries.SERVICE_KEY, REPLAY_SERVICE)
        if t.action.rsplit(".", 1)[-1] == "lb_select":
            params.setdefault("service", REPLAY_SERVICE)
        rt.upsert(t.table, match, t.action, params)


def frame_effect(seen: list[Seen], scn: Scenario) -> tuple[bool, int, int, int]:
    """(dropped, port, eth dst, ip dst) from the frames that left the switch."""
    if len(seen) > 1:
        raise Bmv2ReplayError(f"the packet left the switch {len(seen)} times (ports {[s.port for s in seen]})")
    if not seen:
        return True, 0, scn.frame.fields.get("ethernet.dstAddr", 0), scn.frame.fields.get("ipv4.dstAddr", 0)
    f = seen[0].frame
    ip_dst = int.from_bytes(f[30:34], "big") if len(f) >= 34 and f[12:14] == b"\x08\x00" else scn.frame.fields.get("ipv4.dstAddr", 0)
    return False, seen[0].port or 0, int.from_bytes(f[0:6], "big"), ip_dst


def send(lab: Lab, frame: bytes, counted: bool) -> list[Seen]:
    """Send a frame from the client; a drop no counter explains is waited for a while (see Lab.late)."""
    seen = lab.send(frame)
    return seen if seen or counted else lab.late()


class P4lbReplay:
    """p4lb: tables through P4Runtime, rr_next / idle_timeout through the CPU port, the flow slot by packets."""

    def __init__(self, lab: Lab, scn: Scenario, bmv2_json: Path, p4info: Path) -> None:
        self.lab, self.scn = lab, scn
        self.cfg = default_config(scn.backends, idle_timeout_us=max(1, scn.register("idle_timeout")))
        self.slot = scn.only_cell("flow_state") if "flow_state" in scn.registers else None
        self.sw = P4RuntimeSwitch(lab.bmv2.grpc, 0, (0, 1), str(p4info), str(bmv2_json), self.cfg)
        self.notes: list[str] = []

    def run(self) -> Replayed:
        """Push, reach, send, read back."""
        try:
            self.sw.install_pipeline()
            write_tables(self.sw.rt, [t for t in self.scn.tables if t.table not in CONTROLLED])
            self.sw.cpu(CPU_WRITE_TIMEOUT, 0, self.cfg.idle_timeout_us)  # 0 after a push: every flow idle at once
            dead = self.reach_slot()
            self.set_controlled(dead)
            return self.send_packet(dead)
        finally:
            self.sw.close()

    def slot_target(self) -> tuple[int, int, int, int]:
        """(state, key, backend, last_seen) the counterexample gives its slot."""
        s, i = self.scn, self.slot or 0
        return s.register("flow_state", i), s.register("flow_key", i), s.register("flow_backend", i), s.register("flow_last_seen", i)

    def idle_in_file(self) -> bool:
        """The counterexample's slot is past its idle timeout at the packet's time."""
        state, _, _, last = self.slot_target()
        return state != SlotState.FREE and (self.scn.time_us - last) % (1 << 48) > self.cfg.idle_timeout_us

    def reach_slot(self) -> bool:
        """Put the slot's entry there with packets (True: it must then go idle)."""
        state, key, backend, _ = self.slot_target()
        if self.slot is None or state == SlotState.FREE:
            self.notes.append("flow slot: FREE in a freshly pushed pipeline")
            return False
        if key_service(key) != REPLAY_SERVICE:
            self.notes.append(f"flow slot {self.slot}: its key is service {key_service(key)}'s, and a counterexample is replayed as service {REPLAY_SERVICE}: left FREE")
            return False
        reach = key_packet(key, SYN)
        src, port = reach.src_ip, reach.src_port
        places = flow_places(self.cfg, Packet(src, port, SYN))
        if self.slot not in places:
            self.notes.append(f"flow slot {self.slot}: not one of its key's candidate places, so no packet can put it there: left FREE")
            return False
        landed = self.landing(Packet(src, port, SYN), backend)
        if landed != self.slot:
            self.notes.append(f"flow slot {self.slot}: its key's candidate {places.index(self.slot)}, but its SYN takes candidate {places.index(landed)} (place {landed}) in an empty table: left FREE")
            return False
        c = replace(self.cfg, service=REPLAY_SERVICE)
        write_tables(self.sw.rt, [entries.vip(c, 0), entries.rr_group(c, 0, 1), entries.rr_member(c, 0, 0, backend)])
        self.lab.send(tcp_frame(self.cfg, Packet(src, port, SYN)))
        how = "a SYN of its key dispatched to a one-member group"
        if state == SlotState.CLOSING:
            self.lab.send(tcp_frame(self.cfg, Packet(src, port, FIN | ACK)))
            how += ", then a FIN"
        got = self.sw.read_slot(self.slot)
        if (got["flow_state"], got["flow_key"], got["flow_backend"]) != (state, key, backend):
            self.notes.append(f"flow slot {self.slot}: {how} left state {got['flow_state']} key {got['flow_key']} backend {got['flow_backend']}, not {state}/{key}/{backend}")
        else:
            self.notes.append(f"flow slot {self.slot}: reached by {how}")
        return self.idle_in_file()

    def landing(self, syn: Packet, backend: int) -> int:
        """The place the model's step puts the reaching SYN in: an empty flow table, a one-member group."""
        st = P4lbState(rr_group=(1, 0), rr_member={(0, 0): backend})
        after, _ = p4lb_packet(self.cfg, P4LB, st, syn)
        return step_place(self.cfg, st, after, syn)

    def set_controlled(self, dead: bool) -> None:
        """The counterexample's vip / rr_group / rr_member entries, rr_next, and the idle timeout."""
        rt = self.sw.rt
        mine = [t for t in self.scn.tables if t.table in CONTROLLED]
        write_tables(rt, mine)
        listed = {tuple(t.match) for t in mine if t.table == "rr_member"}
        if (("meta.lb.version", 0), ("meta.lb.position", 0)) not in listed and ((entries.SERVICE_KEY, REPLAY_SERVICE), ("meta.lb.version", 0), ("meta.lb.position", 0)) not in listed:
            rt.delete("rr_member", {entries.SERVICE_KEY: REPLAY_SERVICE, "meta.lb.version": 0, "meta.lb.position": 0})  # the reaching SYN's, if any
        for v in (0, 1):
            self.sw.cpu(CPU_WRITE_RR_NEXT, v, self.scn.register("rr_next", v))
        timeout = DEAD_TIMEOUT_US if dead else self.cfg.idle_timeout_us
        self.sw.cpu(CPU_WRITE_TIMEOUT, 0, timeout)
        self.notes.append(f"tables and rr_next as the file gives them (P4Runtime, CPU port); idle_timeout {timeout} us" + (" (the slot must be idle: waited past it)" if dead else ""))

    def settle(self, dead: bool) -> dict[str, int]:
        """The slot read just before the packet, once its age is clearly on the file's side of the timeout."""
        slot = self.slot or 0
        for _ in range(20):
            regs = self.sw.read_slot(slot)
            if regs["flow_state"] == SlotState.FREE:
                return regs
            age = regs["now"] - regs["flow_last_seen"]
            if dead and age > regs["idle_timeout"] + GUARD_US:
                return regs
            if not dead:
                if age + GUARD_US > regs["idle_timeout"]:
                    self.notes.append(f"flow slot {slot}: {age} us old at a {regs['idle_timeout']} us timeout, not clearly live")
                return regs
            time.sleep((regs["idle_timeout"] + 2 * GUARD_US - age) / 1e6)
        raise Bmv2ReplayError(f"the switch clock does not move past the idle timeout of slot {slot}")

    def send_packet(self, dead: bool) -> Replayed:
        """Counters and slot before, the packet, counters and slot after; the reached scenario at its time."""
        scn = self.scn
        before_c = self.counters()
        before_open = self.sw.read_open(OPEN_IDS)[1]
        pre = self.settle(dead)
        seen = self.lab.send(scn.frame.data)
        after_c = self.counters()
        incs = {c: {i: n - before_c[c].get(i, 0) for i, n in after_c[c].items() if n != before_c[c].get(i, 0)} for c in after_c}
        incs["backend_open"] = signed_changes(before_open, self.sw.read_open(OPEN_IDS)[1], 32)
        if not seen and not incs["lb_drops"]:
            seen = self.lab.late()
        post = self.sw.read_slot(self.slot or 0)
        t = post["flow_last_seen"] if post["flow_last_seen"] != pre["flow_last_seen"] else pre["now"]
        regs_pre, regs_post = self.registers(pre), self.registers(post)
        reached = replace(scn, registers=regs_pre, time_us=t, now_us=min(pre["now"], t))
        effect = Effect(*frame_effect(seen, scn), incs, regs_post)
        return Replayed(reached, effect, tuple(self.notes), tuple(seen))

    def counters(self) -> dict[str, dict[int, int]]:
        """The service's lb_drops (per reason) and backend_flows (per backend id) cells, as the file numbers them."""
        rt, svc = self.sw.rt, REPLAY_SERVICE
        drops = rt.counter_cells("lb_drops", range(svc * 8, svc * 8 + 8))
        flows = rt.counter_cells("backend_flows", range(svc * 256, svc * 256 + OPEN_IDS + 1))
        return {"lb_drops": {i - svc * 8: c for i, c in drops.items()}, "backend_flows": {i - svc * 256: c for i, c in flows.items()}}

    def registers(self, regs: dict[str, int]) -> dict[str, dict[int, int]]:
        """The scenario's register cells as read through the CPU port."""
        out = {"rr_next": {0: regs["rr_next0"], 1: regs["rr_next1"]}, "idle_timeout": {0: regs["idle_timeout"]}}
        if self.slot is not None:
            out |= {k: {self.slot: regs[k]} for k in ("flow_state", "flow_key", "flow_backend", "flow_last_seen")}
        return {k: v for k, v in out.items() if k in self.scn.registers}


# ---- the seed ---------------------------------------------------------------------------------------------


class SeedReplay:
    """The seed: its static tables, then the registers reached by a planned sequence of writes and packets."""

    def __init__(self, lab: Lab, scn: Scenario, bmv2_json: Path, p4info: Path) -> None:
        self.lab, self.scn, self.files = lab, scn, (p4info, bmv2_json)
        self.cfg = scn.cfg()
        self.cell = scn.only_cell("flowlet_select") if "flowlet_select" in scn.registers else 0
        self.notes: list[str] = []

    def run(self) -> Replayed:
        """Push, reach, send, read back."""
        with P4rt(self.lab.bmv2.grpc) as rt:
            rt.push(*self.files)
            write_tables(rt, list(self.scn.tables))
            self.reach(rt)
            write_tables(rt, [t for t in self.scn.tables if t.table.startswith("set_")])
            pre = self.read(rt)
            seen = send(self.lab, self.scn.frame.data, counted=False)
            post = self.read(rt)
        reached = replace(self.scn, registers=pre)
        return Replayed(reached, Effect(*frame_effect(seen, self.scn), {}, post), tuple(self.notes), tuple(seen))

    def reach(self, rt: P4rt) -> None:
        """Drive flowlet_select[cell], myselect and mymax to the file's values: steps planned on the model, run,
        read back, and planned again from what was reached (the JSON may not do what the model does on the way)."""
        f = self.scn.frame
        pkt = Packet(f.get("ipv4.srcAddr"), f.get("tcp.srcPort"), 0)
        target = (self.scn.register("flowlet_select", self.cell), self.scn.register("myselect"), self.scn.register("mymax"))
        at, steps, seen = START, 0, {START}
        for _ in range(REPLANS):
            plan = seed_plan(self.cfg, pkt, target, at)
            if plan is None:
                self.notes.append(f"flowlet_select[{self.cell}], myselect, mymax = {target}: no packets lead there on the model from {at}: left at {at}")
                return
            self.run_steps(rt, pkt, plan)
            steps += len(plan)
            got = self.read(rt)
            at = (got["flowlet_select"][self.cell], got["myselect"][0], got["mymax"][0])
            if at == target or at in seen:
                break  # there, or going round: the switch does not do what the model does on the way
            seen.add(at)
        how = f"{steps} steps (set_max / set_status writes, SYN and non-SYN packets) planned on the model"
        self.notes.append(f"flowlet_select[{self.cell}], myselect, mymax: {how} reached {at}" + ("" if at == target else f", not {target}"))

    def run_steps(self, rt: P4rt, pkt: Packet, plan: list[SeedStep]) -> None:
        """Each step's set_max / set_status entries, then its packet."""
        off = other_cell(self.cfg, pkt)
        vip: dict[str, Key] = {"hdr.ipv4.dstAddr": (self.cfg.vip, 32)}
        for step in plan:
            rt.upsert("set_max", vip, "_max", {"max": step.set_max})
            for k in range(1, 5):
                rt.upsert(f"set_status{k}", vip, f"_fail{k}", {"fail": step.status[k - 1]})
            send(self.lab, tcp_frame(self.cfg, replace(pkt if step.at_cell else off, flags=SYN if step.syn else ACK)), counted=False)

    def read(self, rt: P4rt) -> dict[str, dict[int, int]]:
        """flowlet_select[cell], myselect and mymax through the seed's CPU-port read."""
        rt.packet_out({"op": 1, "index": self.cell})
        got = rt.packet_in()
        regs = {"flowlet_select": {self.cell: got["flowlet_select"]}, "myselect": {0: got["myselect"]}, "mymax": {0: got["mymax"]}}
        return {k: v for k, v in regs.items() if k in self.scn.registers}


# ---- the command ------------------------------------------------------------------------------------------


def replay(cex: CexFile, bmv2_json: Path | None = None, p4info: Path | None = None, lab: Lab | None = None) -> ReplayReport:
    """Run a counterexample on BMv2 (the file's JSON, or `bmv2_json`) and compare it with the model and the JSON."""
    if cex.scenario.frame.ingress_port == CPU_PORT:
        raise CexError("a CPU-port counterexample (a PacketOut) is not replayed: the lab sends frames from the client port")
    path = bmv2_json or cex.bmv2_json
    run = replay_on_bmv2(cex, path, p4info or cex.p4info, lab)
    return compare(cex, path, run.reached, run.effect, [*json_notes(cex, bmv2_json), *run.notes])


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(prog="python -m p4lb.lab.replay", description="Replay a JSON-vs-model counterexample on BMv2 and compare it with the model and the JSON.")
    p.add_argument("file", type=Path, help="a counterexample file written by `python -m p4lb.verify.bmv2` (out/bmv2-cex-*.json)")
    p.add_argument("--json", type=Path, help="push this BMv2 JSON instead of the one the counterexample was found in (e.g. the committed build)")
    p.add_argument("--p4info", type=Path, help="push this P4Info instead of the file's")
    p.add_argument("--no-switch", action="store_true", help="no BMv2: only the model's and the JSON's answers on the file's state")
    p.add_argument("-v", "--verbose", action="store_true", help="log the switch session")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    """Replay (or compare without BMv2) and print; the exit status."""
    cex = read_cex(args.file)
    if args.no_switch:
        rep = dry_replay(cex, args.json)
        print_report(rep, args.file)
        return 0 if rep.differing() else 1
    reason = missing_switch()
    if reason:
        raise CexError(f"cannot replay on BMv2: {reason} (--no-switch compares the model and the JSON only)")
    rep = replay(cex, args.json, args.p4info)
    print_report(rep, args.file)
    return 0 if rep.bmv2_agrees_with_json() else 1


def main(argv: list[str] | None = None) -> int:
    """Exit 0: BMv2 did what the JSON's reading says; 1: it did not; 2: an error, as one line on stderr."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return run(args)
    except (VerifyError, ControllerError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
