"""A differing JSON-vs-model check as a file: the concrete packet, tables, registers and time, replayable.

`save_counterexample` turns an `EquivalenceResult` that DIFFERS into `out/bmv2-cex-<program>-<hash>.json`:
the packet's bytes (and fields), its ingress port and time, every table entry and every register cell the
packet can read, which BMv2 JSON was checked, and the raw Z3 counterexample. `Scenario` is that concrete
start; `predict_model` and `predict_json` say what the executable model and the symbolic executor's reading
of the JSON (evaluated by Z3 on concrete values) do with it, as one `Effect` each, which `rows` compares with
what BMv2 did (see `p4lb.lab.replay`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import z3

from p4lb.model.config import LbConfig, default_config
from p4lb.model.crc import ip_str
from p4lb.model.p4lb import P4LB, FlowEntry, P4lbState, SlotState, p4lb_packet
from p4lb.model.packet import DropReason, Fate, Outcome, Packet
from p4lb.model.seed import SEED_INDEX_BITS, SeedState, seed_packet
from p4lb.p4 import artifacts, entries
from p4lb.p4.entries import TableEntry
from p4lb.verify.bmv2.equivalence import MAX_FRAME, EquivalenceResult, action_named, concrete_input, table_named
from p4lb.verify.bmv2.program import Program, load
from p4lb.verify.bmv2.symbolic import Entries, Entry, Environment, Match, PacketInput, TableContents, Unlisted, crc16_arc, execute, index_bits
from p4lb.verify.errors import VerifyError

log = logging.getLogger(__name__)

FORMAT = "p4lb-bmv2-counterexample/1"
REPLAY_COMMAND = "python -m p4lb.lab.replay"
COUNTERS = {"p4lb": ("lb_drops", "backend_flows", "bad_checksum"), "seed": ()}
REPLAY_SERVICE = 0  # the service id a replay installs (p4lb's lb_drops, backend_flows and backend_open cells are then the model's indices)
CHANGES = {"p4lb": ("backend_open",), "seed": ()}  # registers compared by their change (signed, mod 2^width): BMv2 cannot set them


class CexError(VerifyError):
    """A counterexample file that cannot be read or used."""


# ---- the file ------------------------------------------------------------------------------------------


TableWrite = TableEntry  # one table entry as P4Runtime writes it: match fields by P4Info name, in the table's key order


@dataclass(frozen=True)
class Frame:
    """The packet: its bytes, the switch port it enters on, and the header fields they hold."""

    ingress_port: int
    data: bytes
    fields: Mapping[str, int]  # "ipv4.srcAddr" -> value

    def get(self, name: str) -> int:
        """One header field ("ipv4.srcAddr")."""
        if name not in self.fields:
            raise CexError(f"the counterexample's packet has no field {name}")
        return self.fields[name]


@dataclass(frozen=True)
class Scenario:
    """A concrete start: tables, the register cells the packet can read (other cells 0), the packet and its time."""

    program: str
    backends: int
    tables: tuple[TableWrite, ...]
    registers: Mapping[str, Mapping[int, int]]  # short name -> index -> value
    frame: Frame
    time_us: int  # the packet's ingress_global_timestamp
    now_us: int = 0  # the model's clock before the packet (p4lb; <= time_us)

    def register(self, name: str, index: int = 0) -> int:
        """One register cell (0 if not listed)."""
        return self.registers.get(name, {}).get(index, 0)

    def only_cell(self, name: str) -> int:
        """The index of the one listed cell of a register (p4lb's flow slot, the seed's flowlet cell)."""
        cells = list(self.registers.get(name, {}))
        if len(cells) != 1:
            raise CexError(f"the counterexample lists {len(cells)} cells of {name}, expected one")
        return cells[0]

    def cfg(self) -> LbConfig:
        """The lab's configuration for this scenario (p4lb: its idle_timeout register as the timeout)."""
        if self.program == "seed":
            return default_config(self.backends, flow_table_bits=SEED_INDEX_BITS, flow_ways=1, flow_bucket=1)
        return default_config(self.backends, idle_timeout_us=max(1, self.register("idle_timeout")))

    def entries(self, table: str) -> list[TableWrite]:
        """The entries of one table."""
        return [t for t in self.tables if t.table == table]


@dataclass(frozen=True)
class CexFile:
    """A counterexample as written to out/: the scenario, which JSON was checked, and what Z3 found."""

    program: str
    kind: str  # "a": a class-(a) packet (the model predicts it); "b": any other packet (a claim about it)
    failed: tuple[str, ...]
    bmv2_json: Path
    json_sha256: str
    p4info: Path
    scenario: Scenario
    replayable: bool
    notes: tuple[str, ...] = ()
    counterexample: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The file's JSON form."""
        s = self.scenario
        return {
            "format": FORMAT,
            "program": self.program,
            "kind": self.kind,
            "failed": list(self.failed),
            "replayable": self.replayable,
            "notes": list(self.notes),
            "bmv2_json": str(self.bmv2_json),
            "bmv2_json_sha256": self.json_sha256,
            "p4info": str(self.p4info),
            "backends": s.backends,
            "packet": {"ingress_port": s.frame.ingress_port, "time_us": s.time_us, "now_us": s.now_us, "frame": s.frame.data.hex(), "fields": dict(s.frame.fields)},
            "tables": [{"table": t.table, "match": [[k, list(v) if isinstance(v, tuple) else v] for k, v in t.match], "action": t.action, "params": dict(t.params)} for t in s.tables],
            "registers": {name: {str(i): v for i, v in cells.items()} for name, cells in s.registers.items()},
            "counterexample": dict(self.counterexample),
        }

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> CexFile:
        """Read the JSON form back (CexError if it is not one)."""
        if d.get("format") != FORMAT:
            raise CexError(f"not a counterexample file of format {FORMAT} (format: {d.get('format')!r})")
        try:
            pk = d["packet"]
            frame = Frame(int(pk["ingress_port"]), bytes.fromhex(pk["frame"]), {k: int(v) for k, v in pk["fields"].items()})
            tables = tuple(TableWrite(t["table"], tuple((k, tuple(v) if isinstance(v, list) else int(v)) for k, v in t["match"]), t["action"], tuple((k, int(v)) for k, v in t["params"].items())) for t in d["tables"])
            regs = {name: {int(i): int(v) for i, v in cells.items()} for name, cells in d["registers"].items()}
            scn = Scenario(d["program"], int(d["backends"]), tables, regs, frame, int(pk["time_us"]), int(pk.get("now_us", 0)))
            return CexFile(d["program"], d["kind"], tuple(d["failed"]), Path(d["bmv2_json"]), d["bmv2_json_sha256"], Path(d["p4info"]), scn, bool(d["replayable"]), tuple(d.get("notes", ())), d.get("counterexample", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise CexError(f"malformed counterexample file: {type(exc).__name__}: {exc}") from None

    def save(self, path: Path) -> Path:
        """Write the file (its folder made if missing)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path


def read_cex(path: Path) -> CexFile:
    """A counterexample file (CexError naming the problem if unreadable)."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise CexError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise CexError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CexError(f"{path} is not a counterexample file")
    return CexFile.from_json(data)


def sha256(path: Path) -> str:
    """The file's SHA-256 (hex)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def replay_command(path: Path) -> str:
    """The one command that replays a saved counterexample on BMv2."""
    return f"{REPLAY_COMMAND} {path}"


# ---- from a result ----------------------------------------------------------------------------------------


def frame_bytes(prog: Program, fields: Mapping[str, int], headers: Sequence[str], length: int) -> bytes:
    """The headers' fields packed in order (as the parser extracts them), zero payload up to `length` bytes."""
    out = b""
    for h in headers:
        ht = prog.header_type(h)
        value = 0
        for f in ht.fields:
            value = (value << f.width) | (fields[f"{h}.{f.name}"] & ((1 << f.width) - 1))
        out += value.to_bytes(ht.bits // 8, "big")
    return out + bytes(max(0, length - len(out)))


def p4lb_tables(cfg: LbConfig, version: int, groups: Sequence[int], members: Mapping[tuple[int, int], int]) -> tuple[TableWrite, ...]:
    """The controller's p4lb entries (p4lb.p4.entries) for a state of service REPLAY_SERVICE: vip, rr_group,
    rr_member, then the static backend, forward and send_frame entries."""
    c = replace(cfg, service=REPLAY_SERVICE)
    out = [entries.vip(c, version), *(entries.rr_group(c, v, groups[v]) for v in (0, 1))]
    out += [entries.rr_member(c, v, p, b) for (v, p), b in sorted(members.items())]
    return (*out, *entries.static(c))


def seed_tables(cfg: LbConfig, set_max: int, status: Sequence[int]) -> tuple[TableWrite, ...]:
    """The seed's entries as install_seed writes them, with the counterexample's set_max and set_statusK."""
    vip = ("hdr.ipv4.dstAddr", (cfg.vip, 32))
    out = [TableWrite("forward", (vip,), "read_flowlet_select")]
    out.append(TableWrite("forward", (("hdr.ipv4.dstAddr", (cfg.client_net, cfg.client_prefix)),), "set_nhop", (("dmac", cfg.client_mac), ("port", cfg.client_port))))
    out.append(TableWrite("ecmp_group", (vip,), "set_ecmp_select"))
    for b in cfg.backends[:4]:
        out.append(TableWrite("forward", (("hdr.ipv4.dstAddr", (b.ip, 32)),), "set_nhop", (("dmac", b.mac), ("port", b.port))))
        out.append(TableWrite("ecmp_nhop", (("meta.sel.flowlet", b.id),), "set_ecmp_nhop", (("nhop_mac", b.mac), ("nhop_ipv4", b.ip), ("port", b.port))))
    out.append(TableWrite("send_frame", (("std.egress_port", cfg.client_port),), "rewrite_sip", (("sip", cfg.vip),)))
    out.append(TableWrite("set_max", (vip,), "_max", (("max", set_max),)))
    out += [TableWrite(f"set_status{k}", (vip,), f"_fail{k}", (("fail", status[k - 1]),)) for k in range(1, 5)]
    return tuple(out)


def p4lb_scenario(cx: Mapping[str, Any], cfg: LbConfig, frame: Frame) -> Scenario:
    """A p4lb class-(a) counterexample's concrete start."""
    st, slot = cx["state"], int(cx["slot"])
    e = st["flows"][str(slot)]
    members = {(int(k.split(",")[0]), int(k.split(",")[1])): int(v) for k, v in st["rr_member"].items()}
    regs = {
        "rr_next": {0: st["rr_next"][0], 1: st["rr_next"][1]},
        "idle_timeout": {0: cfg.idle_timeout_us},
        "flow_state": {slot: e["state"]},
        "flow_key": {slot: e["key"]},
        "flow_backend": {slot: e["backend"]},
        "flow_last_seen": {slot: e["last_seen"]},
    }
    return Scenario("p4lb", cfg.n, p4lb_tables(cfg, st["version"], st["rr_group"], members), regs, frame, int(cx["packet"]["time_us"]), int(st["now"]))


def seed_scenario(cx: Mapping[str, Any], cfg: LbConfig, frame: Frame) -> Scenario:
    """A seed class-(a) counterexample's concrete start."""
    st, idx = cx["state"], int(cx["index"])
    regs = {"flowlet_select": {idx: st["flowlet_select"][str(idx)]}, "myselect": {0: st["myselect"]}, "mymax": {0: st["mymax"]}}
    return Scenario("seed", cfg.n, seed_tables(cfg, st["set_max"], st["set_status"]), regs, frame, 0)


def other_scenario(program: str, cfg: LbConfig, frame: Frame, time_us: int) -> Scenario:
    """A class-(b) packet's start: the controller's deployed tables (all N backends in version 0), registers 0;
    watched: the cells its 5-tuple hashes to (flow slot, flowlet cell) and the single-cell registers."""
    cell = crc16_arc(b"".join(frame.fields.get(k, 0).to_bytes(w, "big") for k, w in (("ipv4.srcAddr", 4), ("ipv4.dstAddr", 4), ("ipv4.protocol", 1), ("tcp.srcPort", 2), ("tcp.dstPort", 2))))
    if program == "seed":
        regs = {"flowlet_select": {cell % (1 << SEED_INDEX_BITS): 0}, "myselect": {0: 0}, "mymax": {0: 0}}
        return Scenario("seed", cfg.n, seed_tables(cfg, 4, (0, 0, 0, 0)), regs, frame, 0)
    members = {(0, i): b.id for i, b in enumerate(cfg.backends)}
    slot = cell % (1 << cfg.flow_table_bits)
    regs = {"rr_next": {0: 0, 1: 0}, "idle_timeout": {0: cfg.idle_timeout_us}} | {k: {slot: 0} for k in ("flow_state", "flow_key", "flow_backend", "flow_last_seen")}
    return Scenario("p4lb", cfg.n, p4lb_tables(cfg, 0, (cfg.n, 0), members), regs, frame, time_us)


def counterexample_file(r: EquivalenceResult, bmv2_json: Path, p4info: Path, n: int = 4) -> CexFile:
    """The file for a result that DIFFERS with a counterexample."""
    if r.counterexample is None or "input" not in r.counterexample:
        raise CexError(f"{r.program}: no concrete counterexample to save (verdict {r.verdict.value})")
    cx: Mapping[str, Any] = r.counterexample
    prog = program_of(bmv2_json, r.program)
    inp = cx["input"]
    fields = {k: int(v) for k, v in inp["fields"].items()}
    frame = Frame(int(inp["ingress_port"]), frame_bytes(prog, fields, inp["headers"], min(int(inp["length"]), MAX_FRAME)), fields)
    cfg = default_config(n) if r.program == "p4lb" else default_config(4, flow_table_bits=SEED_INDEX_BITS, flow_ways=1, flow_bucket=1)
    kind = "b" if "state" not in cx else "a"
    if kind == "b":
        scn = other_scenario(r.program, cfg, frame, int(inp["timestamp"]))
    elif r.program == "p4lb":
        scn = p4lb_scenario(cx, cfg, frame)
    else:
        scn = seed_scenario(cx, cfg, frame)
    notes = [str(cx["replay_note"])] if cx.get("replay_note") else []
    if kind == "b":
        notes.append("class (b): the model column is the proof's claim for packets outside the model's class; Z3's register contents are arbitrary, so the replay starts from the deployed tables and registers 0, sent from the client port")
    if int(inp["length"]) > MAX_FRAME:
        notes.append(f"the packet is {inp['length']} bytes long in Z3's counterexample: cut to {MAX_FRAME}")
    return CexFile(r.program, kind, tuple(str(f) for f in cx["failed"]), bmv2_json.resolve(), sha256(bmv2_json), p4info.resolve(), scn, bool(cx.get("replayable", kind == "a")), tuple(notes), cx)


def save_counterexample(r: EquivalenceResult, out_dir: Path, bmv2_json: Path | None = None, p4info: Path | None = None, n: int = 4) -> Path:
    """Write out_dir/bmv2-cex-<program>-<JSON hash>.json for a differing result; its path."""
    committed_info, committed_json = artifacts(r.program)
    bmv2_json = bmv2_json or committed_json
    cex = counterexample_file(r, bmv2_json, p4info or committed_info, n)
    return cex.save(out_dir / f"bmv2-cex-{r.program}-{cex.json_sha256[:12]}.json")


# ---- what each side does with a scenario -----------------------------------------------------------------


@dataclass(frozen=True)
class Effect:
    """What one packet did: dropped or sent (port and destination rewrites), counter increments, registers after.

    `egress_port` None: the side makes no prediction beyond "not to a backend" (the model on class (b) packets)."""

    dropped: bool
    egress_port: int | None
    eth_dst: int
    ip_dst: int
    counters: Mapping[str, Mapping[int, int]]  # counter (or CHANGES register) -> index -> increment (nonzero only)
    registers: Mapping[str, Mapping[int, int]]  # register -> index -> value after, at the scenario's cells


def program_of(path: Path, program: str) -> Program:
    """A BMv2 JSON file as a Program (CexError if unreadable)."""
    try:
        return load(program, json.loads(path.read_text()))
    except OSError as exc:
        raise CexError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise CexError(f"{path} is not JSON: {exc}") from None


def environment(prog: Program, scn: Scenario) -> Environment:
    """The scenario's tables and registers for the symbolic executor (unlisted tables empty, unlisted cells 0)."""
    tables: dict[str, TableContents] = {}
    for short in dict.fromkeys(t.table for t in scn.tables):
        name = table_named(prog, short)
        table = prog.table(name)
        rows = []
        for t in scn.entries(short):
            if len(t.match) != len(table.keys):
                raise CexError(f"table {short}: the entry has {len(t.match)} match fields, the program {len(table.keys)}")
            match = tuple(Match(k[0], prefix=k[1]) if isinstance(k, tuple) else Match(k) for _, k in t.match)
            aname = action_named(prog, name, t.action)
            params = dict(t.params)
            act = prog.actions[table.action_id(aname)]
            rows.append(Entry(match, aname, tuple(params[p.name] for p in act.params)))
        tables[name] = Entries(rows)
    regs = {}
    for r in prog.registers.values():
        bits = index_bits(r.size)
        arr = z3.K(z3.BitVecSort(bits), z3.BitVecVal(0, r.bitwidth))
        for i, v in scn.registers.get(r.name.rsplit(".", 1)[-1], {}).items():
            arr = z3.Store(arr, z3.BitVecVal(i, bits), z3.BitVecVal(v, r.bitwidth))
        regs[r.name] = arr
    return Environment(tables, regs, Unlisted.EMPTY)


def _value(e: z3.ExprRef) -> int:
    v = z3.simplify(e)
    if z3.is_true(v) or z3.is_false(v):
        return int(z3.is_true(v))
    if not z3.is_bv_value(v):
        raise CexError(f"the JSON's answer is not concrete: {v}")
    return int(v.as_long())


def packet_input(prog: Program, scn: Scenario) -> PacketInput:
    """The scenario's packet as the executor's concrete input."""
    values = {(k.split(".", 1)[0], k.split(".", 1)[1]): v for k, v in scn.frame.fields.items()}
    return concrete_input(prog, values, len(scn.frame.data), scn.frame.ingress_port, scn.time_us)


def predict_json(prog: Program, scn: Scenario) -> Effect:
    """The symbolic executor's reading of the JSON on the scenario, evaluated by Z3."""
    res = execute(prog, environment(prog, scn), packet_input(prog, scn), "replay")
    counters = {}
    for name in COUNTERS[scn.program]:
        arr, size = res.counter(name), prog.counter(name).size
        bits = index_bits(size)
        counters[name] = {i: c for i in range(size) if (c := _value(arr[z3.BitVecVal(i, bits)]))}
    for name in CHANGES[scn.program]:
        arr, reg = res.register(name), prog.register(name)
        counters[name] = signed_changes({i: scn.register(name, i) for i in range(reg.size)}, {i: _value(arr[z3.BitVecVal(i, arr.domain().size())]) for i in range(reg.size)}, reg.bitwidth)
    regs = {}
    for name, cells in scn.registers.items():
        arr = res.register(name)
        regs[name] = {i: _value(arr[z3.BitVecVal(i, arr.domain().size())]) for i in cells}
    dropped = bool(_value(res.dropped))
    return Effect(dropped, _value(res.egress_port), _value(res.field("ethernet", "dstAddr")), _value(res.field("ipv4", "dstAddr")), counters, regs)


def signed_changes(before: Mapping[int, int], after: Mapping[int, int], bits: int) -> dict[int, int]:
    """Cell -> after - before as a signed `bits`-bit change (a bit<32> 0 - 1 is -1), nonzero ones only."""
    out = {}
    for i in sorted(set(before) | set(after)):
        d = (after.get(i, 0) - before.get(i, 0)) % (1 << bits)
        if d:
            out[i] = d - (1 << bits) if d >> (bits - 1) else d
    return out


def model_packet_of(scn: Scenario) -> Packet:
    """The model's view of the scenario's packet."""
    f = scn.frame
    return Packet(f.get("ipv4.srcAddr"), f.get("tcp.srcPort"), f.get("tcp.flags"), scn.time_us)


def _sent(cfg: LbConfig, scn: Scenario, out: Outcome) -> tuple[bool, int, int, int]:
    """(dropped, port, eth dst, ip dst) of a model outcome (a LOST packet leaves on port 0, not rewritten)."""
    eth, ip = scn.frame.get("ethernet.dstAddr"), scn.frame.get("ipv4.dstAddr")
    if out.fate is Fate.BACKEND:
        b = cfg.backend(out.backend)
        return False, b.port, b.mac, b.ip
    if out.fate is Fate.LOST:
        return False, 0, eth, ip
    return True, 0, eth, ip


def exact(t: TableWrite, name: str) -> int:
    """An exact match field's value."""
    v = dict(t.match)[name]
    if isinstance(v, tuple):
        raise CexError(f"table {t.table}: {name} is matched as a prefix, expected an exact value")
    return int(v)


def p4lb_state(scn: Scenario) -> P4lbState:
    """The model's p4lb state of a scenario."""
    version = dict(scn.entries("vip")[0].params)["version"] if scn.entries("vip") else 0
    groups = {exact(t, "meta.lb.version"): dict(t.params)["size"] for t in scn.entries("rr_group")}
    members = {(exact(t, "meta.lb.version"), exact(t, "meta.lb.position")): dict(t.params)["backend"] for t in scn.entries("rr_member")}
    flows = {}
    for slot in scn.registers.get("flow_state", {}):
        st = scn.register("flow_state", slot)
        state = SlotState(st) if st in (0, 1, 2) else st
        flows[slot] = FlowEntry(state, scn.register("flow_key", slot), scn.register("flow_backend", slot), scn.register("flow_last_seen", slot))  # type: ignore[arg-type]
    return P4lbState(version=version, rr_group=(groups.get(0, 0), groups.get(1, 0)), rr_member=members, rr_next=(scn.register("rr_next", 0), scn.register("rr_next", 1)), flows=flows, now=scn.now_us)


def seed_state(scn: Scenario) -> SeedState:
    """The model's seed state of a scenario."""
    set_max = dict(scn.entries("set_max")[0].params)["max"]
    status = tuple(int(dict(scn.entries(f"set_status{k}")[0].params)["fail"]) for k in range(1, 5))
    return SeedState(dict(scn.registers.get("flowlet_select", {})), scn.register("myselect"), scn.register("mymax"), set_max, status)  # type: ignore[arg-type]


def predict_model(scn: Scenario) -> Effect:
    """The executable model's step on the scenario (class (a) packets)."""
    cfg, pkt = scn.cfg(), model_packet_of(scn)
    if scn.program == "seed":
        st, out = seed_packet(cfg, seed_state(scn), pkt)
        cells = {"flowlet_select": {i: st.flowlet_select.get(i, 0) for i in scn.registers.get("flowlet_select", {})}, "myselect": {0: st.myselect}, "mymax": {0: st.mymax}}
        return Effect(*_sent(cfg, scn, out), {}, {k: v for k, v in cells.items() if k in scn.registers})
    before = p4lb_state(scn)
    after, out = p4lb_packet(cfg, P4LB, before, pkt)
    drops = {i: a - b for i, (a, b) in enumerate(zip(after.lb_drops, before.lb_drops, strict=True)) if a != b}
    flows = {b: c - before.backend_flows.get(b, 0) for b, c in after.backend_flows.items() if c != before.backend_flows.get(b, 0)}
    opened = signed_changes(before.backend_open, after.backend_open, 32)
    regs: dict[str, dict[int, int]] = {"rr_next": {0: after.rr_next[0], 1: after.rr_next[1]}, "idle_timeout": {0: cfg.idle_timeout_us}}
    for slot in scn.registers.get("flow_state", {}):
        e = after.flows.get(slot, FlowEntry())
        regs |= {"flow_state": {slot: int(e.state)}, "flow_key": {slot: e.key}, "flow_backend": {slot: e.backend}, "flow_last_seen": {slot: e.last_seen}}
    return Effect(*_sent(cfg, scn, out), {"lb_drops": drops, "backend_flows": flows, "backend_open": opened}, {k: v for k, v in regs.items() if k in scn.registers})


def predict_claim(prog: Program, scn: Scenario) -> Effect:
    """A class-(b) packet: what the equivalence claims (registers unchanged, no backend, at most MALFORMED counted)."""
    counters: dict[str, dict[int, int]] = {name: {} for name in (*COUNTERS[scn.program], *CHANGES[scn.program])}
    if scn.program == "p4lb" and "ipv4.version" in scn.frame.fields and not _ipv4_checksum_ok(prog, scn):
        f = scn.frame.fields
        to_vip = "tcp.dstPort" in f and (f.get("ipv4.dstAddr"), f.get("tcp.dstPort")) == (scn.cfg().vip, scn.cfg().vip_port)
        counters["lb_drops" if to_vip else "bad_checksum"] = {REPLAY_SERVICE * 8 + int(DropReason.MALFORMED) if to_vip else 0: 1}
    eth, ip = scn.frame.fields.get("ethernet.dstAddr", 0), scn.frame.fields.get("ipv4.dstAddr", 0)
    return Effect(False, None, eth, ip, counters, {k: dict(v) for k, v in scn.registers.items()})


def _ipv4_checksum_ok(prog: Program, scn: Scenario) -> bool:
    """The frame's IPv4 header checksum is right (what the program verifies); False if it carries no IPv4."""
    if scn.frame.get("ethernet.etherType") != 0x0800:
        return True  # no IPv4 header parsed: nothing verified
    data = scn.frame.data[14:34]
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, 20, 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


# ---- the comparison table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One field: what the model, the JSON and (if replayed) BMv2 say, as text."""

    name: str
    model: str
    json: str
    bmv2: str | None = None

    @property
    def differs(self) -> bool:
        """The model and the JSON disagree on this field."""
        return self.model != self.json

    def agrees(self) -> str:
        """Which of the model and the JSON BMv2 agrees with: both, model, JSON or neither."""
        if self.bmv2 is None:
            return ""
        m, j = self.bmv2 == self.model, self.bmv2 == self.json
        return "both" if m and j else "model" if m else "JSON" if j else "neither"


def _egress(scn: Scenario, e: Effect, claim: bool) -> str:
    cfg = scn.cfg()
    ports = {b.port: b.id for b in cfg.backends}
    if claim:
        return "to a backend" if not e.dropped and e.egress_port in ports else "not to a backend"
    if e.dropped:
        return "dropped"
    return f"port {e.egress_port}" + (f" (backend {ports[e.egress_port]})" if e.egress_port in ports else "")


def _counter(name: str, incs: Mapping[int, int]) -> str:
    if not incs:
        return "none"
    label = (lambda i: DropReason(i).name if i in DropReason._value2member_map_ else str(i)) if name == "lb_drops" else str
    return ", ".join(f"{label(i)} {c:+d}" for i, c in sorted(incs.items()))


def _mac(v: int) -> str:
    return ":".join(f"{b:02x}" for b in v.to_bytes(6, "big"))


def _register(scn: Scenario, name: str, i: int, v: int | None) -> str:
    if v is None:
        return "?"
    if name == "flow_last_seen" and v != scn.register(name, i) and v == scn.time_us:
        return f"t ({v})"
    return f"unchanged ({v})" if v == scn.register(name, i) else str(v)


def rows(scn: Scenario, model: Effect, js: Effect, bmv2: Effect | None = None, claim: bool = False) -> list[Row]:
    """The fields side by side (flow_last_seen as "t" when it took the packet's time)."""

    def row(name: str, render: Any) -> Row:
        return Row(name, render(model), render(js), render(bmv2) if bmv2 is not None else None)

    def dst(get: Any, show: Any) -> Any:
        return lambda e: "-" if e.dropped else ("unchanged" if get(e) == get(_input(scn)) else show(get(e)))

    out = [row("egress", lambda e: _egress(scn, e, claim))]
    if not claim:
        out += [row("eth.dstAddr", dst(lambda e: e.eth_dst, _mac)), row("ipv4.dstAddr", dst(lambda e: e.ip_dst, ip_str))]
    for name in (*COUNTERS[scn.program], *CHANGES[scn.program]):
        out.append(row(name, lambda e, n=name: _counter(n, e.counters.get(n, {}))))
    for name, cells in scn.registers.items():
        for i in cells:
            out.append(row(f"{name}[{i}]", lambda e, n=name, i=i: _register(scn, n, i, e.registers.get(n, {}).get(i))))
    return out


def _input(scn: Scenario) -> Effect:
    """The packet as it came in (for "unchanged" destinations)."""
    return Effect(False, 0, scn.frame.fields.get("ethernet.dstAddr", 0), scn.frame.fields.get("ipv4.dstAddr", 0), {}, {})


def table_text(rs: Sequence[Row]) -> str:
    """The rows as a fixed-width table: field | model says | JSON (Z3) says | BMv2 did | BMv2 agrees with."""
    replayed = any(r.bmv2 is not None for r in rs)
    head = ["field", "model says", "JSON (Z3) says"] + (["BMv2 did", "BMv2 agrees with"] if replayed else [])
    body = [[r.name + (" *" if r.differs else ""), r.model, r.json] + ([r.bmv2 or "", r.agrees()] if replayed else []) for r in rs]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]


    def line(cells: list[str]) -> str:
        return "  " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(head), "  " + "-+-".join("-" * w for w in widths), *[line(b) for b in body]])
