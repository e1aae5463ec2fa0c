"""One P4Runtime session to one switch: a small client of our own (every call with a deadline, TLS optional).

p4runtime-shell's client has no deadline on any call and exits the process when arbitration fails, so this module
talks to the P4Runtime stub itself: each unary call (Write, Read, SetForwardingPipelineConfig, ...) carries the
session's deadline, and the stream (arbitration, PacketOut/PacketIn) is read on its own thread into queues that
are waited on with the same deadline. Names are P4Info names or any unique suffix of them ("vip" for
"MyIngress.vip"). Values are integers; LPM keys are (value, prefix_len). Every failure becomes a SwitchError that
says what was being done, at which address, and carries the gRPC status code it is classified by.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

from p4lb.controller.errors import ConfigFileError, GrpcCode, MissingExtraError, SwitchError

log = logging.getLogger(__name__)

Msg = Any  # a P4Runtime or P4Info protobuf message: the generated modules carry no types
T = TypeVar("T")
Key = int | tuple[int, int]  # exact value, or (value, prefix_len) for LPM
Entry = tuple[str, dict[str, Key], str, dict[str, int]]  # table, match, action, action parameters
RECONNECT = frozenset({GrpcCode.UNAVAILABLE, GrpcCode.CANCELLED, GrpcCode.PERMISSION_DENIED})  # the session is gone
PUSH_DEADLINE_FACTOR = 5  # a pipeline push (a large BMv2 JSON) gets five deadlines,
PUSH_S_PER_MB = 1.0  # and at least a second per MB of JSON (p4lb.json is ~10 MB: BMv2 parses it before it answers)


@dataclass(frozen=True)
class TableRow:
    """One table entry read back: match fields and action parameters as integers."""

    table: str
    match: dict[str, Key]
    action: str
    params: dict[str, int]


@dataclass(frozen=True)
class Tls:
    """TLS to the switch: CA certificates (empty: the system's) and, for mutual TLS, our certificate and key (PEM paths)."""

    root_cert: str = ""
    client_cert: str = ""
    client_key: str = ""


def _modules() -> SimpleNamespace:
    try:
        import google.protobuf.text_format as text_format  # noqa: PLC0415
        import grpc  # noqa: PLC0415
        from google.rpc import status_pb2  # noqa: PLC0415
        from p4.config.v1 import p4info_pb2  # noqa: PLC0415
        from p4.v1 import p4runtime_pb2, p4runtime_pb2_grpc  # noqa: PLC0415
    except ImportError as exc:
        raise MissingExtraError(exc.name) from exc
    return SimpleNamespace(text_format=text_format, grpc=grpc, status_pb2=status_pb2, p4info_pb2=p4info_pb2, pb=p4runtime_pb2, pb_grpc=p4runtime_pb2_grpc)


def encode(value: int, bitwidth: int, what: str) -> bytes:
    """P4Runtime's canonical bytestring (no leading zero bytes) of a value that must fit bitwidth bits."""
    if not 0 <= value < 1 << bitwidth:
        raise SwitchError(f"{what} = {value} does not fit in bit<{bitwidth}>: use 0..{(1 << bitwidth) - 1}", GrpcCode.OUT_OF_RANGE)
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def decode(data: bytes) -> int:
    """A bytestring back to an integer."""
    return int.from_bytes(data, "big") if data else 0


def _pem(path: str, field: str) -> bytes | None:
    """A PEM file's bytes (None for an empty path); a ConfigFileError naming the field if unreadable."""
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigFileError(f"switch.{field}", path, f"give a readable PEM file ({exc.strerror})") from None


MAX_MESSAGE_BYTES = 64 << 20  # gRPC's default receive limit is 4 MB; the multi-way p4lb.json alone is ~10 MB


def credentials(mods: SimpleNamespace, tls: Tls) -> Any:
    """gRPC channel credentials from the PEM files."""
    return mods.grpc.ssl_channel_credentials(_pem(tls.root_cert, "root_cert"), _pem(tls.client_key, "client_key"), _pem(tls.client_cert, "client_cert"))


@dataclass(frozen=True)
class StreamEnd:
    """The stream ended (queued in place of a message): its status code and details."""

    code: GrpcCode
    details: str


def status_code(exc: BaseException) -> GrpcCode:
    """The gRPC status code of an RpcError; for a Write that failed per update (UNKNOWN, as BMv2 sends it), the first
    failing update's canonical code from the status details."""
    code = getattr(exc, "code", None)
    try:
        found = GrpcCode[code().name] if callable(code) else GrpcCode.UNKNOWN
    except (KeyError, AttributeError, TypeError, ValueError):
        return GrpcCode.UNKNOWN
    if found is GrpcCode.UNKNOWN:
        first = next(iter(write_errors(exc)), None)
        if first is not None:
            return first[0]
    return found


def update_codes(exc: BaseException | None) -> list[GrpcCode]:
    """Every update's code of a Write that failed per update (OK for those applied), in request order."""
    return [c for c, _ in write_errors(exc, every=True)]


def write_errors(exc: BaseException | None, every: bool = False) -> list[tuple[GrpcCode, str]]:
    """The failing updates of a Write (code, message), from the grpc-status-details-bin trailer (`every`: OK ones too)."""
    trailer = getattr(exc, "trailing_metadata", None)
    try:
        meta = dict(trailer() or ()) if callable(trailer) else {}
        raw = meta.get("grpc-status-details-bin")
        if not raw:
            return []
        from google.rpc import status_pb2  # noqa: PLC0415
        from p4.v1 import p4runtime_pb2  # noqa: PLC0415

        status = status_pb2.Status.FromString(raw)
        out = []
        for detail in status.details:
            err = p4runtime_pb2.Error()
            if detail.Unpack(err) and (every or err.canonical_code != 0):
                known = err.canonical_code in GrpcCode._value2member_map_
                out.append((GrpcCode(err.canonical_code) if known else GrpcCode.UNKNOWN, err.message))
        return out
    except Exception as exc2:  # a malformed trailer is not worth a crash
        log.debug("unreadable status details: %s", exc2)
        return []


def _details(exc: BaseException) -> str:
    """The useful line of a gRPC error."""
    errors = write_errors(exc)
    if errors:
        return "; ".join(f"{c.name}: {m}" for c, m in errors)
    details = getattr(exc, "details", None)
    try:
        text = details() if callable(details) else str(exc)
    except Exception:  # not a grpc.Call
        text = str(exc)
    return " ".join(str(text or type(exc).__name__).split())


class Client:
    """The P4Runtime stub of one channel with a deadline on every call, and the stream read on its own thread."""

    def __init__(self, mods: SimpleNamespace, addr: str, device_id: int, election_id: tuple[int, int], timeout_s: float, tls: Tls | None = None) -> None:
        self.mods, self.device_id, self.election_id, self.timeout_s = mods, device_id, election_id, timeout_s
        grpc = mods.grpc
        opts = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]  # the pipeline (BMv2 JSON) is ~10 MB
        self.channel = grpc.secure_channel(addr, credentials(mods, tls), options=opts) if tls is not None else grpc.insecure_channel(addr, options=opts)
        self.stub = mods.pb_grpc.P4RuntimeStub(self.channel)
        self.stream_out_q: queue.Queue[Msg | None] = queue.Queue()
        self.arbitration: queue.Queue[Msg | StreamEnd] = queue.Queue()
        self.packets: queue.Queue[Msg | StreamEnd] = queue.Queue()
        self.ended: StreamEnd | None = None
        self.notices = 0  # arbitration updates received (the first answers our handshake; later ones: others came or went)
        self.stream = self.stub.StreamChannel(iter(self.stream_out_q.get, None))
        self.reader = threading.Thread(target=self._read, name="p4rt-stream", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        """Sort stream messages into the arbitration and packet queues; on the end, queue a StreamEnd in both."""
        end = StreamEnd(GrpcCode.UNAVAILABLE, "the switch closed the stream")
        try:
            for msg in self.stream:
                kind = msg.WhichOneof("update")
                if kind == "arbitration":
                    self.notices += 1
                    if self.notices == 1:  # the answer to our handshake; later ones are only counted (epoch)
                        self.arbitration.put(msg)
                elif kind in ("packet", "error"):
                    self.packets.put(msg)
                else:
                    log.debug("stream message %s ignored", kind)
        except self.mods.grpc.RpcError as exc:
            end = StreamEnd(status_code(exc), _details(exc))
        self.ended = end
        self.arbitration.put(end)
        self.packets.put(end)

    def _uint128(self, msg: Msg) -> None:
        msg.high, msg.low = self.election_id

    def handshake(self) -> bool:
        """Send our election id; True if we are primary. SwitchError if no answer within the deadline."""
        req = self.mods.pb.StreamMessageRequest()
        req.arbitration.device_id = self.device_id
        self._uint128(req.arbitration.election_id)
        self.stream_out_q.put(req)
        try:
            rep = self.arbitration.get(timeout=self.timeout_s)
        except queue.Empty:
            raise SwitchError(f"no arbitration answer within {self.timeout_s:g} s", GrpcCode.DEADLINE_EXCEEDED) from None
        if isinstance(rep, StreamEnd):
            raise SwitchError(f"{rep.code.name}: {rep.details}", rep.code)
        return bool(rep.arbitration.status.code == 0)

    def write(self, req: Msg, timeout: float | None = None) -> Msg:
        """Write (as primary, with our election id)."""
        req.device_id = self.device_id
        self._uint128(req.election_id)
        return self.stub.Write(req, timeout=timeout or self.timeout_s)

    def read_one(self, entity: Msg, timeout: float | None = None) -> Iterator[Msg]:
        """Read one entity (wildcards allowed): an iterator of ReadResponses."""
        return self.read_many([entity], timeout)

    def read_many(self, entities: list[Msg], timeout: float | None = None) -> Iterator[Msg]:
        """Read several entities in one request (wildcards allowed): an iterator of ReadResponses."""
        req = self.mods.pb.ReadRequest(device_id=self.device_id)
        req.entities.extend(entities)
        reps: Iterator[Msg] = self.stub.Read(req, timeout=timeout or self.timeout_s)
        return reps

    def get_p4info(self, timeout: float | None = None) -> Msg:
        """The running pipeline's P4Info (empty if none)."""
        kind = self.mods.pb.GetForwardingPipelineConfigRequest
        req = kind(device_id=self.device_id, response_type=kind.P4INFO_AND_COOKIE)
        return self.stub.GetForwardingPipelineConfig(req, timeout=timeout or self.timeout_s).config.p4info

    def set_fwd_pipe_config(self, p4info_path: str, bin_path: str, timeout: float | None = None) -> Msg:
        """Push the pipeline with VERIFY_AND_COMMIT."""
        pb = self.mods.pb
        req = pb.SetForwardingPipelineConfigRequest(device_id=self.device_id, action=pb.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT)
        self._uint128(req.election_id)
        self.mods.text_format.Merge(Path(p4info_path).read_text(), req.config.p4info, allow_unknown_field=True)
        req.config.p4_device_config = Path(bin_path).read_bytes()
        return self.stub.SetForwardingPipelineConfig(req, timeout=timeout or self.timeout_s * PUSH_DEADLINE_FACTOR)

    def api_version(self, timeout: float | None = None) -> str:
        """The switch's P4Runtime API version."""
        return str(self.stub.Capabilities(self.mods.pb.CapabilitiesRequest(), timeout=timeout or self.timeout_s).p4runtime_api_version)

    def packet(self, timeout: float) -> Msg | StreamEnd | None:
        """The next PacketIn or stream error message, a StreamEnd, or None after `timeout`."""
        try:
            msg = self.packets.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(msg, StreamEnd):
            self.packets.put(msg)  # every later wait sees it too
        return msg

    def tear_down(self) -> None:
        """End the stream (half-close, so the switch sees us leave; cancelled if it does not answer within the
        deadline) and close the channel."""
        self.stream_out_q.put(None)
        self.reader.join(self.timeout_s)
        if self.reader.is_alive():
            self.stream.cancel()
            self.reader.join(self.timeout_s)
        self.channel.close()


class P4rt:
    """A primary P4Runtime session with one device; reconnects once when the switch went away and came back.

    `timeout_s` is the deadline of everything: the connection, arbitration, each RPC and each awaited PacketIn
    (a pipeline push gets PUSH_DEADLINE_FACTOR of it, and at least PUSH_S_PER_MB per MB of JSON).
    """

    def __init__(self, grpc_addr: str, device_id: int = 0, election_id: tuple[int, int] = (0, 1), timeout_s: float = 2.0, tls: Tls | None = None) -> None:
        self.addr, self.device_id, self.election_id, self.timeout_s, self.tls = grpc_addr, device_id, election_id, timeout_s, tls
        self.mods = _modules()
        self.client: Client | None = None
        self.context: Names | None = None
        self.primary = False
        self.sessions = 0  # sessions opened so far: a new one may be a restarted switch

    @property
    def epoch(self) -> tuple[int, int]:
        """What this session's knowledge of the switch holds for: it moves with a new session (the switch may have
        restarted) and with every arbitration update after our own (another controller became primary or left, and
        may have written)."""
        return self.sessions, self.client.notices if self.client is not None else 0

    # ---- session -------------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the stream and win arbitration (we are the primary with our election id)."""
        if self.client is not None and self.client.ended is None:
            return
        self.close()
        grpc = self.mods.grpc
        client = Client(self.mods, self.addr, self.device_id, self.election_id, self.timeout_s, self.tls)
        try:
            grpc.channel_ready_future(client.channel).result(timeout=self.timeout_s)
        except grpc.FutureTimeoutError:
            client.tear_down()
            raise SwitchError(f"switch unreachable at {self.addr} (no gRPC answer in {self.timeout_s:g} s): start simple_switch_grpc or fix switch.grpc", GrpcCode.UNAVAILABLE) from None
        try:
            self.primary = client.handshake()
        except SwitchError as exc:
            client.tear_down()
            raise SwitchError(f"switch at {self.addr} did not answer arbitration for device {self.device_id}: {exc}: check switch.device_id and switch.election_id", exc.code) from None
        self.client = client
        self.sessions += 1
        log.info("P4Runtime session with %s device %d, election id %s (%s)", self.addr, self.device_id, self.election_id, "primary" if self.primary else "backup")

    def _session(self) -> Client:
        """The open session's client (callers connect first; a reconnect between calls replaces it)."""
        if self.client is None:
            raise SwitchError(f"no P4Runtime session with {self.addr}", GrpcCode.UNAVAILABLE)
        return self.client

    def close(self) -> None:
        """End the stream (its reader thread would otherwise keep running)."""
        if self.client is not None:
            try:
                self.client.tear_down()
            except Exception as exc:  # closing a dead channel
                log.debug("tear down: %s", exc)
            self.client = None

    def __enter__(self) -> P4rt:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def push(self, p4info: Path, bmv2_json: Path) -> None:
        """Install the pipeline (VERIFY_AND_COMMIT): this clears every table and register."""
        for path in (p4info, bmv2_json):
            if not Path(path).is_file():
                raise SwitchError(f"pipeline file {path} is missing: run `nox -s build_p4` or fix switch.p4info / switch.bmv2_json")
        self.connect()
        deadline = max(self.timeout_s * PUSH_DEADLINE_FACTOR, Path(bmv2_json).stat().st_size / 1e6 * PUSH_S_PER_MB)
        self._rpc(f"push pipeline {Path(bmv2_json).name}", lambda: self._session().set_fwd_pipe_config(str(p4info), str(bmv2_json), deadline))
        self._load_p4info_file(Path(p4info))

    def load_p4info(self, p4info: Path | None = None) -> None:
        """Learn names from a P4Info file, or from the switch's running pipeline."""
        if p4info is not None:
            self._load_p4info_file(Path(p4info))
            return
        self.connect()
        info = self._rpc("read the running pipeline", lambda: self._session().get_p4info(self.timeout_s))
        if not info.tables:
            raise SwitchError(f"the switch at {self.addr} runs no P4 program: run `p4lb deploy` first", GrpcCode.FAILED_PRECONDITION)
        self._set_context(info)

    def _load_p4info_file(self, path: Path) -> None:
        info = self.mods.p4info_pb2.P4Info()
        self.mods.text_format.Merge(path.read_text(), info, allow_unknown_field=True)
        self._set_context(info)

    def _set_context(self, info: Msg) -> None:
        self.context = Names(info)

    def _rpc(self, what: str, call: Callable[[], T]) -> T:
        """Run one RPC; when the session is gone (by status code) reconnect once and retry (every write here is
        idempotent). A deadline that expires is not retried."""
        for attempt in (1, 2):
            try:
                return call()
            except self.mods.grpc.RpcError as exc:
                code = status_code(exc)
                if attempt == 1 and code in RECONNECT:
                    log.warning("%s: switch session lost (%s), reconnecting", what, code.name)
                    self.close()
                    time.sleep(0.05)
                    self.connect()
                    continue
                hint = " (another controller with a higher election id is primary)" if code is GrpcCode.PERMISSION_DENIED else ""
                late = f" (deadline {self.timeout_s:g} s: the switch may be hung; switch.rpc_timeout_ms sets it)" if code is GrpcCode.DEADLINE_EXCEEDED else ""
                raise SwitchError(f"{what} failed at {self.addr}: {code.name}: {_details(exc)}{hint}{late}", code) from exc
        raise AssertionError("unreachable")

    # ---- names ---------------------------------------------------------------------------------------------
    def _names(self) -> Names:
        """The loaded P4Info's names."""
        if self.context is None:
            raise SwitchError("no P4Info loaded: push the pipeline or load its P4Info first")
        return self.context

    def _obj(self, kind: str, name: str) -> Msg:
        """A P4Info object by kind and name (or unique suffix)."""
        obj = self._names().get(kind, name)
        if obj is None:
            raise SwitchError(f"the P4 program has no {kind} named {name!r}: check the program and the P4Info")
        return obj

    # ---- tables --------------------------------------------------------------------------------------------
    def table_entry(self, table: str, match: dict[str, Key], action: str | None = None, params: dict[str, int] | None = None, into: Msg = None) -> Msg:
        """A TableEntry protobuf (filled in place when `into`, an empty TableEntry, is given: no copies)."""
        pb = self.mods.pb
        t = self._obj("table", table)
        te = into if into is not None else pb.TableEntry()
        te.table_id = t.preamble.id
        fields = {mf.name: mf for mf in t.match_fields}
        for name, key in match.items():
            mf = fields.get(name)
            if mf is None:
                raise SwitchError(f"table {table} has no match field {name!r}: use one of {sorted(fields)}")
            fm = te.match.add(field_id=mf.id)
            if isinstance(key, tuple):
                value, plen = key
                if plen == 0:  # P4Runtime: a /0 LPM key is omitted (wildcard)
                    te.match.pop()
                    continue
                fm.lpm.value, fm.lpm.prefix_len = encode(value, mf.bitwidth, f"{table}.{name}"), plen
            else:
                fm.exact.value = encode(key, mf.bitwidth, f"{table}.{name}")
        if action is not None:
            a = self._obj("action", action)
            te.action.action.action_id = a.preamble.id
            declared = {p.name: p for p in a.params}
            for name, value in (params or {}).items():
                p = declared.get(name)
                if p is None:
                    raise SwitchError(f"action {action} has no parameter {name!r}: use one of {sorted(declared)}")
                te.action.action.params.add(param_id=p.id, value=encode(value, p.bitwidth, f"{action}.{name}"))
        return te

    def _write(self, what: str, updates: list[Msg]) -> None:
        pb = self.mods.pb
        req = pb.WriteRequest()
        req.updates.extend(updates)
        self._send(what, req)

    def _send(self, what: str, req: Msg) -> None:
        """One Write RPC of a built request."""
        self._rpc(what, lambda: self._session().write(req, self.timeout_s))

    def upsert(self, table: str, match: dict[str, Key], action: str, params: dict[str, int] | None = None) -> None:
        """Insert the entry, or modify it if it is already there (deploys are idempotent)."""
        self.write_entries([(table, match, action, params or {})])

    def upsert_many(self, entries: list[Entry]) -> None:
        """Upsert several entries in one Write (INSERT), then MODIFY those that already existed in a second one."""
        self.write_entries(entries)

    def write_entries(self, entries: list[Entry], exists: Sequence[bool] = ()) -> None:
        """Write entries in one Write: MODIFY those known to exist (`exists`), INSERT the others. Updates refused
        because the switch holds otherwise (INSERT: ALREADY_EXISTS, MODIFY: NOT_FOUND) go again, the other way, in
        a second Write."""
        pb = self.mods.pb
        self.connect()
        kinds = [pb.Update.MODIFY if known else pb.Update.INSERT for known in (list(exists) or [False] * len(entries))]
        req = pb.WriteRequest()
        for entry, kind in zip(entries, kinds, strict=True):  # built in place: copying protobufs is most of the cost
            self.table_entry(*entry, into=req.updates.add(type=kind).entity.table_entry)
        what = f"write {len(entries)} entries ({', '.join(sorted({e[0] for e in entries}))})" if len(entries) > 1 else f"write {entries[0][0]} {entries[0][1]} -> {entries[0][2]}{entries[0][3]}"
        try:
            self._send(what, req)
            return
        except SwitchError as exc:
            again = self._refused(exc, kinds)
        flip = {pb.Update.INSERT: pb.Update.MODIFY, pb.Update.MODIFY: pb.Update.INSERT}
        self._write(what, [pb.Update(type=flip[kinds[i]], entity=req.updates[i].entity) for i in again])

    def _refused(self, exc: SwitchError, kinds: list[int]) -> list[int]:
        """The updates of a failed Write that only found the switch holding otherwise; re-raise if any failed else."""
        pb = self.mods.pb
        codes = update_codes(exc.__cause__) or ([exc.code] if len(kinds) == 1 else [])
        wrong = {pb.Update.INSERT: GrpcCode.ALREADY_EXISTS, pb.Update.MODIFY: GrpcCode.NOT_FOUND}
        if len(codes) != len(kinds) or any(c not in (GrpcCode.OK, wrong[k]) for c, k in zip(codes, kinds, strict=True)):
            raise exc
        log.info("%d of %d updates found the switch changed behind our back: sent again the other way", sum(c is not GrpcCode.OK for c in codes), len(codes))
        return [i for i, c in enumerate(codes) if c is not GrpcCode.OK]

    def delete(self, table: str, match: dict[str, Key]) -> None:
        """Delete one entry (absent is fine)."""
        pb = self.mods.pb
        self.connect()
        te = self.table_entry(table, match)
        try:
            self._write(f"delete {table} {match}", [pb.Update(type=pb.Update.DELETE, entity=pb.Entity(table_entry=te))])
        except SwitchError as exc:
            if exc.code is not GrpcCode.NOT_FOUND:
                raise

    def read_table(self, table: str) -> list[TableRow]:
        """Every entry of a table."""
        return self.read_tables([table])[table]

    def read_tables(self, tables: list[str]) -> dict[str, list[TableRow]]:
        """Every entry of several tables, in one Read."""
        pb = self.mods.pb
        self.connect()
        ts = {self._obj("table", t).preamble.id: t for t in tables}
        entities = [pb.Entity(table_entry=pb.TableEntry(table_id=tid)) for tid in ts]
        out: dict[str, list[TableRow]] = {t: [] for t in tables}
        for rep in self._rpc(f"read {', '.join(tables)}", lambda: list(self._session().read_many(entities, self.timeout_s))):
            for ent in rep.entities:
                te = ent.table_entry
                out[ts[te.table_id]].append(self._row(ts[te.table_id], te))
        return out

    def _row(self, table: str, te: Msg) -> TableRow:
        """A TableEntry decoded."""
        by_id = self._names().by_id
        names = {mf.id: mf.name for mf in by_id[te.table_id].match_fields}
        match: dict[str, Key] = {}
        for fm in te.match:
            kind = fm.WhichOneof("field_match_type")
            match[names[fm.field_id]] = (decode(fm.lpm.value), fm.lpm.prefix_len) if kind == "lpm" else decode(fm.exact.value)
        act = by_id[te.action.action.action_id]
        pnames = {p.id: p.name for p in act.params}
        params = {pnames[p.param_id]: decode(p.value) for p in te.action.action.params}
        return TableRow(table, match, act.preamble.name, params)

    # ---- packet I/O and counters ----------------------------------------------------------------------------
    def packet_out(self, metadata: dict[str, int], payload: bytes = b"\0" * 14) -> None:
        """Send a PacketOut whose controller header carries `metadata` (field name -> value)."""
        pb = self.mods.pb
        self.connect()
        header = self._obj("controller_packet_metadata", "packet_out")
        fields = {m.name: m for m in header.metadata}
        req = pb.StreamMessageRequest()
        req.packet.payload = payload
        for name, value in metadata.items():
            m = fields.get(name)
            if m is None:
                raise SwitchError(f"packet_out has no field {name!r}: use one of {sorted(fields)}")
            req.packet.metadata.add(metadata_id=m.id, value=encode(value, m.bitwidth, f"packet_out.{name}"))
        if self.client is None or self.client.ended is not None:
            self.connect()  # the stream broke (switch restarted, or our session dropped): a new one
        self._session().stream_out_q.put(req)

    def packet_in(self, timeout_s: float | None = None) -> dict[str, int]:
        """The next PacketIn's controller header as field name -> value."""
        return self.packet_in_with_payload(timeout_s)[0]

    def packet_in_with_payload(self, timeout_s: float | None = None) -> tuple[dict[str, int], bytes]:
        """The next PacketIn (within the deadline): its controller header (field name -> value) and the bytes after it."""
        header = self._obj("controller_packet_metadata", "packet_in")
        names = {m.id: m.name for m in header.metadata}
        wait = self.timeout_s if timeout_s is None else timeout_s
        msg = self.client.packet(wait) if self.client is not None else StreamEnd(GrpcCode.UNAVAILABLE, "no session")
        if msg is None:
            raise SwitchError(f"no PacketIn from {self.addr} within {wait:g} s (DEADLINE_EXCEEDED): is simple_switch_grpc running with --cpu-port 510?", GrpcCode.DEADLINE_EXCEEDED)
        if isinstance(msg, StreamEnd):
            raise SwitchError(f"stream to {self.addr} ended before a PacketIn came: {msg.code.name}: {msg.details}", msg.code)
        if msg.WhichOneof("update") == "error":
            code = GrpcCode(msg.error.canonical_code) if msg.error.canonical_code in GrpcCode._value2member_map_ else GrpcCode.UNKNOWN
            raise SwitchError(f"the switch at {self.addr} refused a PacketOut: {code.name}: {msg.error.message}", code)
        return {names[m.metadata_id]: decode(m.value) for m in msg.packet.metadata}, bytes(msg.packet.payload)

    def register_size(self, register: str) -> int:
        """How many cells the loaded P4Info gives a register."""
        return int(self._obj("register", register).size)

    def p4_object(self, kind: str, name: str) -> Msg | None:
        """A P4Info object of the loaded program by kind ("table", "action", "register", "counter",
        "controller_packet_metadata") and name or unique suffix; None if it has none."""
        return self._names().get(kind, name)

    def counter_cells(self, counter: str, indexes: Sequence[int]) -> dict[int, int]:
        """Packet counts of some cells of a counter, in one Read (index -> count)."""
        pb = self.mods.pb
        self.connect()
        c = self._obj("counter", counter)
        if any(not 0 <= i < c.size for i in indexes):
            raise SwitchError(f"counter {counter} has {c.size} cells: cells {min(indexes)}..{max(indexes)} are out of range (an older p4lb.p4? deploy the new pipeline)", GrpcCode.OUT_OF_RANGE)
        entities = [pb.Entity(counter_entry=pb.CounterEntry(counter_id=c.preamble.id, index=pb.Index(index=i))) for i in indexes]
        out = {}
        for rep in self._rpc(f"read {counter}", lambda: list(self._session().read_many(entities, self.timeout_s))):
            for ent in rep.entities:
                out[ent.counter_entry.index.index] = ent.counter_entry.data.packet_count
        return out

    def counter_read(self, counter: str) -> dict[int, int]:
        """Packet counts of every cell of a counter."""
        pb = self.mods.pb
        self.connect()
        c = self._obj("counter", counter)
        entity = pb.Entity(counter_entry=pb.CounterEntry(counter_id=c.preamble.id))
        out = {}
        for rep in self._rpc(f"read {counter}", lambda: list(self._session().read_one(entity, self.timeout_s))):
            for ent in rep.entities:
                out[ent.counter_entry.index.index] = ent.counter_entry.data.packet_count
        return out


class Names:
    """P4Info objects by kind and name: the full name ("MyIngress.vip") or any suffix that is unique ("vip")."""

    KINDS = {"table": "tables", "action": "actions", "register": "registers", "counter": "counters", "controller_packet_metadata": "controller_packet_metadata"}

    def __init__(self, info: Msg) -> None:
        self.info = info
        self.by_id: dict[int, Msg] = {}
        self.names: dict[tuple[str, str], Msg] = {}
        ambiguous: set[tuple[str, str]] = set()
        for kind, attr in self.KINDS.items():
            for obj in getattr(info, attr):
                self.by_id[obj.preamble.id] = obj
                parts = obj.preamble.name.split(".")
                for i in range(len(parts)):
                    key = (kind, ".".join(parts[i:]))
                    if key in self.names and self.names[key] is not obj:
                        ambiguous.add(key)
                    self.names[key] = obj
        for key in ambiguous:
            if key[1] != self.names[key].preamble.name:
                del self.names[key]

    def get(self, kind: str, name: str) -> Msg | None:
        """The object, or None."""
        return self.names.get((kind, name))
