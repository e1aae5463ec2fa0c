"""The table entries the controller writes into p4lb.p4 for one service, defined once.

The controller writes exactly these (`P4RuntimeSwitch`), a counterexample replays them (`verify.bmv2.cex`), and
the JSON equivalence takes them as its table assumptions (`verify.bmv2.equivalence.p4lb_tables`, with a symbolic
service, version, group size and member): a change here changes what is proven about the compiled program.
Match fields and action parameters carry their P4Info names, in the program's key and parameter order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p4lb.model.config import Backend, LbConfig
from p4lb.model.ops import Target, Write

Key = Any  # an exact value (int, or a Z3 term in the proofs) or (value, prefix_len) for an LPM field
Value = Any  # an action parameter: an int, or a Z3 term in the proofs

SERVICE_KEY = "meta.lb.service"  # the first key of every per-service table
VERSION_KEY = "meta.lb.version"
POSITION_KEY = "meta.lb.position"
BACKEND_KEY = "meta.lb.backend"


@dataclass(frozen=True)
class TableEntry:
    """One table entry: match fields and action parameters by P4Info name, in the program's order."""

    table: str
    match: tuple[tuple[str, Key], ...]
    action: str
    params: tuple[tuple[str, Value], ...] = ()


def vip(cfg: LbConfig, version: Value, service: Value = None) -> TableEntry:
    """The service's entry point: (VIP, port) -> lb_select(service, committed version)."""
    svc = cfg.service if service is None else service
    return TableEntry("vip", (("hdr.ipv4.dstAddr", cfg.vip), ("hdr.tcp.dstPort", cfg.vip_port)), "lb_select", (("service", svc), ("version", version)))


def rr_group(cfg: LbConfig, version: Value, size: Value, service: Value = None) -> TableEntry:
    """A version's group size: (service, version) -> set_group(size)."""
    svc = cfg.service if service is None else service
    return TableEntry("rr_group", ((SERVICE_KEY, svc), (VERSION_KEY, version)), "set_group", (("size", size),))


def rr_member(cfg: LbConfig, version: Value, position: Value, backend: Value, service: Value = None) -> TableEntry:
    """A version's member at a position: (service, version, position) -> set_member(backend id)."""
    svc = cfg.service if service is None else service
    return TableEntry("rr_member", ((SERVICE_KEY, svc), (VERSION_KEY, version), (POSITION_KEY, position)), "set_member", (("backend", backend),))


def backend(cfg: LbConfig, b: Backend, service: Value = None) -> TableEntry:
    """A backend's rewrite: (service, id) -> set_backend(mac, address, switch port)."""
    svc = cfg.service if service is None else service
    return TableEntry("backend", ((SERVICE_KEY, svc), (BACKEND_KEY, b.id)), "set_backend", (("mac", b.mac), ("addr", b.ip), ("port", b.port)))


def return_path(cfg: LbConfig) -> tuple[TableEntry, ...]:
    """`forward` to each backend and to the clients, the VIP's other traffic dropped, and `send_frame`'s source
    rewrite of each backend's replies toward the client port."""
    out = [TableEntry("forward", (("hdr.ipv4.dstAddr", (b.ip, 32)),), "set_nhop", (("mac", b.mac), ("port", b.port))) for b in cfg.backends]
    out.append(TableEntry("forward", (("hdr.ipv4.dstAddr", (cfg.vip, 32)),), "drop"))  # the VIP answers nothing but TCP to vip_port
    out.append(TableEntry("forward", (("hdr.ipv4.dstAddr", (cfg.client_net, cfg.client_prefix)),), "set_nhop", (("mac", cfg.client_mac), ("port", cfg.client_port))))
    out += [TableEntry("send_frame", (("std.egress_port", cfg.client_port), ("hdr.ipv4.srcAddr", b.ip)), "rewrite_sip", (("sip", cfg.vip),)) for b in cfg.backends]
    return tuple(out)


STATIC_TABLES = frozenset({"backend", "forward", "send_frame"})  # what `static` may write (the JSON proof relies on it)


def static(cfg: LbConfig, service: Value = None) -> tuple[TableEntry, ...]:
    """What a deploy writes besides the versioned state: every `backend` entry, then the return path."""
    return (*(backend(cfg, b, service) for b in cfg.backends), *return_path(cfg))


def kept_on_retire(cfg: LbConfig, others: list[LbConfig], other_addrs: set[int], others_on_switch: bool) -> list[TableEntry]:
    """The service's return-path entries another service may need when it retires: any of `others`' (the config's
    other services), a route or source rewrite of an address another service uses as a backend or VIP
    (`other_addrs`, from the config and the switch), and the client route while another service is on the switch."""
    needed = {(e.table, e.match) for o in others if o.service != cfg.service for e in return_path(o)}
    addrs = other_addrs | {a for o in others if o.service != cfg.service for a in (o.vip, *(b.ip for b in o.backends))}
    out = []
    for e in return_path(cfg):
        match = dict(e.match)
        if e.table == "send_frame":
            shared = match["hdr.ipv4.srcAddr"] in addrs
        elif (dst := match["hdr.ipv4.dstAddr"]) == (cfg.client_net, cfg.client_prefix):
            shared = others_on_switch or any(o.service != cfg.service for o in others)
        else:
            shared = dst[0] in addrs  # a backend's or the VIP's address
        if (e.table, e.match) in needed or shared:
            out.append(e)
    return out


def of_write(cfg: LbConfig, w: Write) -> TableEntry:
    """The entry a model table write (vip, rr_group, rr_member) sets."""
    if w.target is Target.VIP:
        return vip(cfg, w.value)
    if w.target is Target.RR_GROUP:
        return rr_group(cfg, w.index[0], w.value)
    if w.target is Target.RR_MEMBER:
        return rr_member(cfg, w.index[0], w.index[1], w.value)
    raise ValueError(f"{w.target.value} is a register, not a table: it has no entry")

