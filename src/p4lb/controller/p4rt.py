"""One P4Runtime session to one switch: p4runtime-shell's client object, wrapped so no global state leaks.

p4runtime-shell's `shell` module keeps a process-wide client and context; this module uses only its
`P4RuntimeClient` (stream, arbitration, pipeline push) and `Context` (P4Info names to ids) as plain objects, and
builds the protobufs itself. Names are P4Info names or any unique suffix of them ("vip" for "MyIngress.vip").
Values are integers; LPM keys are (value, prefix_len). Every gRPC failure becomes a SwitchError that says what
was being done and at which address.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from p4lb.controller.errors import MissingExtraError, SwitchError

log = logging.getLogger(__name__)

Key = int | tuple[int, int]  # exact value, or (value, prefix_len) for LPM


@dataclass(frozen=True)
class TableRow:
    """One table entry read back: match fields and action parameters as integers."""

    table: str
    match: dict[str, Key]
    action: str
    params: dict[str, int]


def _modules():
    try:
        import google.protobuf.text_format as text_format  # noqa: PLC0415
        import grpc  # noqa: PLC0415
        from p4.v1 import p4runtime_pb2  # noqa: PLC0415
        from p4runtime_sh.context import Context, P4Type  # noqa: PLC0415
        from p4runtime_sh.p4runtime import P4RuntimeClient  # noqa: PLC0415
    except ImportError as exc:
        raise MissingExtraError(exc.name) from exc
    return text_format, grpc, p4runtime_pb2, Context, P4Type, P4RuntimeClient


def encode(value: int, bitwidth: int, what: str) -> bytes:
    """P4Runtime's canonical bytestring (no leading zero bytes) of a value that must fit bitwidth bits."""
    if not 0 <= value < 1 << bitwidth:
        raise SwitchError(f"{what} = {value} does not fit in bit<{bitwidth}>: use 0..{(1 << bitwidth) - 1}")
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def decode(data: bytes) -> int:
    """A bytestring back to an integer."""
    return int.from_bytes(data, "big") if data else 0


class P4rt:
    """A primary P4Runtime session with one device; reconnects once when the switch went away and came back."""

    def __init__(self, grpc_addr: str, device_id: int = 0, election_id: tuple[int, int] = (0, 1), timeout_s: float = 5.0) -> None:
        self.addr, self.device_id, self.election_id, self.timeout_s = grpc_addr, device_id, election_id, timeout_s
        self.mods = _modules()
        self.client = None
        self.context = None

    # ---- session -------------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the stream and win arbitration (we are the primary with our election id)."""
        if self.client is not None:
            return
        _, grpc, _, _, _, client_cls = self.mods
        channel = grpc.insecure_channel(self.addr)
        try:
            grpc.channel_ready_future(channel).result(timeout=self.timeout_s)
        except grpc.FutureTimeoutError:
            raise SwitchError(f"switch unreachable at {self.addr} (no gRPC answer in {self.timeout_s:g} s): start simple_switch_grpc or fix switch.grpc") from None
        finally:
            channel.close()
        try:
            self.client = client_cls(self.device_id, self.addr, self.election_id)
        except SystemExit:  # p4runtime-shell exits when arbitration gets no answer
            self.client = None
            raise SwitchError(f"switch at {self.addr} did not answer arbitration for device {self.device_id}: check switch.device_id") from None
        log.info("P4Runtime session with %s device %d, election id %s", self.addr, self.device_id, self.election_id)

    def close(self) -> None:
        """End the stream (its reader thread would otherwise keep the process alive)."""
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
        self._rpc(f"push pipeline {Path(bmv2_json).name}", lambda: self.client.set_fwd_pipe_config(str(p4info), str(bmv2_json)))
        self._load_p4info_file(Path(p4info))

    def load_p4info(self, p4info: Path | None = None) -> None:
        """Learn names from a P4Info file, or from the switch's running pipeline."""
        if p4info is not None:
            self._load_p4info_file(Path(p4info))
            return
        self.connect()
        info = self._rpc("read the running pipeline", self.client.get_p4info)
        if not info.tables:
            raise SwitchError(f"the switch at {self.addr} runs no P4 program: run `p4lb deploy` first")
        self._set_context(info)

    def _load_p4info_file(self, path: Path) -> None:
        text_format, _, _, _, _, _ = self.mods
        from p4.config.v1 import p4info_pb2  # noqa: PLC0415

        info = p4info_pb2.P4Info()
        text_format.Merge(path.read_text(), info, allow_unknown_field=True)
        self._set_context(info)

    def _set_context(self, info) -> None:
        self.context = Names(info)

    def _rpc(self, what: str, call):
        """Run one RPC; on a dropped connection reconnect once and retry (every write here is idempotent)."""
        for attempt in (1, 2):
            try:
                return call()
            except Exception as exc:  # grpc.RpcError, p4runtime-shell's wrappers
                if attempt == 1 and _unavailable(exc):
                    log.warning("%s: switch connection lost (%s), reconnecting", what, exc)
                    self.close()
                    time.sleep(0.2)
                    self.connect()
                    continue
                hint = " (another controller with a higher election id is primary)" if "Not primary" in str(exc) else ""
                raise SwitchError(f"{what} failed at {self.addr}: {_short(exc)}{hint}") from exc
        raise AssertionError("unreachable")

    # ---- names ---------------------------------------------------------------------------------------------
    def _obj(self, kind: str, name: str):
        if self.context is None:
            raise SwitchError("no P4Info loaded: push the pipeline or load its P4Info first")
        obj = self.context.get(kind, name)
        if obj is None:
            raise SwitchError(f"the P4 program has no {kind} named {name!r}: check the program and the P4Info")
        return obj

    # ---- tables --------------------------------------------------------------------------------------------
    def table_entry(self, table: str, match: dict[str, Key], action: str | None = None, params: dict[str, int] | None = None):
        """A TableEntry protobuf."""
        pb = self.mods[2]
        t = self._obj("table", table)
        te = pb.TableEntry(table_id=t.preamble.id)
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

    def _write(self, what: str, updates) -> None:
        pb = self.mods[2]
        req = pb.WriteRequest()
        req.updates.extend(updates)
        self._rpc(what, lambda: self.client.write(req))

    def upsert(self, table: str, match: dict[str, Key], action: str, params: dict[str, int] | None = None) -> None:
        """Insert the entry, or modify it if it is already there (deploys are idempotent)."""
        pb = self.mods[2]
        self.connect()
        te = self.table_entry(table, match, action, params)
        what = f"write {table} {match} -> {action}{params or {}}"
        try:
            self._write(what, [pb.Update(type=pb.Update.INSERT, entity=pb.Entity(table_entry=te))])
        except SwitchError as exc:
            if "ALREADY_EXISTS" not in str(exc.__cause__) and "already exists" not in str(exc).lower():
                raise
            self._write(what, [pb.Update(type=pb.Update.MODIFY, entity=pb.Entity(table_entry=te))])

    def delete(self, table: str, match: dict[str, Key]) -> None:
        """Delete one entry (absent is fine)."""
        pb = self.mods[2]
        self.connect()
        te = self.table_entry(table, match)
        try:
            self._write(f"delete {table} {match}", [pb.Update(type=pb.Update.DELETE, entity=pb.Entity(table_entry=te))])
        except SwitchError as exc:
            if "NOT_FOUND" not in str(exc.__cause__):
                raise

    def read_table(self, table: str) -> list[TableRow]:
        """Every entry of a table."""
        pb = self.mods[2]
        self.connect()
        t = self._obj("table", table)
        entity = pb.Entity(table_entry=pb.TableEntry(table_id=t.preamble.id))
        names = {mf.id: mf.name for mf in t.match_fields}
        rows = []
        for rep in self._rpc(f"read {table}", lambda: list(self.client.read_one(entity))):
            for ent in rep.entities:
                te = ent.table_entry
                match: dict[str, Key] = {}
                for fm in te.match:
                    kind = fm.WhichOneof("field_match_type")
                    match[names[fm.field_id]] = (decode(fm.lpm.value), fm.lpm.prefix_len) if kind == "lpm" else decode(fm.exact.value)
                act = self.context.by_id[te.action.action.action_id]
                pnames = {p.id: p.name for p in act.params}
                params = {pnames[p.param_id]: decode(p.value) for p in te.action.action.params}
                rows.append(TableRow(table, match, act.preamble.name, params))
        return rows

    # ---- packet I/O and counters ----------------------------------------------------------------------------
    def packet_out(self, metadata: dict[str, int], payload: bytes = b"\0" * 14) -> None:
        """Send a PacketOut whose controller header carries `metadata` (field name -> value)."""
        pb = self.mods[2]
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
        self.client.stream_out_q.put(req)

    def packet_in(self, timeout_s: float = 2.0) -> dict[str, int]:
        """The next PacketIn's controller header as field name -> value."""
        return self.packet_in_with_payload(timeout_s)[0]

    def packet_in_with_payload(self, timeout_s: float = 2.0) -> tuple[dict[str, int], bytes]:
        """The next PacketIn: its controller header (field name -> value) and the bytes after it."""
        header = self._obj("controller_packet_metadata", "packet_in")
        names = {m.id: m.name for m in header.metadata}
        msg = self.client.get_stream_packet("packet", timeout=timeout_s)
        if msg is None:
            raise SwitchError(f"no PacketIn from {self.addr} within {timeout_s:g} s: is simple_switch_grpc running with --cpu-port 510?")
        return {names[m.metadata_id]: decode(m.value) for m in msg.packet.metadata}, bytes(msg.packet.payload)

    def register_size(self, register: str) -> int:
        """How many cells the loaded P4Info gives a register."""
        return int(self._obj("register", register).size)

    def counter_read(self, counter: str) -> dict[int, int]:
        """Packet counts of every cell of a counter."""
        pb = self.mods[2]
        self.connect()
        c = self._obj("counter", counter)
        entity = pb.Entity(counter_entry=pb.CounterEntry(counter_id=c.preamble.id))
        out = {}
        for rep in self._rpc(f"read {counter}", lambda: list(self.client.read_one(entity))):
            for ent in rep.entities:
                out[ent.counter_entry.index.index] = ent.counter_entry.data.packet_count
        return out


class Names:
    """P4Info objects by kind and name: the full name ("MyIngress.vip") or any suffix that is unique ("vip")."""

    KINDS = {"table": "tables", "action": "actions", "register": "registers", "counter": "counters", "controller_packet_metadata": "controller_packet_metadata"}

    def __init__(self, info) -> None:
        self.info = info
        self.by_id = {}
        self.names: dict[tuple[str, str], object] = {}
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

    def get(self, kind: str, name: str):
        """The object, or None."""
        return self.names.get((kind, name))


def _unavailable(exc: Exception) -> bool:
    """The session is gone: the switch went away, or restarted and no longer knows us as primary."""
    text = f"{exc!r} {exc} {getattr(exc, '__cause__', '')}"
    return any(s in text for s in ("UNAVAILABLE", "StatusCode.CANCELLED", "Not primary"))


def _short(exc: Exception) -> str:
    """The useful line of a gRPC / P4Runtime error."""
    details = getattr(exc, "details", None)
    if callable(details):
        try:
            return f"{exc.code().name}: {details()}"
        except Exception:  # not a grpc.Call
            pass
    text = " ".join(line.strip() for line in str(exc).strip().splitlines())
    return text or type(exc).__name__
