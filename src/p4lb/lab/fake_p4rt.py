"""An in-process P4Runtime server that runs p4lb.p4 as the executable model: BMv2's contract without BMv2.

`ModelDevice` is the switch: the pipeline pushed to it (its P4Info; the BMv2 JSON is kept as bytes), the table
entries written to it, and per service (the vip entry's lb_select(service, version), the first key of rr_group and
rr_member) a `P4lbState` slice the entries are mirrored into (version, the versions' groups, rr_next, lb_drops,
backend_flows), beside the state every service shares (the flow table, backend_open by service*256 + backend). PacketOuts on the CPU port run p4lb.p4's register protocol against that state and are answered
with PacketIns exactly as the P4 program answers them; `inject` sends a client packet through the model.

`FakeP4Runtime` serves it over gRPC on 127.0.0.1 (port 0: ephemeral) with master arbitration (election ids,
primary and backups, PERMISSION_DENIED "Not primary" for writes from anyone else), BMv2's limits (no register
reads or writes over P4Runtime) and injectable faults: failed calls (e.g. UNAVAILABLE), a hung switch (calls
that never return, PacketOuts never answered), delayed answers, dropped streams and a restart (pipeline gone).
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import json
import logging
import queue
import signal
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, TypeAlias

import grpc
from google.rpc import code_pb2, status_pb2
from p4.config.v1 import p4info_pb2
from p4.v1 import p4runtime_pb2, p4runtime_pb2_grpc

from p4lb.model.config import SERVICES, Backend, LbConfig
from p4lb.model.ops import Target, Write
from p4lb.model.p4lb import FREE, OPEN_PER_SERVICE, P4LB, P4lbState, p4lb_packet, p4lb_write
from p4lb.model.packet import DropReason, Fate, Outcome, Packet, dropped, to_backend

log = logging.getLogger(__name__)

API_VERSION = "1.3.0"
SCAN_WIDTH = 64  # p4lb.p4: slots per CPU_SCAN answer
SCAN_SLOT = struct.Struct("!BB7s6s")  # one entry of p4lb.p4 flow_scan_t: flow_state, flow_backend, flow_key (bit<56>), flow_last_seen
OPEN_WIDTH = 64  # p4lb.p4: backend_open cells per CPU_OPEN answer
OPEN_CELLS = SERVICES * OPEN_PER_SERVICE  # p4lb.p4: backend_open has a cell per (service, 8-bit backend id)
DROP_REASONS = 8  # p4lb.p4: lb_drops index service * 8 + reason
OPEN_CELL = struct.Struct("!I")  # one entry of p4lb.p4 open_count_t
MASK48 = (1 << 48) - 1
MASK56 = (1 << 56) - 1
MASK32 = (1 << 32) - 1
SYNTHETIC_BACKENDS = 128  # the model is run with every backend id valid; the `backend` table decides (as in P4)


MAX_MESSAGE_BYTES = 64 << 20  # a pipeline push carries the whole BMv2 JSON


class CpuOp(enum.IntEnum):
    """cpu_out.op in p4lb.p4."""

    READ = 1
    WRITE_RR_NEXT = 2
    WRITE_TIMEOUT = 3
    SCAN = 4
    OPEN = 5


class Table(enum.Enum):
    """The p4lb tables the controller writes (P4Info name suffixes)."""

    VIP = "vip"
    RR_GROUP = "rr_group"
    RR_MEMBER = "rr_member"
    BACKEND = "backend"
    FORWARD = "forward"
    SEND_FRAME = "send_frame"


class Rpc(enum.Enum):
    """What a fault can be aimed at."""

    WRITE = "Write"
    READ = "Read"
    SET_PIPELINE = "SetForwardingPipelineConfig"
    GET_PIPELINE = "GetForwardingPipelineConfig"
    CAPABILITIES = "Capabilities"
    ARBITRATION = "MasterArbitrationUpdate"
    PACKET_OUT = "PacketOut"
    PACKET_IN = "PacketIn"  # the switch's answer to a PacketOut


# p4lb.p4's default actions (P4Info does not carry them): table -> (action, params)
DEFAULT_ACTIONS: Mapping[Table, tuple[str, tuple[tuple[str, int], ...]]] = MappingProxyType(
    {Table.RR_GROUP: ("set_group", (("size", 0),)), Table.RR_MEMBER: ("set_member", (("backend", 0),)), Table.FORWARD: ("drop", ())}
)
COUNTERS = ("lb_drops", "backend_flows", "bad_checksum")

# A P4Info table, action, counter, register or controller header: p4info_pb2 messages, which have no type stubs
P4InfoObject = Any
EntryKey = tuple[tuple[int, int, int], ...]  # (field id, value, prefix length) per match field, by field id


class P4Error(Exception):
    """A request the switch refuses: a gRPC/P4Runtime status code and a message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Row:
    """A table entry decoded: match field name -> value (or (value, prefix_len) for LPM), action, parameters."""

    match: Mapping[str, int | tuple[int, int]]
    action: str
    params: Mapping[str, int]

    def exact(self, name: str) -> int:
        """The value of an exact match field (TypeError for an LPM one)."""
        value = self.match[name]
        if isinstance(value, tuple):
            raise TypeError(f"{name} is an LPM match field, not an exact one")
        return value


@dataclass(frozen=True)
class Pipeline:
    """A pushed p4lb program: its P4Info, the BMv2 JSON as given, and the objects the device needs by id."""

    info: p4info_pb2.P4Info
    device_config: bytes
    cookie: int
    objects: Mapping[int, P4InfoObject]  # P4Info id -> table / action / counter / register / controller header
    tables: Mapping[int, Table]
    counters: Mapping[int, str]
    packet_out: Mapping[int, str]  # metadata id -> name
    packet_in: Mapping[str, tuple[int, int]]  # name -> (metadata id, bitwidth)
    flow_slots: int

    def table_id(self, table: Table) -> int:
        """The P4Info id of a p4lb table."""
        return next(tid for tid, t in self.tables.items() if t is table)

    def action_id(self, name: str) -> int:
        """The P4Info id of an action by its short name."""
        aid: int = next(a.preamble.id for a in self.info.actions if _short(a.preamble.name) == name)
        return aid


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _int(data: bytes) -> int:
    return int.from_bytes(data, "big") if data else 0


def _bytes(value: int) -> bytes:
    """P4Runtime's canonical bytestring of a non-negative integer."""
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def load_pipeline(config: p4runtime_pb2.ForwardingPipelineConfig) -> Pipeline:
    """Check that a pushed config is p4lb's (P4Info names, BMv2 JSON parses) and index it; P4Error if not."""
    info = config.p4info
    try:
        json.loads(config.p4_device_config or b"{}")
    except ValueError as exc:
        raise P4Error(grpc.StatusCode.INVALID_ARGUMENT, f"p4_device_config is not BMv2 JSON: {exc}") from None
    by_short = {(kind, _short(o.preamble.name)): o for kind in ("tables", "counters", "registers", "controller_packet_metadata") for o in getattr(info, kind)}
    missing = [f"{k[:-1]} {n}" for k, n in [("tables", t.value) for t in Table] + [("counters", c) for c in COUNTERS] + [("registers", "flow_state"), ("controller_packet_metadata", "packet_out"), ("controller_packet_metadata", "packet_in")] if (k, n) not in by_short]
    if missing:
        raise P4Error(grpc.StatusCode.INVALID_ARGUMENT, f"this fake switch runs p4lb.p4 only; the P4Info lacks {', '.join(missing)}")
    objects = {o.preamble.id: o for kind in ("tables", "actions", "counters", "registers", "controller_packet_metadata") for o in getattr(info, kind)}
    pin = by_short[("controller_packet_metadata", "packet_in")]
    return Pipeline(
        info=info,
        device_config=bytes(config.p4_device_config),
        cookie=config.cookie.cookie,
        objects=MappingProxyType(objects),
        tables=MappingProxyType({by_short[("tables", t.value)].preamble.id: t for t in Table}),
        counters=MappingProxyType({by_short[("counters", c)].preamble.id: c for c in COUNTERS}),
        packet_out=MappingProxyType({m.id: m.name for m in by_short[("controller_packet_metadata", "packet_out")].metadata}),
        packet_in=MappingProxyType({m.name: (m.id, m.bitwidth) for m in pin.metadata}),
        flow_slots=int(by_short[("registers", "flow_state")].size),
    )


class ModelDevice:
    """The switch: pipeline, table entries and the model state they drive; thread-safe."""

    def __init__(self, clock_us: Callable[[], int] | None = None) -> None:
        self._lock = threading.RLock()
        start = time.monotonic()
        self._clock = clock_us or (lambda: int((time.monotonic() - start) * 1e6))
        self._offset_us = 0
        self.reset()

    # ---- pipeline ------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Power-on: no pipeline, no entries, every register and counter zero."""
        with self._lock:
            self.pipeline: Pipeline | None = None
            self._entries: dict[Table, dict[EntryKey, p4runtime_pb2.TableEntry]] = {t: {} for t in Table}
            self._defaults: dict[Table, p4runtime_pb2.TableEntry] = {}
            self._shared = P4lbState()  # what every service shares: flows, backend_open (by cell), now
            self._slices: dict[int, P4lbState] = {}  # service -> its version, groups, rr_next, lb_drops, backend_flows
            self._idle_timeout = 0

    def set_pipeline(self, config: p4runtime_pb2.ForwardingPipelineConfig, action: int) -> None:
        """SetForwardingPipelineConfig: VERIFY checks only; the commits install it and empty tables and registers
        (RECONCILE_AND_COMMIT of the running P4Info keeps them)."""
        req = p4runtime_pb2.SetForwardingPipelineConfigRequest
        pipeline = load_pipeline(config)
        if action in (req.VERIFY, req.VERIFY_AND_SAVE):
            return
        if action not in (req.VERIFY_AND_COMMIT, req.RECONCILE_AND_COMMIT, req.COMMIT):
            raise P4Error(grpc.StatusCode.INVALID_ARGUMENT, f"pipeline action {action} is not supported")
        with self._lock:
            keep = action == req.RECONCILE_AND_COMMIT and self.pipeline is not None and self.pipeline.info == pipeline.info
            if not keep:
                self.reset()
            self.pipeline = pipeline
            self._defaults = {t: self._default_entry(pipeline, t) for t in Table}
            self._sync()

    def _default_entry(self, pipeline: Pipeline, table: Table) -> p4runtime_pb2.TableEntry:
        action, params = DEFAULT_ACTIONS.get(table, ("NoAction", ()))
        te = p4runtime_pb2.TableEntry(table_id=pipeline.table_id(table), is_default_action=True)
        te.action.action.action_id = pipeline.action_id(action)
        act = pipeline.objects[te.action.action.action_id]
        ids = {p.name: p.id for p in act.params}
        for name, value in params:
            te.action.action.params.add(param_id=ids[name], value=_bytes(value))
        return te

    def _need_pipeline(self) -> Pipeline:
        if self.pipeline is None:
            raise P4Error(grpc.StatusCode.FAILED_PRECONDITION, "no forwarding pipeline config set for this device")
        return self.pipeline

    # ---- writes --------------------------------------------------------------------------------------------
    def write(self, updates: Iterable[p4runtime_pb2.Update]) -> list[tuple[int, str]]:
        """Apply a batch (CONTINUE_ON_ERROR): one (google.rpc code, message) per update, OK for those applied."""
        with self._lock:
            self._need_pipeline()
            results: list[tuple[int, str]] = []
            for update in updates:
                try:
                    self._write_one(update)
                    results.append((code_pb2.OK, ""))
                except P4Error as exc:
                    results.append((exc.code.value[0], exc.message))
            self._sync()
            return results

    def _write_one(self, update: p4runtime_pb2.Update) -> None:
        kind = update.entity.WhichOneof("entity")
        if kind != "table_entry":
            raise P4Error(grpc.StatusCode.UNIMPLEMENTED, f"{kind} writes are not supported (BMv2: registers only through the CPU port)")
        te = update.entity.table_entry
        table = self._table(te.table_id)
        if te.is_default_action:
            if update.type != p4runtime_pb2.Update.MODIFY:
                raise P4Error(grpc.StatusCode.INVALID_ARGUMENT, "the default entry can only be modified")
            self._check_action(te)
            self._defaults[table] = _copy(te)
            return
        key = self._key(te)
        entries = self._entries[table]
        if update.type == p4runtime_pb2.Update.INSERT and key in entries:
            raise P4Error(grpc.StatusCode.ALREADY_EXISTS, f"{table.value}: match key already exists")
        if update.type in (p4runtime_pb2.Update.MODIFY, p4runtime_pb2.Update.DELETE) and key not in entries:
            raise P4Error(grpc.StatusCode.NOT_FOUND, f"{table.value}: no entry with this match key")
        if update.type == p4runtime_pb2.Update.DELETE:
            del entries[key]
            return
        if update.type not in (p4runtime_pb2.Update.INSERT, p4runtime_pb2.Update.MODIFY):
            raise P4Error(grpc.StatusCode.INVALID_ARGUMENT, f"update type {update.type} is not INSERT, MODIFY or DELETE")
        self._check_action(te)
        if update.type == p4runtime_pb2.Update.INSERT and len(entries) >= self._need_pipeline().objects[te.table_id].size:
            raise P4Error(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{table.value} is full")
        entries[key] = _copy(te)

    def _table(self, table_id: int) -> Table:
        table = self._need_pipeline().tables.get(table_id)
        if table is None:
            raise P4Error(grpc.StatusCode.NOT_FOUND, f"no table with id {table_id}")
        return table

    def _key(self, te: p4runtime_pb2.TableEntry) -> EntryKey:
        """The entry's match as a canonical key (field id, value, prefix length); P4Error if it is not valid."""
        fields = {mf.id: mf for mf in self._need_pipeline().objects[te.table_id].match_fields}
        key = {}
        for fm in te.match:
            mf = fields.get(fm.field_id)
            if mf is None or fm.field_id in key:
                raise P4Error(grpc.StatusCode.INVALID_ARGUMENT, f"match field id {fm.field_id} is unknown or repeated")
            key[fm.field_id] = self._field_key(mf, fm)
        for mf in fields.values():
            if mf.id not in key:
                if mf.match_type != p4info_pb2.MatchField.LPM:
                    raise P4Error(grpc.StatusCode.INVALID_ARGUMENT, f"exact match field {mf.name} is missing")
                key[mf.id] = (0, 0)  # an omitted LPM field is the /0 wildcard
        return tuple(sorted((fid, *v) for fid, v in key.items()))

    @staticmethod
    def _field_key(mf: p4info_pb2.MatchField, fm: p4runtime_pb2.FieldMatch) -> tuple[int, int]:
        kind = fm.WhichOneof("field_match_type")
        if kind == "exact" and mf.match_type == p4info_pb2.MatchField.EXACT:
            value, plen = _int(fm.exact.value), mf.bitwidth
        elif kind == "lpm" and mf.match_type == p4info_pb2.MatchField.LPM:
            value, plen = _int(fm.lpm.value), fm.lpm.prefix_len
            if not 0 < plen <= mf.bitwidth or value & ((1 << (mf.bitwidth - plen)) - 1):
                raise P4Error(grpc.StatusCode.INVALID_ARGUMENT, f"{mf.name}: bad prefix /{plen} or host bits set")
        else:
            raise P4Error(grpc.StatusCode.INVALID_ARGUMENT, f"{mf.name}: {kind} match on a field that is not {kind}")
        if value >> mf.bitwidth:
            raise P4Error(grpc.StatusCode.OUT_OF_RANGE, f"{mf.name} = {value} does not fit bit<{mf.bitwidth}>")
        return value, plen

    def _check_action(self, te: p4runtime_pb2.TableEntry) -> None:
        pipeline = self._need_pipeline()
        if te.action.WhichOneof("type") != "action":
            raise P4Error(grpc.StatusCode.INVALID_ARGUMENT, "only direct actions are supported")
        action = te.action.action
        if action.action_id not in {ref.id for ref in pipeline.objects[te.table_id].action_refs}:
            raise P4Error(grpc.StatusCode.INVALID_ARGUMENT, f"action id {action.action_id} is not an action of this table")
        declared = {p.id: p for p in pipeline.objects[action.action_id].params}
        given = {p.param_id: _int(p.value) for p in action.params}
        if set(given) != set(declared) or len(given) != len(action.params):
            raise P4Error(grpc.StatusCode.INVALID_ARGUMENT, f"action parameters {sorted(given)} are not {sorted(declared)}")
        for pid, value in given.items():
            if value >> declared[pid].bitwidth:
                raise P4Error(grpc.StatusCode.OUT_OF_RANGE, f"parameter {declared[pid].name} = {value} does not fit bit<{declared[pid].bitwidth}>")

    # ---- the model mirror ----------------------------------------------------------------------------------
    def rows(self, table: Table) -> list[Row]:
        """The entries of a table, decoded."""
        with self._lock:
            return [self._row(te) for te in self._entries[table].values()]

    def _row(self, te: p4runtime_pb2.TableEntry) -> Row:
        objects = self._need_pipeline().objects
        names = {mf.id: mf.name for mf in objects[te.table_id].match_fields}
        match = {}
        for fm in te.match:
            kind = fm.WhichOneof("field_match_type")
            match[names[fm.field_id]] = (_int(fm.lpm.value), fm.lpm.prefix_len) if kind == "lpm" else _int(fm.exact.value)
        act = objects[te.action.action.action_id]
        pnames = {p.id: p.name for p in act.params}
        return Row(MappingProxyType(match), _short(act.preamble.name), MappingProxyType({pnames[p.param_id]: _int(p.value) for p in te.action.action.params}))

    def _sync(self) -> None:
        """Mirror the vip, rr_group and rr_member entries (and defaults) into each service's model slice."""
        if self.pipeline is None:
            return
        versions: dict[int, int] = {}
        for r in self.rows(Table.VIP):
            if r.action == "lb_select":
                versions.setdefault(r.params["service"], r.params["version"])
        default_size = self._row(self._defaults[Table.RR_GROUP]).params.get("size", 0)
        sizes = {(r.exact("meta.lb.service"), r.exact("meta.lb.version")): r.params["size"] for r in self.rows(Table.RR_GROUP)}
        default_member = self._row(self._defaults[Table.RR_MEMBER]).params.get("backend", 0)
        members: dict[int, dict[tuple[int, int], int]] = {}
        for r in self.rows(Table.RR_MEMBER):
            members.setdefault(r.exact("meta.lb.service"), {})[r.exact("meta.lb.version"), r.exact("meta.lb.position")] = r.params["backend"]
        for svc in set(self._slices) | set(versions) | {s for s, _ in sizes} | set(members):
            st = self._slices.get(svc, P4lbState())
            if svc in versions:
                st = p4lb_write(st, Write(Target.VIP, (), versions[svc]))
            rr_group = (sizes.get((svc, 0), default_size), sizes.get((svc, 1), default_size))
            mine = members.get(svc, {})
            if default_member:
                mine = {(v, i): mine.get((v, i), default_member) for v in (0, 1) for i in range(rr_group[v])} | mine
            self._slices[svc] = replace(st, rr_group=rr_group, rr_member=mine)

    def _slice(self, service: int) -> P4lbState:
        """A service's slice (its version, groups, rr_next, lb_drops, backend_flows); zero if it has none yet."""
        return self._slices.get(service, P4lbState())

    def state_of(self, service: int) -> P4lbState:
        """The model state of one service: its slice with the shared flow table, backend_open (every service's
        cells, service*256 + backend) and clock."""
        with self._lock:
            sh = self._shared
            return replace(self._slice(service), flows=sh.flows, backend_open=sh.backend_open, now=sh.now)

    def _store(self, service: int, st: P4lbState) -> None:
        """Split a service's model state back into its slice and the shared part."""
        self._slices[service] = replace(st, flows={}, backend_open={}, now=0)
        self._shared = replace(self._shared, flows=st.flows, backend_open=st.backend_open, now=st.now)

    def services(self) -> tuple[int, ...]:
        """The services that have a vip entry (lb_select), in id order."""
        with self._lock:
            if self.pipeline is None:
                return ()
            return tuple(sorted({r.params["service"] for r in self.rows(Table.VIP) if r.action == "lb_select"}))

    @property
    def state(self) -> P4lbState:
        """The model state of the first service (lowest id with a vip entry; 0 if none): see state_of."""
        with self._lock:
            return self.state_of(next(iter(self.services()), 0))

    @property
    def idle_timeout_us(self) -> int:
        """The idle_timeout register."""
        with self._lock:
            return self._idle_timeout

    @property
    def deployed(self) -> bool:
        """A vip entry exists (lb_select): the balancer is live."""
        with self._lock:
            return self.pipeline is not None and any(r.action == "lb_select" for r in self.rows(Table.VIP))

    def now_us(self) -> int:
        """ingress_global_timestamp: microseconds since power-on (never behind the last packet's time)."""
        with self._lock:
            return max(self._clock() + self._offset_us, self._shared.now)

    def advance(self, us: int) -> None:
        """Move the switch clock forward (to age flows past the idle timeout)."""
        with self._lock:
            self._offset_us += us

    # ---- reads ---------------------------------------------------------------------------------------------
    def read(self, entity: p4runtime_pb2.Entity) -> list[p4runtime_pb2.Entity]:
        """The entities a Read of `entity` returns (table entries, default entries, counter cells)."""
        with self._lock:
            pipeline = self._need_pipeline()
            kind = entity.WhichOneof("entity")
            if kind == "table_entry":
                return [p4runtime_pb2.Entity(table_entry=te) for te in self._read_table(pipeline, entity.table_entry)]
            if kind == "counter_entry":
                return [p4runtime_pb2.Entity(counter_entry=ce) for ce in self._read_counter(pipeline, entity.counter_entry)]
            raise P4Error(grpc.StatusCode.UNIMPLEMENTED, f"{kind} reads are not supported (BMv2: registers only through the CPU port)")

    def _read_table(self, pipeline: Pipeline, want: p4runtime_pb2.TableEntry) -> list[p4runtime_pb2.TableEntry]:
        tables = [self._table(want.table_id)] if want.table_id else list(Table)
        if want.is_default_action:
            return [self._defaults[t] for t in tables]
        if want.match:
            key = self._key(want)
            return [te for te in [self._entries[tables[0]].get(key)] if te is not None]
        return [te for t in tables for te in self._entries[t].values()]

    def _read_counter(self, pipeline: Pipeline, want: p4runtime_pb2.CounterEntry) -> list[p4runtime_pb2.CounterEntry]:
        ids = [want.counter_id] if want.counter_id else list(pipeline.counters)
        out = []
        for cid in ids:
            name = pipeline.counters.get(cid)
            if name is None:
                raise P4Error(grpc.StatusCode.NOT_FOUND, f"no counter with id {cid}")
            cells = self._counter_cells(name, pipeline.objects[cid].size)
            indexes = [want.index.index] if want.HasField("index") else range(len(cells))
            for i in indexes:
                if not 0 <= i < len(cells):
                    raise P4Error(grpc.StatusCode.OUT_OF_RANGE, f"{name} has no cell {i}")
                out.append(p4runtime_pb2.CounterEntry(counter_id=cid, index=p4runtime_pb2.Index(index=i), data=p4runtime_pb2.CounterData(packet_count=cells[i])))
        return out

    def _counter_cells(self, name: str, size: int) -> list[int]:
        """Every cell of a counter: lb_drops service*8 + reason, backend_flows service*256 + backend (bad_checksum:
        no packet the fake takes has a bad checksum)."""
        cells = [0] * size
        for svc, st in self._slices.items():
            if name == "lb_drops":
                for reason, c in enumerate(st.lb_drops[:DROP_REASONS]):
                    if svc * DROP_REASONS + reason < size:
                        cells[svc * DROP_REASONS + reason] = c
            elif name == "backend_flows":
                for b, c in st.backend_flows.items():
                    if 0 <= b < OPEN_PER_SERVICE and svc * OPEN_PER_SERVICE + b < size:
                        cells[svc * OPEN_PER_SERVICE + b] = c
        return cells

    # ---- the CPU port --------------------------------------------------------------------------------------
    def packet_out(self, packet: p4runtime_pb2.PacketOut) -> p4runtime_pb2.PacketIn | None:
        """A PacketOut on the CPU port: p4lb.p4's register access, answered with the PacketIn it sends (or None)."""
        with self._lock:
            pipeline = self._need_pipeline()
            fields = {pipeline.packet_out.get(m.metadata_id, f"#{m.metadata_id}"): _int(m.value) for m in packet.metadata}
            answer = self._cpu(fields, bytes(packet.payload))
            if answer is None:
                return None
            meta, payload = answer
            pin = p4runtime_pb2.PacketIn(payload=payload)
            for name, (mid, width) in pipeline.packet_in.items():
                pin.metadata.add(metadata_id=mid, value=_bytes(meta.get(name, 0) & ((1 << width) - 1)))
            return pin

    def _cpu(self, fields: Mapping[str, int], payload: bytes) -> tuple[dict[str, int], bytes] | None:
        op, index, value = fields.get("op", 0), fields.get("index", 0) & MASK32, fields.get("value", 0) & MASK48
        svc = fields.get("service", 0) & 0xFF
        head = {"op": op, "service": svc, "index": index, "value": value}
        slots = self._need_pipeline().flow_slots
        if op == CpuOp.SCAN:
            need = SCAN_WIDTH * SCAN_SLOT.size
            if len(payload) < need:
                return None  # p4lb.p4: a scan request too short to fill is dropped
            base = ((index * SCAN_WIDTH) & MASK32) & (slots - 1)
            body = b"".join(self._scan_slot((base + i) & (slots - 1)) for i in range(SCAN_WIDTH))  # a table smaller than a scan wraps round (p4lb.p4)
            return head | self._globals(svc), body + payload[need:]
        if op == CpuOp.OPEN:
            need = OPEN_WIDTH * OPEN_CELL.size
            if len(payload) < need:
                return None  # p4lb.p4: a count request too short to fill is dropped
            first = (index * OPEN_WIDTH) & (OPEN_CELLS - 1)
            body = b"".join(OPEN_CELL.pack(self._shared.backend_open.get(first + i, 0) & MASK32) for i in range(OPEN_WIDTH))
            return head | self._globals(svc), body + payload[need:]
        if op == CpuOp.WRITE_RR_NEXT:
            self._slices[svc] = p4lb_write(self._slice(svc), Write(Target.RR_NEXT, (index & 1,), value & 0xFF))
        elif op == CpuOp.WRITE_TIMEOUT:
            self._idle_timeout = value
        e = self._shared.flows.get(index & (slots - 1), FREE)
        slot = {"flow_state": int(e.state), "flow_key": e.key & MASK56, "flow_backend": e.backend & 0xFF, "flow_last_seen": e.last_seen & MASK48}
        return head | slot | self._globals(svc), payload

    def _scan_slot(self, slot: int) -> bytes:
        e = self._shared.flows.get(slot, FREE)
        return SCAN_SLOT.pack(int(e.state), e.backend & 0xFF, (e.key & MASK56).to_bytes(7, "big"), (e.last_seen & MASK48).to_bytes(6, "big"))

    def _globals(self, service: int) -> dict[str, int]:
        """What every CPU-port answer carries: the request's service's rr_next cells, idle_timeout, the clock."""
        st = self._slice(service)
        return {"rr_next0": st.rr_next[0], "rr_next1": st.rr_next[1], "idle_timeout": self._idle_timeout, "now": self.now_us() & MASK48}

    # ---- the data plane ------------------------------------------------------------------------------------
    def inject(self, pkt: Packet) -> Outcome:
        """A client's TCP packet to the VIP:port of its service (pkt.service: the vip entry whose lb_select names it)
        through the model; as p4lb.p4, a chosen backend without a `backend` entry of the service is dropped and
        counted as NO_BACKEND_ENTRY. A packet without time is stamped now."""
        with self._lock:
            vips = [r for r in self.rows(Table.VIP) if r.action == "lb_select" and r.params["service"] == pkt.service]
            if not vips:
                raise P4Error(grpc.StatusCode.FAILED_PRECONDITION, f"no vip entry of service {pkt.service}: that service is not deployed")
            cfg = self._lb_config(vips[0].exact("hdr.ipv4.dstAddr"), vips[0].exact("hdr.tcp.dstPort"), pkt.service)
            stamped = pkt if pkt.time_us else replace(pkt, time_us=self.now_us())
            st, out = p4lb_packet(cfg, P4LB, self.state_of(pkt.service), stamped)
            if out.fate is Fate.BACKEND and out.backend not in {r.exact("meta.lb.backend") for r in self.rows(Table.BACKEND) if r.action == "set_backend" and r.exact("meta.lb.service") == pkt.service}:
                drops = list(st.lb_drops)
                drops[DropReason.NO_BACKEND_ENTRY] += 1
                st = replace(st, lb_drops=tuple(drops))
                out = dropped(DropReason.NO_BACKEND_ENTRY)
            self._store(pkt.service, st)
            if out.fate is not Fate.BACKEND:
                return out  # dropped (the model counts a backend id outside 1..N as NO_BACKEND_ENTRY itself)
            return to_backend(out.backend, out.admitted)

    def _lb_config(self, vip: int, vip_port: int, service: int = 0) -> LbConfig:
        """The model's parameters as the switch holds them: VIP, service, flow slots, idle_timeout register."""
        backends = tuple(Backend(i, 0xC6120000 + i, i, i + 1) for i in range(1, SYNTHETIC_BACKENDS + 1))  # 198.18.0.0/15, never a VIP
        bits = self._need_pipeline().flow_slots.bit_length() - 1
        return LbConfig(vip=vip, vip_port=vip_port, backends=backends, idle_timeout_us=max(1, self._idle_timeout), flow_table_bits=bits, client_port=SYNTHETIC_BACKENDS + 2, service=service)


def _copy(te: p4runtime_pb2.TableEntry) -> p4runtime_pb2.TableEntry:
    out = p4runtime_pb2.TableEntry()
    out.CopyFrom(te)
    return out


# ---- the gRPC server -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Abort:
    """End a stream with an error."""

    code: grpc.StatusCode
    details: str


class _End(enum.Enum):
    """The stream is over (its requests ended or the RPC was cancelled)."""

    END = enum.auto()


_END = _End.END
_Outgoing: TypeAlias = "p4runtime_pb2.StreamMessageResponse | _Abort | _End"  # what a stream's queue carries


@dataclass(frozen=True, eq=False)
class _Session:
    """One StreamChannel: the messages waiting to be sent on it."""

    out: queue.Queue[_Outgoing] = field(default_factory=queue.Queue)


@dataclass
class _Faults:
    """The faults armed now (mutated under the server's lock only)."""

    failures: dict[Rpc, list[grpc.StatusCode]] = field(default_factory=dict)
    hung: set[Rpc] = field(default_factory=set)
    delays: dict[Rpc, float] = field(default_factory=dict)
    released: threading.Event = field(default_factory=threading.Event)


class FakeP4Runtime(p4runtime_pb2_grpc.P4RuntimeServicer):  # type: ignore[misc]  # generated gRPC code has no stubs: the base is Any
    """A P4Runtime server for one device running p4lb.p4 as the model; start() on 127.0.0.1, port 0 by default."""

    def __init__(self, device_id: int = 0, port: int = 0, clock_us: Callable[[], int] | None = None, workers: int = 32, tls: tuple[bytes, bytes] | None = None) -> None:
        self.device_id = device_id
        self.tls = tls  # (private key, certificate chain) PEM: serve TLS instead of plaintext
        self.device = ModelDevice(clock_us)
        self.port = port
        self.workers = workers
        self.calls: Counter[Rpc] = Counter()
        self.restarts = 0
        self._lock = threading.RLock()
        self._sessions: dict[_Session, tuple[int, int] | None] = {}
        self._faults = _Faults()
        self._server: grpc.Server | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """host:port to give P4rt / P4RuntimeSwitch."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeP4Runtime:
        """Listen on 127.0.0.1 (the same port again after a restart)."""
        # the multi-way p4lb.json is ~10 MB: above gRPC's default 4 MB receive limit (BMv2's server takes it)
        server = grpc.server(ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fake-p4rt"), options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
        p4runtime_pb2_grpc.add_P4RuntimeServicer_to_server(self, server)
        where = f"127.0.0.1:{self.port}"
        self.port = server.add_secure_port(where, grpc.ssl_server_credentials([self.tls])) if self.tls else server.add_insecure_port(where)
        if not self.port:
            raise OSError("fake P4Runtime server could not bind 127.0.0.1")
        server.start()
        self._server = server
        log.info("fake P4Runtime server on %s", self.address)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving: hung calls are released, open streams cancelled."""
        self.release()
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace=None).wait(timeout_s)
        with self._lock:
            self._sessions.clear()

    def restart(self, down_s: float = 0.0) -> None:
        """The switch process restarts: streams break, the pipeline, entries, registers and counters are gone."""
        self.stop()
        self.device.reset()
        self.restarts += 1
        time.sleep(down_s)
        self.start()

    def __enter__(self) -> FakeP4Runtime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- faults --------------------------------------------------------------------------------------------
    def fail(self, rpc: Rpc, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, times: int = 1) -> None:
        """The next `times` calls of `rpc` fail with `code` (for PACKET_OUT / ARBITRATION: the stream ends so)."""
        with self._lock:
            self._faults.failures.setdefault(rpc, []).extend([code] * times)

    def hang(self, *rpcs: Rpc) -> None:
        """Calls of these RPCs never return (PacketOuts are never answered) until release() or stop()."""
        with self._lock:
            if self._faults.released.is_set():
                self._faults.released = threading.Event()
            self._faults.hung.update(rpcs or tuple(Rpc))

    def release(self) -> None:
        """End a hang: held calls proceed."""
        with self._lock:
            self._faults.hung.clear()
            self._faults.released.set()

    def delay(self, seconds: float, *rpcs: Rpc) -> None:
        """Answer these RPCs (all when none given) `seconds` late; 0 clears."""
        with self._lock:
            for rpc in rpcs or tuple(Rpc):
                self._faults.delays[rpc] = seconds

    def clear_faults(self) -> None:
        """Disarm every fault."""
        self.release()
        with self._lock:
            self._faults.failures.clear()
            self._faults.delays.clear()

    def drop_streams(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        """End every open stream with an error: the switch forgets its controllers (and so its primary)."""
        with self._lock:
            sessions = list(self._sessions)
            self._sessions.clear()
        for s in sessions:
            s.out.put(_Abort(code, "stream dropped (injected fault)"))

    def _gate(self, rpc: Rpc, context: grpc.ServicerContext | None = None) -> grpc.StatusCode | None:
        """Apply the armed faults to one call: wait out a delay or a hang; abort (or return) an injected failure."""
        with self._lock:
            self.calls[rpc] += 1
            delay = self._faults.delays.get(rpc, 0.0)
            hung = rpc in self._faults.hung
            released = self._faults.released
            queued = self._faults.failures.get(rpc)
            code = queued.pop(0) if queued else None
        if delay:
            time.sleep(delay)
        if hung:
            log.info("fake switch: %s hung", rpc.value)
            released.wait()
        if code is not None and context is not None:
            context.abort(code, f"{code.name}: injected fault")
        return code

    # ---- arbitration ---------------------------------------------------------------------------------------
    @property
    def primary(self) -> tuple[int, int] | None:
        """The primary controller's election id, or None."""
        with self._lock:
            ids = [e for e in self._sessions.values() if e is not None]
            return max(ids) if ids else None

    @property
    def sessions(self) -> int:
        """Open streams."""
        with self._lock:
            return len(self._sessions)

    def _arbitrate(self, session: _Session, upd: p4runtime_pb2.MasterArbitrationUpdate) -> None:
        if self._gate(Rpc.ARBITRATION) is not None:
            session.out.put(_Abort(grpc.StatusCode.UNAVAILABLE, "arbitration failed (injected fault)"))
            return
        if upd.device_id != self.device_id:
            session.out.put(_Abort(grpc.StatusCode.NOT_FOUND, f"no device {upd.device_id} (this switch is device {self.device_id})"))
            return
        eid = (upd.election_id.high, upd.election_id.low)
        with self._lock:
            if any(e == eid for s, e in self._sessions.items() if s is not session):
                session.out.put(_Abort(grpc.StatusCode.INVALID_ARGUMENT, f"election id {eid} is already used by another controller"))
                return
            before = self.primary
            self._sessions[session] = eid
            after = self.primary
            for s in self._sessions if after != before else [session]:
                s.out.put(self._arbitration_message(s))
        log.info("fake switch: controller with election id %s arbitrated, primary is %s", eid, after)

    def _arbitration_message(self, session: _Session) -> p4runtime_pb2.StreamMessageResponse:
        primary = self.primary
        mine = self._sessions.get(session)
        code = code_pb2.OK if mine is not None and mine == primary else code_pb2.ALREADY_EXISTS if primary else code_pb2.NOT_FOUND
        msg = p4runtime_pb2.StreamMessageResponse()
        arb = msg.arbitration
        arb.device_id = self.device_id
        if primary is not None:
            arb.election_id.high, arb.election_id.low = primary
        arb.status.code = code
        arb.status.message = "primary" if code == code_pb2.OK else "backup"
        return msg

    def _leave(self, session: _Session) -> None:
        with self._lock:
            if session not in self._sessions:
                return
            before = self.primary
            del self._sessions[session]
            if self.primary != before:
                for s in self._sessions:
                    s.out.put(self._arbitration_message(s))

    def _is_primary(self, election_id: p4runtime_pb2.Uint128) -> bool:
        primary = self.primary
        return primary is not None and (election_id.high, election_id.low) == primary

    def _primary_session(self) -> _Session | None:
        with self._lock:
            primary = self.primary
            return next((s for s, e in self._sessions.items() if e is not None and e == primary), None)

    # ---- RPCs ----------------------------------------------------------------------------------------------
    def _check(self, device_id: int, context: grpc.ServicerContext) -> None:
        if device_id != self.device_id:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no device {device_id} (this switch is device {self.device_id})")

    def _primary_only(self, election_id: p4runtime_pb2.Uint128, context: grpc.ServicerContext) -> None:
        if not self._is_primary(election_id):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "Not primary")

    def Capabilities(self, request: p4runtime_pb2.CapabilitiesRequest, context: grpc.ServicerContext) -> p4runtime_pb2.CapabilitiesResponse:  # noqa: N802 (gRPC method name)
        """The P4Runtime API version."""
        self._gate(Rpc.CAPABILITIES, context)
        return p4runtime_pb2.CapabilitiesResponse(p4runtime_api_version=API_VERSION)

    def SetForwardingPipelineConfig(self, request: p4runtime_pb2.SetForwardingPipelineConfigRequest, context: grpc.ServicerContext) -> p4runtime_pb2.SetForwardingPipelineConfigResponse:  # noqa: N802
        """Install (or verify) the pipeline; primary only."""
        self._gate(Rpc.SET_PIPELINE, context)
        self._check(request.device_id, context)
        self._primary_only(request.election_id, context)
        try:
            self.device.set_pipeline(request.config, request.action)
        except P4Error as exc:
            context.abort(exc.code, exc.message)
        return p4runtime_pb2.SetForwardingPipelineConfigResponse()

    def GetForwardingPipelineConfig(self, request: p4runtime_pb2.GetForwardingPipelineConfigRequest, context: grpc.ServicerContext) -> p4runtime_pb2.GetForwardingPipelineConfigResponse:  # noqa: N802
        """The running pipeline (empty when none was pushed)."""
        self._gate(Rpc.GET_PIPELINE, context)
        self._check(request.device_id, context)
        rep = p4runtime_pb2.GetForwardingPipelineConfigResponse()
        pipeline = self.device.pipeline
        if pipeline is None:
            return rep
        kind = p4runtime_pb2.GetForwardingPipelineConfigRequest
        rep.config.cookie.cookie = pipeline.cookie
        if request.response_type in (kind.ALL, kind.P4INFO_AND_COOKIE):
            rep.config.p4info.CopyFrom(pipeline.info)
        if request.response_type in (kind.ALL, kind.DEVICE_CONFIG_AND_COOKIE):
            rep.config.p4_device_config = pipeline.device_config
        return rep

    def Write(self, request: p4runtime_pb2.WriteRequest, context: grpc.ServicerContext) -> p4runtime_pb2.WriteResponse:  # noqa: N802
        """Table writes, primary only; per-update errors come back as BMv2 sends them (UNKNOWN + p4.Error details)."""
        self._gate(Rpc.WRITE, context)
        self._check(request.device_id, context)
        self._primary_only(request.election_id, context)
        try:
            results = self.device.write(request.updates)
        except P4Error as exc:
            context.abort(exc.code, exc.message)
        if any(code != code_pb2.OK for code, _ in results):
            status = status_pb2.Status(code=code_pb2.UNKNOWN, message="Write failure.")
            for code, message in results:
                status.details.add().Pack(p4runtime_pb2.Error(canonical_code=code, message=message, space="p4lb-fake"))
            context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
            context.abort(grpc.StatusCode.UNKNOWN, "Write failure.")
        return p4runtime_pb2.WriteResponse()

    def Read(self, request: p4runtime_pb2.ReadRequest, context: grpc.ServicerContext) -> Iterator[p4runtime_pb2.ReadResponse]:  # noqa: N802
        """Table entries and counter cells (registers: UNIMPLEMENTED, as on BMv2)."""
        self._gate(Rpc.READ, context)
        self._check(request.device_id, context)
        rep = p4runtime_pb2.ReadResponse()
        try:
            for entity in request.entities:
                rep.entities.extend(self.device.read(entity))
        except P4Error as exc:
            context.abort(exc.code, exc.message)
        yield rep

    def StreamChannel(self, request_iterator: Iterator[p4runtime_pb2.StreamMessageRequest], context: grpc.ServicerContext) -> Iterator[p4runtime_pb2.StreamMessageResponse]:  # noqa: N802
        """Arbitration and packet I/O: requests are read on their own thread, answers queued to this one."""
        session = _Session()
        with self._lock:
            self._sessions[session] = None
        context.add_callback(lambda: session.out.put(_END))
        threading.Thread(target=self._read_stream, args=(session, request_iterator), name="fake-p4rt-stream", daemon=True).start()
        try:
            while True:
                item = session.out.get()
                if item is _END:
                    return
                if isinstance(item, _Abort):
                    context.abort(item.code, item.details)
                yield item
        finally:
            self._leave(session)

    def _read_stream(self, session: _Session, requests: Iterator[p4runtime_pb2.StreamMessageRequest]) -> None:
        try:
            for req in requests:
                kind = req.WhichOneof("update")
                if kind == "arbitration":
                    self._arbitrate(session, req.arbitration)
                elif kind == "packet":
                    self._packet_out(session, req.packet)
                else:
                    log.debug("fake switch: ignoring stream message %s", kind)
        except Exception as exc:  # the RPC was cancelled under us
            log.debug("fake switch: stream ended: %s", exc)
        finally:
            session.out.put(_END)

    def _packet_out(self, session: _Session, packet: p4runtime_pb2.PacketOut) -> None:
        if self._gate(Rpc.PACKET_OUT) is not None:
            session.out.put(_Abort(grpc.StatusCode.UNAVAILABLE, "stream broken (injected fault)"))
            return
        with self._lock:
            mine = self._sessions.get(session)
            primary = mine is not None and mine == self.primary
            hung = Rpc.PACKET_IN in self._faults.hung
        if not primary:
            session.out.put(_stream_error(packet, code_pb2.PERMISSION_DENIED, "Not primary"))
            return
        if hung:
            with self._lock:
                self.calls[Rpc.PACKET_IN] += 1
            log.info("fake switch: PacketIn withheld (hung)")
            return
        self._gate(Rpc.PACKET_IN)
        try:
            answer = self.device.packet_out(packet)
        except P4Error as exc:
            session.out.put(_stream_error(packet, exc.code.value[0], exc.message))
            return
        target = self._primary_session()
        if answer is not None and target is not None:
            target.out.put(p4runtime_pb2.StreamMessageResponse(packet=answer))


def _stream_error(packet: p4runtime_pb2.PacketOut, code: int, message: str) -> p4runtime_pb2.StreamMessageResponse:
    msg = p4runtime_pb2.StreamMessageResponse()
    msg.error.canonical_code = code
    msg.error.message = message
    msg.error.packet_out.packet_out.CopyFrom(packet)
    return msg


def main(argv: list[str] | None = None) -> int:
    """Serve a fake switch on 127.0.0.1 until SIGINT or SIGTERM: python -m p4lb.lab.fake_p4rt --port 9559."""
    parser = argparse.ArgumentParser(prog="python -m p4lb.lab.fake_p4rt", description="A P4Runtime server running p4lb.p4 as the executable model (127.0.0.1 only).")
    parser.add_argument("--port", type=int, default=9559, help="TCP port (0: any free one); default 9559")
    parser.add_argument("--device-id", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with FakeP4Runtime(args.device_id, args.port) as fake:
        print(f"fake P4Runtime switch (p4lb.p4 as the model) on {fake.address}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
