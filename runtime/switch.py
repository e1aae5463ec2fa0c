"""The switch as the controller sees it: the model's writes in, table and register contents out.

Two implementations of one interface: `ModelSwitch` (the executable model; for tests and --dry-run) and
`P4RuntimeSwitch` (BMv2 through p4runtime-shell, whose global client is wrapped here and nowhere else).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from model.config import LbConfig
from model.ops import Write
from model.p4lb import P4lbState, p4lb_write
from model.packet import DropReason
from runtime.errors import SwitchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwitchView:
    """What the controller reads back: the committed version and both versions' groups."""

    vip: int | None  # None when no vip entry exists (not deployed)
    groups: tuple[tuple[int, ...], tuple[int, ...]]
    rr_next: tuple[int, int] = (0, 0)
    lb_drops: dict[str, int] = field(default_factory=dict)
    backend_flows: dict[int, int] = field(default_factory=dict)


class Switch(Protocol):
    """What the controller needs from a switch."""

    def install_pipeline(self) -> None: ...
    def write(self, w: Write) -> None: ...
    def install_backends(self, cfg: LbConfig) -> None: ...
    def read(self) -> SwitchView: ...


class ModelSwitch:
    """The executable model standing in for the switch; records every write in order."""

    def __init__(self, cfg: LbConfig) -> None:
        self.cfg = cfg
        self.state = P4lbState()
        self.deployed = False
        self.log: list[Write] = []

    def install_pipeline(self) -> None:
        self.deployed = True

    def install_backends(self, cfg: LbConfig) -> None:
        self.log.append(Write("backend", (), cfg.n))

    def write(self, w: Write) -> None:
        self.state = p4lb_write(self.state, w)
        if w.target == "vip":
            self.deployed = True
        self.log.append(w)

    def read(self) -> SwitchView:
        st = self.state
        return SwitchView(
            vip=st.vip if self.deployed else None,
            groups=(st.members(0), st.members(1)),
            rr_next=st.rr_next,
            lb_drops={r.name.lower(): st.lb_drops[r] for r in DropReason if r.counted},
            backend_flows=dict(st.backend_flows),
        )


def _require_shell():
    try:
        import p4runtime_sh.shell as sh  # noqa: PLC0415
    except ImportError as exc:
        raise SwitchError("p4runtime-shell is not installed: pip install -e '.[switch]'") from exc
    return sh


class P4RuntimeSwitch:
    """BMv2 over P4Runtime. Table, register and action names are the model's."""

    def __init__(self, grpc: str, device_id: int, election_id: tuple[int, int], p4info: str, bmv2_json: str, cfg: LbConfig) -> None:
        self.sh = _require_shell()
        self.cfg = cfg
        self.args = {"grpc_addr": grpc, "device_id": device_id, "election_id": election_id}
        self.files = (p4info, bmv2_json)
        self.connected = False

    def _connect(self, push: bool) -> None:
        if self.connected and not push:
            return
        if self.connected:
            self.sh.teardown()
        try:
            config = self.sh.FwdPipeConfig(*self.files) if push else None
            self.sh.setup(**self.args, config=config)
        except Exception as exc:  # p4runtime-shell raises plain exceptions and grpc errors
            raise SwitchError(f"cannot reach the switch at {self.args['grpc_addr']} (device {self.args['device_id']}): {exc}") from exc
        self.connected = True

    def install_pipeline(self) -> None:
        """Push the P4 program (p4info + BMv2 JSON)."""
        self._connect(push=True)

    def install_backends(self, cfg: LbConfig) -> None:
        """Static state: `backend` entries, the return path (`forward` to backends, `send_frame` SNAT), idle_timeout."""
        self._connect(push=False)
        sh = self.sh
        for b in cfg.backends:
            te = sh.TableEntry("MyIngress.backend")(action="MyIngress.set_backend")
            te.match["meta.lb.backend"] = str(b.id)
            te.action["mac"], te.action["addr"], te.action["port"] = str(b.mac), str(b.ip), str(b.port)
            self._upsert(te)
            fw = sh.TableEntry("MyIngress.forward")(action="MyIngress.set_nhop")
            fw.match["hdr.ipv4.dstAddr"] = f"{b.ip}/32"
            fw.action["mac"], fw.action["port"] = str(b.mac), str(b.port)
            self._upsert(fw)
        snat = sh.TableEntry("MyEgress.send_frame")(action="MyEgress.rewrite_sip")
        snat.match["std.egress_port"] = str(cfg.client_port)
        snat.action["sip"] = str(cfg.vip)
        self._upsert(snat)
        self._write_register("MyIngress.idle_timeout", 0, cfg.idle_timeout_us)

    def _upsert(self, te) -> None:
        try:
            te.insert()
        except Exception:  # already there: modify instead (idempotent deploys)
            te.modify()

    def _write_register(self, name: str, index: int, value: int) -> None:
        """One register cell, as a P4Runtime RegisterEntry MODIFY (canonical bytestring)."""
        from p4.v1 import p4runtime_pb2  # noqa: PLC0415
        from p4runtime_sh.context import P4Type  # noqa: PLC0415

        update = p4runtime_pb2.Update(type=p4runtime_pb2.Update.MODIFY)
        entry = update.entity.register_entry
        entry.register_id = self.sh.context.get_obj_id(P4Type.register, name)
        entry.index.index = index
        entry.data.bitstring = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
        try:
            self.sh.client.write_update(update)
        except Exception as exc:
            raise SwitchError(f"writing {name}[{index}] = {value} failed: {exc}") from exc

    def write(self, w: Write) -> None:
        """One atomic write, as the model names it."""
        self._connect(push=False)
        sh = self.sh
        if w.target == "vip":
            te = sh.TableEntry("MyIngress.vip")(action="MyIngress.lb_select")
            te.match["hdr.ipv4.dstAddr"] = str(self.cfg.vip)
            te.match["hdr.tcp.dstPort"] = str(self.cfg.vip_port)
            te.action["version"] = str(w.value)
            self._upsert(te)
        elif w.target in ("rr_group", "rr_member"):
            action = "set_group" if w.target == "rr_group" else "set_member"
            te = sh.TableEntry(f"MyIngress.{w.target}")(action=f"MyIngress.{action}")
            te.match["meta.lb.version"] = str(w.index[0])
            if w.target == "rr_member":
                te.match["meta.lb.position"] = str(w.index[1])
                te.action["backend"] = str(w.value)
            else:
                te.action["size"] = str(w.value)
            self._upsert(te)
        elif w.target == "rr_next":
            self._write_register("MyIngress.rr_next", w.index[0], w.value)
        else:
            raise SwitchError(f"no such switch target {w.target!r}")

    def read(self) -> SwitchView:
        """Read the committed version and both groups back."""
        self._connect(push=False)
        sh = self.sh
        vip = None
        for te in sh.TableEntry("MyIngress.vip").read():
            vip = int(te.action["version"].value, 0) if hasattr(te.action["version"], "value") else int(str(te.action["version"]), 0)
        sizes, members = [0, 0], [{}, {}]
        for te in sh.TableEntry("MyIngress.rr_group").read():
            sizes[int(te.match["meta.lb.version"].exact.value.hex(), 16)] = int(te.action["size"].value.hex(), 16)
        for te in sh.TableEntry("MyIngress.rr_member").read():
            v = int(te.match["meta.lb.version"].exact.value.hex(), 16)
            members[v][int(te.match["meta.lb.position"].exact.value.hex(), 16)] = int(te.action["backend"].value.hex(), 16)
        groups = tuple(tuple(members[v].get(i, 0) for i in range(sizes[v])) for v in (0, 1))
        return SwitchView(vip, groups)  # type: ignore[arg-type]

    def close(self) -> None:
        """Drop the P4Runtime session."""
        if self.connected:
            self.sh.teardown()
            self.connected = False
