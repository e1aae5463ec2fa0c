"""The switch as the controller sees it: the model's writes in, table and register contents out.

Two implementations of one interface: `ModelSwitch` (the executable model; for tests and --dry-run) and
`P4RuntimeSwitch` (BMv2 through p4runtime-shell, whose global client is wrapped here and nowhere else).
"""

from __future__ import annotations

import copy
import logging
import struct
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from p4lb.controller.errors import ConfigFileError, GrpcCode, SwitchError
from p4lb.model.config import MAX_BACKENDS, P4LB_BUCKET, P4LB_WAYS, LbConfig
from p4lb.model.crc import ip_str
from p4lb.model.ops import Target, Write
from p4lb.model.p4lb import FREE, OPEN_PER_SERVICE, FlowEntry, P4lbState, SlotState, is_open, p4lb_write
from p4lb.model.packet import DropReason, key_service
from p4lb.p4 import entries

if TYPE_CHECKING:
    from p4lb.controller.p4rt import Entry, Key, P4rt, TableRow, Tls

log = logging.getLogger(__name__)

CPU_READ, CPU_WRITE_RR_NEXT, CPU_WRITE_TIMEOUT, CPU_SCAN, CPU_OPEN = 1, 2, 3, 4, 5  # cpu_out.op in p4/p4lb.p4
SCAN_WIDTH = 64  # slots per CPU_SCAN answer (p4/p4lb.p4)
SCAN_SLOT = struct.Struct("!BB7s6s")  # one entry of flow_scan_t: flow_state, flow_backend, flow_key (bit<56>), flow_last_seen (15 bytes)
SCAN_WINDOW = 64  # CPU_SCAN requests in flight
OPEN_WIDTH = 64  # backend_open cells per CPU_OPEN answer (p4/p4lb.p4)
OPEN_CELL = struct.Struct("!I")  # one entry of open_count_t: bit<32> count
OPEN_BLOCKS = OPEN_PER_SERVICE // OPEN_WIDTH  # CPU_OPEN blocks per service: service s's backends are blocks s*4 .. s*4+3
DROP_REASONS = 8  # lb_drops: index service * 8 + reason (p4/p4lb.p4)
BATCHED = frozenset({"rr_member", "rr_group"})  # table writes that may share one P4Runtime Write (staged version only)
TABLES = ("vip", "rr_group", "rr_member")  # the tables the controller writes, by the model's target names
VIP: tuple[str, tuple[int, ...]] = ("vip", ())
MODEL_LOG = 10_000  # writes the model switch remembers (a dry-run loop must not grow without bound)


@dataclass(frozen=True)
class SwitchView:
    """What the controller reads back: the committed version and both versions' groups."""

    version: int | None  # the committed version; None when no vip entry exists (not deployed)
    groups: tuple[tuple[int, ...], tuple[int, ...]]
    rr_next: tuple[int, int] = (0, 0)
    lb_drops: dict[str, int] = field(default_factory=dict)
    backend_flows: dict[int, int] = field(default_factory=dict)
    backend_open: dict[int, int] = field(default_factory=dict)  # the service's flow places OPEN per backend (open, or idle and not yet reclaimed)


@dataclass
class Shadow:
    """What one P4Runtime session knows the controller's tables hold: (target, index) -> value for entries known to
    exist (read back or written by us); an entry not listed may or may not exist. Void once the session's epoch
    moves: another session (the switch may have restarted), or another controller's arbitration (it may have written)."""

    epoch: tuple[int, int] = (-1, -1)
    entries: dict[tuple[str, tuple[int, ...]], int] = field(default_factory=dict)

    def view(self) -> SwitchView:
        """The committed version and both groups as the entries give them (absent entries: size 0, backend 0)."""
        sizes = [self.entries.get(("rr_group", (v,)), 0) for v in (0, 1)]
        groups = tuple(tuple(self.entries.get(("rr_member", (v, i)), 0) for i in range(sizes[v])) for v in (0, 1))
        return SwitchView(version=self.entries.get(VIP), groups=groups)  # type: ignore[arg-type]

    def agrees(self, heads: dict[tuple[str, tuple[int, ...]], int]) -> bool:
        """The vip and rr_group entries read (`heads`) are those known, and every committed member is known."""
        known = {k: v for k, v in self.entries.items() if k[0] != "rr_member"}
        vip = heads.get(VIP)
        if known != heads or vip is None:
            return False
        return all(("rr_member", (vip, i)) in self.entries for i in range(heads.get(("rr_group", (vip,)), 0)))


def entries_of(rows: dict[str, list[TableRow]], cfg: LbConfig) -> dict[tuple[str, tuple[int, ...]], int]:
    """The service's entries of a read of vip, rr_group and (if read) rr_member, by the model's target names: its
    VIP:port's vip entry, and the rr_group/rr_member entries keyed by its service (other services' are skipped)."""
    entries: dict[tuple[str, tuple[int, ...]], int] = {}
    for row in rows.get("vip", []):
        if row.action.rsplit(".", 1)[-1] != "lb_select":
            continue
        if (_exact(row, "hdr.ipv4.dstAddr"), _exact(row, "hdr.tcp.dstPort")) != (cfg.vip, cfg.vip_port):
            if row.params.get("service") == cfg.service:  # two VIPs on one service's groups, backends and flows
                where = f"{ip_str(_exact(row, 'hdr.ipv4.dstAddr'))}:{_exact(row, 'hdr.tcp.dstPort')}"
                raise ConfigFileError("vip.service", cfg.service, f"the switch's vip entry of {where} already selects service {cfg.service}: give this VIP another vip.service")
            continue
        if row.params.get("service") != cfg.service:
            held = row.params.get("service")
            raise ConfigFileError("vip.service", cfg.service, f"the switch's vip entry of {ip_str(cfg.vip)}:{cfg.vip_port} selects service {held}: another service serves this VIP:port; give this service its own vip.port (or vip.address), or set vip.service = {held}")
        entries[VIP] = row.params["version"]
    for row in rows.get("rr_group", []):
        if _exact(row, "meta.lb.service") == cfg.service:
            entries["rr_group", (_exact(row, "meta.lb.version"),)] = row.params["size"]
    for row in rows.get("rr_member", []):
        if _exact(row, "meta.lb.service") == cfg.service:
            entries["rr_member", (_exact(row, "meta.lb.version"), _exact(row, "meta.lb.position"))] = row.params["backend"]
    return entries


def _param_width(action: object, name: str) -> int:
    """The bit width of an action parameter in the P4Info (8 if it is not there)."""
    return next((int(p.bitwidth) for p in getattr(action, "params", ()) if p.name == name), 8)


def _exact(row: TableRow, field: str) -> int:
    """An exact match field's value (an LPM field's would be a pair)."""
    key = row.match.get(field)
    if key is None:
        raise SwitchError(f"{row.table} read back without the match field {field}: is the switch running this p4/p4lb.p4 (one with services)? Deploy the new pipeline")
    if isinstance(key, tuple):
        raise SwitchError(f"{row.table}.{field} read back as a prefix {key}: is the switch running p4/p4lb.p4?")
    return key


class Switch(Protocol):
    """What the controller needs from a switch."""

    def install_pipeline(self) -> None: ...
    def write(self, w: Write) -> None: ...
    def write_batch(self, ws: list[Write]) -> None: ...
    def install_backends(self, cfg: LbConfig, check: bool = True) -> None: ...
    def check_shared(self, cfg: LbConfig) -> None: ...
    def read(self, full: bool = True) -> SwitchView: ...
    def read_quick(self, full: bool = False) -> SwitchView: ...
    def open_flows(self) -> dict[int, FlowEntry]: ...
    def iter_open_flows(self, services: frozenset[int] | None = None) -> Iterator[tuple[int, FlowEntry]]: ...
    def flow_census(self) -> dict[int, int]: ...
    def read_slot(self, slot: int) -> dict[str, int]: ...
    def remove_service(self, cfg: LbConfig, others: Sequence[LbConfig] = ()) -> int: ...
    def close(self) -> None: ...


class ModelSwitch:
    """The executable model standing in for the switch; records the last MODEL_LOG writes in order."""

    def __init__(self, cfg: LbConfig) -> None:
        self.cfg = cfg
        self.state = P4lbState()
        self.deployed = False
        self.installed: LbConfig | None = None
        self.log: deque[Write] = deque(maxlen=MODEL_LOG)

    def install_pipeline(self) -> None:
        self.deployed = True

    def install_backends(self, cfg: LbConfig, check: bool = True) -> None:
        if self.installed != cfg:  # upserts of identical entries change nothing, so they are not logged
            self.log.append(Write(Target.BACKEND, (), cfg.n))
            self.installed = cfg

    def check_shared(self, cfg: LbConfig) -> None:
        """The model serves one service: nothing is shared."""

    def write(self, w: Write) -> None:
        self.state = p4lb_write(self.state, w)
        if w.target == "vip":
            self.deployed = True
        self.log.append(w)

    def write_batch(self, ws: list[Write]) -> None:
        """Table writes of the staged version, in order."""
        for w in ws:
            self.write(w)

    def open_flows(self) -> dict[int, FlowEntry]:
        """The open flow slots (slot -> entry), idle timeout applied at the model's clock."""
        return dict(self.iter_open_flows())

    def iter_open_flows(self, services: frozenset[int] | None = None) -> Iterator[tuple[int, FlowEntry]]:
        """The service's open flow slots (or those of `services`, by id) in slot order."""
        st = self.state
        ids = services or frozenset({self.cfg.service})
        return ((i, e) for i, e in sorted(st.flows.items()) if key_service(e.key) in ids and is_open(e, st.now, self.cfg.idle_timeout_us))

    def flow_census(self) -> dict[int, int]:
        """Service id -> the flow places not FREE (any age)."""
        return dict(Counter(key_service(e.key) for e in self.state.flows.values() if e.state is not SlotState.FREE))

    def read_slot(self, slot: int) -> dict[str, int]:
        """The model's flow slot, in the CPU port's field names."""
        e = self.state.flows.get(slot, FREE)
        return {"flow_state": int(e.state), "flow_key": e.key, "flow_backend": e.backend, "flow_last_seen": e.last_seen,
                "rr_next0": self.state.rr_next[0], "rr_next1": self.state.rr_next[1], "idle_timeout": self.cfg.idle_timeout_us, "now": self.state.now}

    def close(self) -> None:
        """Nothing to release."""

    def remove_service(self, cfg: LbConfig, others: Sequence[LbConfig] = ()) -> int:
        """The model's service leaves the switch: no vip entry, groups or backends (its flow places stay, as on the
        switch); the number of entries a switch of this service alone would delete."""
        st = self.state
        self.state = P4lbState(rr_next=st.rr_next, flows=st.flows, lb_drops=st.lb_drops, backend_flows=st.backend_flows, backend_open=st.backend_open, now=st.now)
        self.deployed, self.installed = False, None
        self.log.append(Write(Target.NOOP, (), 0))
        kept = entries.kept_on_retire(cfg, list(others), set(), False)
        return 3 + len(st.rr_member) + cfg.n + len(entries.return_path(cfg)) - len(kept)  # vip, two rr_group, the members, backends, return path

    def read_quick(self, full: bool = False) -> SwitchView:
        """The model reads back at no cost: read()."""
        return self.read(full)

    def read(self, full: bool = True) -> SwitchView:
        st = self.state
        return SwitchView(
            version=st.version if self.deployed else None,
            groups=(st.members(0), st.members(1)),
            rr_next=st.rr_next,
            lb_drops={r.name.lower(): st.lb_drops[r] for r in DropReason if r.counted},
            backend_flows=dict(st.backend_flows),
            backend_open={cell % OPEN_PER_SERVICE: c for cell, c in st.backend_open.items() if c and cell // OPEN_PER_SERVICE == self.cfg.service},
        )


class P4RuntimeSwitch:
    """BMv2 over P4Runtime (one `P4rt` session). Table, register, counter and action names are the model's."""

    def __init__(self, grpc: str, device_id: int, election_id: tuple[int, int], p4info: str, bmv2_json: str, cfg: LbConfig, timeout_s: float = 2.0, tls: Tls | None = None) -> None:
        from p4lb.controller.p4rt import P4rt  # noqa: PLC0415  (gRPC only on the real-switch path)

        self.cfg = cfg
        self.files = (Path(p4info), Path(bmv2_json))
        self.rt = P4rt(grpc, device_id, election_id, timeout_s, tls)
        self.shadow = Shadow()

    def sibling(self, cfg: LbConfig) -> P4RuntimeSwitch:
        """The same session (connection, arbitration, pipeline) acting for another service of the switch: its own
        config and its own knowledge of its entries. Closing either closes both."""
        other = copy.copy(self)
        other.cfg = cfg
        other.shadow = Shadow()
        return other

    def preflight(self) -> None:
        """Check the local P4Info against the config before anything is written; no connection is made."""
        if self.files[0].is_file():
            self.rt.load_p4info(self.files[0])
            self._check_program()

    def _ready(self) -> P4rt:
        """The session, with names learned from the running pipeline."""
        if self.rt.context is None:
            self.rt.load_p4info(self.files[0] if self.files[0].is_file() else None)
            self._check_program()
        return self.rt

    def _check_program(self) -> None:
        """The program's flow table is the one the config (and so the model) hashes into."""
        slots = self.rt.register_size("flow_state")
        if slots != 1 << self.cfg.flow_table_bits:
            self.rt.context = None
            raise ConfigFileError("flows.table_bits", self.cfg.flow_table_bits, f"the P4 program has {slots} flow places: set flows.table_bits = {slots.bit_length() - 1} (or rebuild p4/p4lb.p4 with -DFLOW_BITS={self.cfg.flow_table_bits})")
        try:
            cells = self.rt.register_size("backend_open")
        except SwitchError:
            cells = 0
        if cells < OPEN_WIDTH * (self.cfg.n // OPEN_WIDTH + 1):
            self.rt.context = None
            raise ConfigFileError("switch.p4info", str(self.files[0]), "its program keeps no backend_open counts (an older p4lb.p4): rebuild it (`nox -s build_p4`) and deploy the new pipeline")
        self._check_services()
        if (self.cfg.flow_ways, self.cfg.flow_bucket) != (P4LB_WAYS, P4LB_BUCKET):
            self.rt.context = None
            raise ConfigFileError("flows.ways", f"{self.cfg.flow_ways} x {self.cfg.flow_bucket}", f"p4/p4lb.p4 is built with {P4LB_WAYS} ways of {P4LB_BUCKET}-place buckets: set flows.ways = {P4LB_WAYS} and flows.bucket = {P4LB_BUCKET}")

    def _check_services(self) -> None:
        """The program serves services (lb_select(service, version), tables keyed by the service, the CPU header's
        service byte) and has cells for the configured one."""
        rt, svc = self.rt, self.cfg.service
        lb_select = rt.p4_object("action", "lb_select")
        packet_out = rt.p4_object("controller_packet_metadata", "packet_out")
        keyed = [rt.p4_object("table", t) for t in ("rr_group", "rr_member", "backend")]
        if (lb_select is None or "service" not in {p.name for p in lb_select.params} or packet_out is None or "service" not in {m.name for m in packet_out.metadata}
                or any(t is None or "meta.lb.service" not in {mf.name for mf in t.match_fields} for t in keyed)):
            self.rt.context = None
            raise ConfigFileError("switch.p4info", str(self.files[0]), "its program serves one service only (an older p4lb.p4: lb_select has no service parameter): rebuild it (`nox -s build_p4`) and deploy the new pipeline")
        width = _param_width(lb_select, "service")
        if svc >= 1 << width:
            self.rt.context = None
            raise ConfigFileError("vip.service", svc, f"the P4 program's service ids are {width} bits: use 0..{(1 << width) - 1}")
        most = self.max_backends()
        if self.cfg.n > most:
            self.rt.context = None
            raise ConfigFileError("backend", self.cfg.n, f"the P4 program ({self.files[0].name}) serves at most {most} backends per service: remove {self.cfg.n - most}, or split them over two services")
        need = {("register", "rr_next"): (svc + 1) * 2, ("register", "backend_open"): (svc + 1) * OPEN_PER_SERVICE,
                ("counter", "lb_drops"): (svc + 1) * DROP_REASONS, ("counter", "backend_flows"): (svc + 1) * OPEN_PER_SERVICE}
        for (kind, name), cells in need.items():
            obj = rt.p4_object(kind, name)
            size = int(obj.size) if obj is not None else 0
            if size < cells:
                self.rt.context = None
                raise ConfigFileError("vip.service", svc, f"the P4 program's {kind} {name} has {size} cells, too few for service {svc} ({cells} needed): use a smaller vip.service, or deploy a p4lb.p4 with services")

    def max_backends(self) -> int:
        """The most backends one service can have in the loaded program: backend ids (the backend table's key) are
        1..2^w-1, and the backend table holds its size over the number of service ids (MAX_BACKENDS in p4lb.p4)."""
        rt = self.rt
        table, lb_select = rt.p4_object("table", "backend"), rt.p4_object("action", "lb_select")
        if table is None or lb_select is None:
            return MAX_BACKENDS
        ids = (1 << next((mf.bitwidth for mf in table.match_fields if mf.name == "meta.lb.backend"), 8)) - 1
        return min(MAX_BACKENDS, ids, int(table.size) >> _param_width(lb_select, "service") or MAX_BACKENDS)

    def check_capacity(self, cfgs: Sequence[LbConfig]) -> None:
        """The services of one config fit the loaded program together: as many vip entries and service ids, and
        the backend entries of all of them (before any write; the config names the first that does not fit)."""
        rt = self._ready()
        vip, lb_select, backend = rt.p4_object("table", "vip"), rt.p4_object("action", "lb_select"), rt.p4_object("table", "backend")
        if vip is None or lb_select is None or backend is None:
            return
        most = min(int(vip.size) or len(cfgs), 1 << _param_width(lb_select, "service"))
        if len(cfgs) > most:
            raise ConfigFileError("service", len(cfgs), f"the P4 program ({self.files[0].name}) serves at most {most} services: use at most {most} [[service]] tables, or split them over two switches")
        total = sum(c.n for c in cfgs)
        if int(backend.size) and total > int(backend.size):
            raise ConfigFileError("service", total, f"the services have {total} backends and the P4 program's backend table holds {backend.size}: remove some")

    def install_pipeline(self) -> None:
        """Push the P4 program (P4Info + BMv2 JSON); this empties every table and register."""
        if self.files[0].is_file():
            self.rt.load_p4info(self.files[0])
            self._check_program()
        self.shadow = Shadow()
        self.rt.push(*self.files)
        self.shadow = Shadow(self.rt.epoch)  # every table is empty now

    def install_backends(self, cfg: LbConfig, check: bool = True) -> None:
        """Static state: `backend` entries, the return path (`forward`, `send_frame` SNAT), `idle_timeout`; the
        shared settings checked first (check_shared) unless `check` is False: the caller checked them under the
        switch's lock it still holds (a multi-service deploy checks every service before the first write)."""
        rt = self._ready()
        if check:
            self.check_shared(cfg)  # before any write
        for e in entries.static(cfg):
            rt.upsert(e.table, dict(e.match), e.action, dict(e.params))
        self.cpu(CPU_WRITE_TIMEOUT, 0, cfg.idle_timeout_us)

    def check_shared(self, cfg: LbConfig) -> None:
        """With another service on the switch, refuse (before writing them) the settings every service shares when
        they differ from the switch's: the idle timeout (each service's proofs take it as their own) and the source
        rewrite of a backend address's replies toward the client port (send_frame, keyed by port and address)."""
        rt = self._ready()
        others = [r for r in rt.read_table("vip") if r.action.rsplit(".", 1)[-1] == "lb_select" and r.params.get("service") != cfg.service]
        if not others:
            return
        timeout = self.cpu(CPU_READ, 0).get("idle_timeout", 0)
        if timeout not in (0, cfg.idle_timeout_us):
            raise ConfigFileError("flows.idle_timeout_s", cfg.idle_timeout_us / 1e6, f"the switch's other services use {timeout / 1e6:g} s, and every service shares the one idle timeout: set flows.idle_timeout_s = {timeout / 1e6:g}")
        mine = {b.ip: b.id for b in cfg.backends}
        for row in rt.read_table("send_frame"):
            src = _exact(row, "hdr.ipv4.srcAddr")
            if _exact(row, "std.egress_port") == cfg.client_port and src in mine and row.params.get("sip", cfg.vip) != cfg.vip:
                raise ConfigFileError(f"backend[{mine[src] - 1}].address", ip_str(src), f"another service's backend at this address answers clients on port {cfg.client_port} from {ip_str(row.params['sip'])}, and one backend address's replies toward a port leave from one source: give this backend another address, or the service the same vip.address")

    def remove_service(self, cfg: LbConfig, others: Sequence[LbConfig] = ()) -> int:
        """Delete the service's entries: its vip entry first (from then on none of its packets is balanced), then
        every rr_member, rr_group and backend entry keyed by its id (as read back), then its return path
        (entries.return_path) except what another service may need: one of `others` (the config's other services)
        or what the switch's entries show of the rest (another service's backend or VIP address; the client route
        while another service has a vip entry). Flow places keyed by its id stay (no write clears them). The
        number of entries deleted."""
        rt = self._ready()
        rows = rt.read_tables(["vip", "rr_group", "rr_member", "backend"])
        lb = [r for r in rows["vip"] if r.action.rsplit(".", 1)[-1] == "lb_select"]
        gone: list[tuple[str, dict[str, Key]]] = [("vip", dict(r.match)) for r in lb if r.params.get("service") == cfg.service]
        for table in ("rr_member", "rr_group", "backend"):
            gone += [(table, dict(r.match)) for r in rows[table] if _exact(r, entries.SERVICE_KEY) == cfg.service]
        rest = [r for r in lb if r.params.get("service") != cfg.service]
        addrs = {r.params.get("addr") for r in rows["backend"] if _exact(r, entries.SERVICE_KEY) != cfg.service} | {_exact(r, "hdr.ipv4.dstAddr") for r in rest}
        kept = entries.kept_on_retire(cfg, list(others), {a for a in addrs if isinstance(a, int)}, bool(rest))
        gone += [(e.table, dict(e.match)) for e in entries.return_path(cfg) if e not in kept]
        for table, match in gone:
            rt.delete(table, match)
        self.shadow = Shadow()  # what this session knew of the service's entries is gone
        return len(gone)

    def cpu(self, op: int, index: int = 0, value: int = 0) -> dict[str, int]:
        """One register access through the CPU port for the configured service (the answer's rr_next0/1 are its
        rr_next cells), waited for (so it is done before the next write)."""
        rt = self._ready()
        svc = self.cfg.service
        rt.packet_out({"op": op, "service": svc, "index": index, "value": value})
        deadline = time.monotonic() + rt.timeout_s  # one deadline for the answer, stray PacketIns included
        for _ in range(8):
            got = rt.packet_in(max(0.0, deadline - time.monotonic()))
            if got.get("op") == op and got.get("service") == svc and got.get("index") == index:
                return got
            log.debug("stray PacketIn %s", got)
        raise SwitchError(f"no answer to CPU-port request op={op} index={index} from {rt.addr}", GrpcCode.DEADLINE_EXCEEDED)

    def read_slot(self, slot: int) -> dict[str, int]:
        """flow_state, flow_key (56 bits: service ++ address ++ port), flow_backend, flow_last_seen of one slot (any
        service's), the service's rr_next0/1, idle_timeout, now."""
        return self.cpu(CPU_READ, slot)

    def write_batch(self, ws: list[Write]) -> None:
        """Table writes of the staged version (rr_member, rr_group) in one P4Runtime Write: they touch only the
        version no packet reads, so the order the switch applies them in does not matter (P7)."""
        self._ready()
        if any(w.target not in BATCHED for w in ws):
            raise SwitchError(f"only {', '.join(sorted(BATCHED))} writes can be batched", GrpcCode.INVALID_ARGUMENT)
        self._put(ws)

    def _known(self) -> Shadow:
        """This session's knowledge of the controller's tables (none after a reconnect or another controller's arbitration)."""
        if self.shadow.epoch != self.rt.epoch:
            self.shadow = Shadow(self.rt.epoch)
        return self.shadow

    def _put(self, ws: list[Write]) -> None:
        """Table writes in one Write: MODIFY for entries known to exist, INSERT for the others; remembered once done
        in the same session, all knowledge dropped if the write fails (the switch may hold any part of it)."""
        shadow = self._known()
        try:
            self.rt.write_entries([self._entry(w) for w in ws], [(w.target, w.index) in shadow.entries for w in ws])
        except SwitchError:
            self.shadow = Shadow()
            raise
        if self._known() is shadow:
            shadow.entries.update(((w.target, w.index), w.value) for w in ws)

    def _entry(self, w: Write) -> Entry:
        """The table entry of a table write."""
        e = entries.of_write(self.cfg, w)
        return e.table, dict(e.match), e.action, dict(e.params)

    def write(self, w: Write) -> None:
        """One atomic write, as the model names it."""
        self._ready()
        if w.target in TABLES:
            self._put([w])
        elif w.target == "rr_next":
            self.cpu(CPU_WRITE_RR_NEXT, w.index[0], w.value)
        else:
            raise SwitchError(f"no such switch target {w.target!r}: use vip, rr_group, rr_member or rr_next")

    def read(self, full: bool = True) -> SwitchView:
        """The committed version and both groups read back (one Read); with `full`, rr_next and the counters too."""
        return self._read_back(full)

    def _read_back(self, full: bool) -> SwitchView:
        """read(): every entry of vip, rr_group and rr_member in one Read, remembered for this session."""
        rt = self._ready()
        rt.connect()
        epoch = rt.epoch  # taken before the Read: an arbitration update during it voids what it returns
        entries = entries_of(rt.read_tables(list(TABLES)), self.cfg)
        self.shadow = Shadow(epoch, entries)
        return self._with_counters(self.shadow.view()) if full else self.shadow.view()

    def read_quick(self, full: bool = False) -> SwitchView:
        """As read(), from one Read of the vip and rr_group entries and what this session knows of rr_member (an
        unknown staged member reads as absent, so a plan writes it); a full read-back when they disagree (an entry
        changed by someone else), after a reconnect or another controller's arbitration, or if a committed member is
        unknown."""
        rt = self._ready()
        heads = entries_of(rt.read_tables(["vip", "rr_group"]), self.cfg)
        known = self._known()
        if not known.agrees(heads):
            log.info("the switch's vip or rr_group entries are not those last seen: reading every entry back")
            return self._read_back(full)
        return self._with_counters(known.view()) if full else known.view()

    def _with_counters(self, view: SwitchView) -> SwitchView:
        """The view with the service's rr_next and backend_open (through the CPU port) and its lb_drops (cells
        service*8 + reason) and backend_flows (cells service*256 + backend, backends 0..N) counter cells."""
        regs, opened = self.read_open()
        svc = self.cfg.service
        drops = self.rt.counter_cells("lb_drops", range(svc * DROP_REASONS, (svc + 1) * DROP_REASONS))
        base = svc * OPEN_PER_SERVICE
        flows = self.rt.counter_cells("backend_flows", range(base, base + self.cfg.n + 1))
        return SwitchView(
            version=view.version,
            groups=view.groups,
            rr_next=(regs["rr_next0"], regs["rr_next1"]),
            lb_drops={r.name.lower(): drops.get(svc * DROP_REASONS + int(r), 0) for r in DropReason if r.counted},
            backend_flows={i - base: c for i, c in flows.items() if c},
            backend_open=opened,
        )

    def read_open(self, last: int | None = None) -> tuple[dict[str, int], dict[int, int]]:
        """The service's backend_open of backend ids 0..`last` (default N; nonzero cells; cells service*256 + id)
        through the CPU port, OPEN_WIDTH cells per CPU_OPEN request (service s's blocks are s*4 ..), all requests in
        flight at once (one for N < 64), each answer within the session's deadline; and the first answer's header
        (the service's rr_next0/1, idle_timeout, now), which every CPU-port answer carries."""
        rt = self._ready()
        svc = self.cfg.service
        last = min(self.cfg.n if last is None else last, OPEN_PER_SERVICE - 1)
        blocks = last // OPEN_WIDTH + 1
        first = svc * OPEN_BLOCKS
        for i in range(blocks):
            rt.packet_out({"op": CPU_OPEN, "service": svc, "index": first + i}, bytes(OPEN_WIDTH * OPEN_CELL.size))
        answers: dict[int, tuple[dict[str, int], bytes]] = {}
        deadline = time.monotonic() + rt.timeout_s  # per answer: moved on by each one, not by strays
        while len(answers) < blocks:
            meta, payload = rt.packet_in_with_payload(max(0.0, deadline - time.monotonic()))
            i = meta.get("index", -1) - first
            if meta.get("op") != CPU_OPEN or meta.get("service") != svc or not 0 <= i < blocks or i in answers:
                log.debug("stray PacketIn %s", meta)
                if time.monotonic() >= deadline:
                    raise SwitchError(f"no answer to CPU_OPEN from {rt.addr} within {rt.timeout_s:g} s", GrpcCode.DEADLINE_EXCEEDED)
                continue
            answers[i] = (meta, payload)
            deadline = time.monotonic() + rt.timeout_s
        counts = {b: c for i, (_, payload) in answers.items() for b, c in open_block(i, payload).items() if b <= last and c}
        return answers[0][0], counts

    def open_flows(self) -> dict[int, FlowEntry]:
        """The open flow slots (slot -> entry): iter_open_flows() collected (2^20 places: as many entries)."""
        return dict(self.iter_open_flows())

    def iter_open_flows(self, services: frozenset[int] | None = None) -> Iterator[tuple[int, FlowEntry]]:
        """The service's open flow slots (slot, entry; other services' flows are skipped; `services`: those of these
        ids), as the answers arrive (see _scan); a block is judged open or idle at the switch clock of its own read."""
        ids = services or frozenset({self.cfg.service})
        for meta, payload, places in self._scan():
            yield from sorted((i, e) for i, e in scan_block(meta, payload, places).items() if key_service(e.key) in ids)

    def flow_census(self) -> dict[int, int]:
        """Every service's held flow places (service id -> places not FREE: open, closing or idle, whatever their age),
        from a read of every place (see _scan; 2^20 places: 16,384 CPU-port requests). Known without a read after
        this session pushed the pipeline (every place FREE) until the census is taken again."""
        counts: Counter[int] = Counter()
        for _, payload, places in self._scan():
            counts.update(held_block(payload, places))
        return dict(counts)

    def _scan(self) -> Iterator[tuple[dict[str, int], bytes, int]]:
        """Every flow place read through the CPU port, SCAN_WIDTH per request, SCAN_WINDOW requests in flight, each
        answer waited for within the session's deadline (a stray answer of an abandoned scan is skipped): each block's
        answer (header, payload) and the table's size, as the answers arrive. Memory: the window and one bit per
        block, whatever the number of places."""
        rt = self._ready()
        places = rt.register_size("flow_state")
        blocks = max(1, places // SCAN_WIDTH)  # a table smaller than one scan (p4lb_small) is read by one, wrapped round
        sent, answered, done = 0, 0, bytearray(blocks)
        while answered < blocks:
            while sent < blocks and sent - answered < SCAN_WINDOW:
                rt.packet_out({"op": CPU_SCAN, "service": self.cfg.service, "index": sent}, bytes(SCAN_WIDTH * SCAN_SLOT.size))
                sent += 1
            meta, payload = rt.packet_in_with_payload()
            index = meta.get("index", blocks)
            if meta.get("op") != CPU_SCAN or index >= sent or done[index]:
                log.debug("stray PacketIn %s", meta)  # e.g. the late answer of an earlier, abandoned request
                continue
            done[index] = 1
            answered += 1
            yield meta, payload, places

    def close(self) -> None:
        """End the P4Runtime session."""
        self.rt.close()


def open_block(index: int, payload: bytes) -> dict[int, int]:
    """backend id -> backend_open of one CPU_OPEN answer (the service's block `index`: ids index*OPEN_WIDTH ..)."""
    if len(payload) < OPEN_WIDTH * OPEN_CELL.size:
        raise SwitchError(f"CPU_OPEN answer of {len(payload)} bytes, expected {OPEN_WIDTH * OPEN_CELL.size}: is the switch running p4/p4lb.p4?")
    return {index * OPEN_WIDTH + i: c for i, (c,) in enumerate(OPEN_CELL.iter_unpack(payload[: OPEN_WIDTH * OPEN_CELL.size]))}


def _check_scan(payload: bytes) -> None:
    """A CPU_SCAN answer carries SCAN_WIDTH places."""
    if len(payload) < SCAN_WIDTH * SCAN_SLOT.size:
        raise SwitchError(f"CPU_SCAN answer of {len(payload)} bytes, expected {SCAN_WIDTH * SCAN_SLOT.size}: is the switch running p4/p4lb.p4?")


def held_block(payload: bytes, places: int | None = None) -> Counter[int]:
    """Service id -> the places of one CPU_SCAN answer that are not FREE (of a table of `places` places: fewer than
    SCAN_WIDTH wrap round, the repeats are skipped)."""
    _check_scan(payload)
    held: Counter[int] = Counter()
    for i in range(min(SCAN_WIDTH, places or SCAN_WIDTH)):
        state, _, key, _ = SCAN_SLOT.unpack_from(payload, i * SCAN_SLOT.size)
        if state & 3 != SlotState.FREE:
            held[key_service(int.from_bytes(key, "big"))] += 1
    return held


def scan_block(meta: dict[str, int], payload: bytes, places: int | None = None) -> dict[int, FlowEntry]:
    """The open slots of one CPU_SCAN answer, every service's (of a table of `places` places: fewer than SCAN_WIDTH
    wrap round, the repeats are skipped)."""
    _check_scan(payload)
    out = {}
    for i in range(min(SCAN_WIDTH, places or SCAN_WIDTH)):
        state, backend, key, seen = SCAN_SLOT.unpack_from(payload, i * SCAN_SLOT.size)
        if state != SlotState.OPEN:
            continue
        e = FlowEntry(SlotState(state & 3), int.from_bytes(key, "big"), backend, int.from_bytes(seen, "big"))
        if is_open(e, meta["now"], meta["idle_timeout"]):
            out[meta["index"] * SCAN_WIDTH + i] = e
    return out
