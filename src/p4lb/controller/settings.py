"""The controller's TOML configuration, parsed strictly into the frozen dataclasses the model uses.

Every key is checked: an unknown one is refused with the nearest valid key suggested, every value is type- and
range-checked, and any TOML document (wrong shapes, wrong types, bad bytes) gives a ConfigFileError, never a
traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import enum
import ipaddress
import json
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, cast

from p4lb.controller.errors import ConfigFileError
from p4lb.model.config import CPU_PORT, MAX_BACKENDS, P4LB_BUCKET, P4LB_TABLE_BITS, P4LB_WAYS, SERVICES, Backend, LbConfig
from p4lb.model.crc import ip_str
from p4lb.model.errors import ConfigError
from p4lb.model.flowtable import WAY_ORDERS
from p4lb.model.pool import MAX_POSITIONS, MAX_WEIGHT
from p4lb.p4 import artifacts

MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
PATH_RE = re.compile(r"^/[\x21-\x7e]*$")  # printable ASCII, no space, no CR/LF
HOST_RE = re.compile(r"^[A-Za-z0-9._\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
GRPC_RE = re.compile(r"^[\w.\-\[\]:]+:\d{1,5}$")
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_SERVICE = "default"  # the name of the one service of a config in the single form ([vip] and [[backend]])
MAX_ELECTION_ID = (1 << 128) - 2  # one-shot commands take the id just above
U64 = (1 << 64) - 1

Table = Mapping[str, object]  # a parsed TOML table: values are checked before use


class CheckKind(enum.Enum):
    """How a backend is checked."""

    TCP = "tcp"  # connect
    HTTP = "http"  # GET path, expect a status
    HTTPS = "https"  # the same over TLS


@dataclass(frozen=True)
class HealthCheck:
    """How backends are checked: TCP connect, HTTP or HTTPS GET, with rise/fall hysteresis.

    One deadline (`timeout_ms`) covers the whole probe: connect, TLS handshake, request and the full response.
    """

    kind: CheckKind = CheckKind.TCP
    port: int = 80
    path: str = "/"
    expect_status: int = 200
    interval_ms: int = 1000
    timeout_ms: int = 500
    rise: int = 2
    fall: int = 2
    host: str = ""  # the Host header; empty: the backend's health address
    tls_verify: bool = True  # https: check the certificate chain and name
    ca_file: str = ""  # https: trust these CAs instead of the system's
    max_concurrent: int = 256  # probes in flight at once

    def __post_init__(self) -> None:
        if not isinstance(cast(object, self.kind), CheckKind):  # a kind given as its name ("http")
            object.__setattr__(self, "kind", CheckKind(self.kind))


@dataclass(frozen=True)
class SwitchTarget:
    """Where the switch is, what pipeline it runs, and how the controller talks to it."""

    grpc: str = "127.0.0.1:9559"
    device_id: int = 0
    election_id: tuple[int, int] = (0, 1)
    p4info: str = str(artifacts("p4lb")[0])  # default: the compiled program shipped in the package
    bmv2_json: str = str(artifacts("p4lb")[1])
    rpc_timeout_ms: int = 2000  # the deadline of every P4Runtime call, stream answer and connection attempt
    tls: bool = False
    root_cert: str = ""  # TLS: CA certificates (PEM); empty: the system's
    client_cert: str = ""  # TLS: our certificate and key (PEM), for mutual TLS
    client_key: str = ""
    lock_timeout_ms: int = 10_000  # how long a command waits for another controller's operation on this switch

    @property
    def key(self) -> str:
        """The switch's identity for the per-switch lock: address and device id."""
        return f"{self.grpc}#{self.device_id}"


@dataclass(frozen=True)
class Settings:
    """Everything the controller needs."""

    lb: LbConfig
    health: HealthCheck
    switch: SwitchTarget
    active: int
    health_addresses: tuple[str, ...]
    health_ports: tuple[int, ...] = ()  # per backend; 0 (or missing): health.port
    weights: tuple[int, ...] = ()  # per backend, 1..MAX_WEIGHT (missing: 1); the state file keeps later `p4lb weight` changes
    name: str = DEFAULT_SERVICE  # the service's name ([[service]] name; "default" in the single form)
    where: str = ""  # its table in the config: "" in the single form ([vip], [[backend]]), "service[i]" in the multi-service form

    def field(self, single: str) -> str:
        """A field named as the single form spells it (vip.service, vip.port, backend[2].weight, active) as this
        service's config spells it (service[3].id, service[3].port, service[3].backend[2].weight, service[3].active)."""
        return service_field(self.where, single)

    def health_targets(self) -> tuple[tuple[str, int], ...]:
        """(address, port) to probe, per backend in id order."""
        ports = self.health_ports + (0,) * (len(self.health_addresses) - len(self.health_ports))
        return tuple((a, p or self.health.port) for a, p in zip(self.health_addresses, ports, strict=False))


@dataclass(frozen=True)
class Config:
    """A whole configuration: one service (the single form: [vip], [[backend]]) or several ([[service]] tables),
    each a Settings of its own; the switch, the flow table and the default health check are shared."""

    services: tuple[Settings, ...]
    multi: bool = False  # written as [[service]] tables

    @property
    def switch(self) -> SwitchTarget:
        """The switch every service is on."""
        return self.services[0].switch

    @property
    def names(self) -> tuple[str, ...]:
        """The services' names, in config order."""
        return tuple(s.name for s in self.services)

    def service(self, name: str) -> Settings | None:
        """The service of that name, or None."""
        return next((s for s in self.services if s.name == name), None)

    def __iter__(self) -> Iterator[Settings]:
        return iter(self.services)


def service_field(where: str, single: str) -> str:
    """A field named as the single form spells it, as the service at `where` spells it ("": the single form)."""
    if not where:
        return single
    if single == "vip.service":
        return f"{where}.id"
    if single.startswith("vip."):
        return f"{where}.{single.removeprefix('vip.')}"
    if single == "vip":
        return where
    if single.startswith(("backend", "active", "health")):
        return f"{where}.{single}"
    return single


@contextlib.contextmanager
def named(settings: Settings) -> Iterator[None]:
    """ConfigFileErrors raised inside (named as the single form spells fields) renamed to this service's fields."""
    try:
        yield
    except ConfigFileError as exc:
        field = settings.field(exc.field)
        if field == exc.field:
            raise
        raise ConfigFileError(field, exc.value, exc.fix) from None


# ---- the schema ------------------------------------------------------------------------------------------------
TOP_KEYS = ("active", "vip", "switch", "health", "flows", "backend", "service")
SERVICE_KEYS = ("name", "id", "address", "port", "client_port", "client_net", "client_mac", "active", "health", "backend")
SINGLE_FORM = ("vip", "backend", "active")  # the single form's top-level keys, which [[service]] tables replace
SECTION_KEYS: Mapping[str, tuple[str, ...]] = {
    "vip": ("address", "port", "service", "client_port", "client_net", "client_mac"),
    "switch": ("grpc", "device_id", "election_id", "p4info", "bmv2_json", "rpc_timeout_ms", "tls", "root_cert", "client_cert", "client_key", "lock_timeout_ms"),
    "health": ("kind", "port", "path", "host", "expect_status", "interval_ms", "timeout_ms", "rise", "fall", "tls_verify", "ca_file", "max_concurrent"),
    "flows": ("idle_timeout_s", "table_bits", "ways", "bucket"),
    "backend": ("address", "mac", "port", "health_address", "health_port", "weight"),
}


def _name(where: str, key: str) -> str:
    """The dotted field name; a key TOML would need quotes for is quoted (so an empty or odd key still shows)."""
    shown = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)
    return f"{where}.{shown}" if where else shown


def _known(table: Table, valid: tuple[str, ...], where: str) -> None:
    """Refuse keys the schema does not have, suggesting the nearest valid one."""
    for key in table:
        if key in valid:
            continue
        near = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
        hint = f"did you mean {_name(where, near[0])}? " if near else ""
        raise ConfigFileError(_name(where, str(key)), table[key], f"unknown key: {hint}(valid keys: {', '.join(valid)})")


def _section(data: Table, key: str) -> Table:
    """A [key] table (absent: empty); anything else is refused."""
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigFileError(key, value, f"use a [{key}] table")
    _known(value, SECTION_KEYS[key], key)
    return value


def _int(table: Table, key: str, default: int, lo: int, hi: int, where: str, fix: str = "") -> int:
    """A whole number in lo..hi (booleans are not numbers)."""
    value = table.get(key, default)
    field = _name(where, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigFileError(field, value, f"use a whole number ({fix or f'{lo}..{hi}'})")
    if not lo <= value <= hi:
        raise ConfigFileError(field, value, fix or f"use {lo}..{hi}")
    return value


def _str(table: Table, key: str, default: str, where: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise ConfigFileError(_name(where, key), value, "use a string (in double quotes)")
    return value


def _bool(table: Table, key: str, default: bool, where: str) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigFileError(_name(where, key), value, "use true or false")
    return value


def _ipv4(value: object, field: str) -> str:
    """A dotted IPv4 address (never a hostname: no DNS lookups)."""
    if not isinstance(value, str) or value.count(".") != 3:
        raise ConfigFileError(field, value, "use a dotted IPv4 address such as 10.0.2.2")
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ConfigFileError(field, value, "use a dotted IPv4 address such as 10.0.2.2") from None


def _address(value: object, field: str) -> int:
    return int(ipaddress.IPv4Address(_ipv4(value, field)))


def _network(value: object, field: str) -> tuple[int, int]:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        net = ipaddress.IPv4Network(value)
    except ValueError:
        raise ConfigFileError(field, value, "use a network with its prefix length, e.g. 10.0.0.0/24 (host bits zero)") from None
    return int(net.network_address), net.prefixlen


def _mac(value: object, field: str) -> int:
    if not isinstance(value, str) or not MAC_RE.match(value):
        raise ConfigFileError(field, value, "use a MAC address such as 00:00:00:00:02:02")
    return int(value.replace(":", ""), 16)


# ---- sections --------------------------------------------------------------------------------------------------
def _backend(i: int, b: object, where: str) -> tuple[Backend, str, int, int]:
    """One [[backend]] table: the model's Backend, its health address, health port (0: health.port) and weight."""
    at = service_field(where, f"backend[{i}]")
    if not isinstance(b, dict):
        raise ConfigFileError(at, b, "use a [[backend]] table (address, mac, port)")
    _known(b, SECTION_KEYS["backend"], at)
    for key in ("address", "mac", "port"):
        if key not in b:
            raise ConfigFileError(f"{at}.{key}", None, f"give the backend's {key}")
    addr = _address(b["address"], f"{at}.address")
    mac = _mac(b["mac"], f"{at}.mac")
    port = _int(b, "port", 0, 1, CPU_PORT - 1, at, f"use the switch port the server is attached to (1..{CPU_PORT - 1}; {CPU_PORT} is the CPU port)")
    health = _ipv4(b.get("health_address", ip_str(addr)), f"{at}.health_address")
    health_port = _int(b, "health_port", 0, 0, 65535, at, "use a TCP port 1..65535 (0: health.port)")
    weight = _int(b, "weight", 1, 1, MAX_WEIGHT, at, f"use 1..{MAX_WEIGHT}: the backend's share of new flows is its weight over the eligible backends' total")
    return Backend(i + 1, addr, mac, port), health, health_port, weight


def _backends(data: Table, where: str = "") -> tuple[tuple[Backend, ...], tuple[str, ...], tuple[int, ...], tuple[int, ...]]:
    raw = data.get("backend", [])
    at = service_field(where, "backend")
    table = f"[[{'service.' if where else ''}backend]]"
    if not isinstance(raw, list) or not raw:
        raise ConfigFileError(at, raw, f"add one {table} table per server (address, mac, port)")
    if len(raw) > MAX_BACKENDS:
        raise ConfigFileError(at, len(raw), f"use at most {MAX_BACKENDS} backends (the P4 program's limit per service)")
    parsed = [_backend(i, b, where) for i, b in enumerate(raw)]
    weights = tuple(p[3] for p in parsed)
    if sum(weights) > MAX_POSITIONS:
        raise ConfigFileError(f"{at}.weight", sum(weights), f"the backends' weights add up to {sum(weights)}: keep the sum at most {MAX_POSITIONS} (a group has {MAX_POSITIONS} positions)")
    return tuple(p[0] for p in parsed), tuple(p[1] for p in parsed), tuple(p[2] for p in parsed), weights


def _kind(h: Table, where: str) -> CheckKind:
    value = h.get("kind", "tcp")
    try:
        return CheckKind(value)
    except (ValueError, TypeError):
        raise ConfigFileError(f"{where}.kind", value, "use 'tcp' (connect), 'http' or 'https' (GET path, expect status)") from None


def _health_text(h: Table, where: str) -> tuple[str, str]:
    """health.path and health.host: ASCII, no space, CR or LF (they go into the request line and a header)."""
    path = _str(h, "path", "/", where)
    if not PATH_RE.match(path):
        raise ConfigFileError(f"{where}.path", path, "use an absolute path of printable ASCII without spaces, e.g. /healthz (percent-encode anything else)")
    host = _str(h, "host", "", where)
    if host and not HOST_RE.match(host):
        raise ConfigFileError(f"{where}.host", host, "use a host name or address, optionally with :port, e.g. www.example.com")
    return path, host


def _health(h: Table, base: Path | None, where: str = "health") -> HealthCheck:
    """A [health] table (keys checked), or a service's [service.health] over the default one (`where` names it)."""
    kind = _kind(h, where)
    interval = _int(h, "interval_ms", 1000, 10, 3_600_000, where, "use 10..3600000 ms")
    timeout = _int(h, "timeout_ms", 500, 1, interval, where, f"use 1..interval_ms ({interval}) ms")
    path, host = _health_text(h, where)
    ca_file = _str(h, "ca_file", "", where)
    return HealthCheck(
        kind=kind,
        port=_int(h, "port", 80, 1, 65535, where, "use a TCP port 1..65535"),
        path=path,
        expect_status=_int(h, "expect_status", 200, 100, 599, where, "use an HTTP status 100..599"),
        interval_ms=interval,
        timeout_ms=timeout,
        rise=_int(h, "rise", 2, 1, 100, where, "use 1..100 consecutive successes"),
        fall=_int(h, "fall", 2, 1, 100, where, "use 1..100 consecutive failures"),
        host=host,
        tls_verify=_bool(h, "tls_verify", True, where),
        ca_file=_relative(ca_file, base) if ca_file else "",
        max_concurrent=_int(h, "max_concurrent", 256, 1, 4096, where, "use 1..4096 probes in flight"),
    )


def _relative(value: str, base: Path | None) -> str:
    """A path from the config file: relative ones are taken from the config file's folder."""
    if "\0" in value:
        raise ConfigFileError("path", value, "remove the NUL character")
    path = Path(value).expanduser()
    return str(path if path.is_absolute() or base is None else (base / path).resolve())


def _election_id(s: Table) -> tuple[int, int]:
    """switch.election_id: a whole number 1..2**128-2 (one-shot commands use the id just above)."""
    value = _int(s, "election_id", 1, 1, MAX_ELECTION_ID, "switch", "use a whole number 1..2**128-2")
    return value >> 64, value & U64


class _Tls(TypedDict):
    """The SwitchTarget fields _tls fills."""

    tls: bool
    root_cert: str
    client_cert: str
    client_key: str


def _tls(s: Table, base: Path | None) -> _Tls:
    """switch.tls and the PEM paths; any path implies TLS; a client certificate needs its key and back."""
    paths = {k: _str(s, k, "", "switch") for k in ("root_cert", "client_cert", "client_key")}
    if bool(paths["client_cert"]) != bool(paths["client_key"]):
        missing = "client_key" if paths["client_cert"] else "client_cert"
        raise ConfigFileError(f"switch.{missing}", "", "give both switch.client_cert and switch.client_key (mutual TLS), or neither")
    tls = _bool(s, "tls", False, "switch") or any(paths.values())
    full = {k: _relative(v, base) if v else "" for k, v in paths.items()}
    return _Tls(tls=tls, root_cert=full["root_cert"], client_cert=full["client_cert"], client_key=full["client_key"])


def _switch(data: Table, base: Path | None) -> SwitchTarget:
    s = _section(data, "switch")
    grpc = _str(s, "grpc", "127.0.0.1:9559", "switch")
    if not GRPC_RE.match(grpc) or not 0 < int(grpc.rsplit(":", 1)[1]) < 65536:
        raise ConfigFileError("switch.grpc", grpc, "use host:port, e.g. 127.0.0.1:9559")
    return SwitchTarget(
        grpc=grpc,
        device_id=_int(s, "device_id", 0, 0, U64, "switch", "use a device id 0..2**64-1"),
        election_id=_election_id(s),
        p4info=_relative(_str(s, "p4info", SwitchTarget.p4info, "switch"), base),
        bmv2_json=_relative(_str(s, "bmv2_json", SwitchTarget.bmv2_json, "switch"), base),
        rpc_timeout_ms=_int(s, "rpc_timeout_ms", 2000, 10, 600_000, "switch", "use 10..600000 ms"),
        lock_timeout_ms=_int(s, "lock_timeout_ms", 10_000, 0, 3_600_000, "switch", "use 0..3600000 ms"),
        **_tls(s, base),
    )


def _toml_field(field: str, where: str = "") -> str:
    """The model's field name as it is spelled in the TOML file (`where`: the service's [[service]] table)."""
    for old, new in (("backends[", "backend["), ("].ip", "].address"), ("vip_port", "vip.port"), ("idle_timeout", "flows.idle_timeout_s"), ("flow_table_bits", "flows.table_bits"), ("flow_ways", "flows.ways"), ("flow_bucket", "flows.bucket"), ("client_", "vip.client_")):
        field = field.replace(old, new)
    return service_field(where, "backend" if field == "backends" else field)


def _lb(vip: Table, flows: Table, backends: tuple[Backend, ...], where: str = "") -> LbConfig:
    """The model's parameters from a [vip] table (or a [[service]] table: `where`) and the [flows] table."""
    at = where or "vip"
    id_key = "id" if where else "service"
    net = _network(vip.get("client_net", "10.0.0.0/24"), f"{at}.client_net")
    try:
        return LbConfig(
            vip=_address(vip.get("address", "10.0.0.1"), f"{at}.address"),
            vip_port=_int(vip, "port", 80, 1, 65535, at, "use a TCP port in 1..65535"),
            service=_int(vip, id_key, 0, 0, SERVICES - 1, at, f"use a service id in 0..{SERVICES - 1}"),
            backends=backends,
            idle_timeout_us=_int(flows, "idle_timeout_s", 60, 1, 100_000_000, "flows", "use 1..100000000 s") * 1_000_000,
            flow_table_bits=_int(flows, "table_bits", P4LB_TABLE_BITS, 1, 20, "flows", "use 1..20 (2..1M flow places)"),
            flow_ways=_int(flows, "ways", P4LB_WAYS, 1, len(WAY_ORDERS), "flows", f"use 1..{len(WAY_ORDERS)} ways (p4/p4lb.p4 is built with {P4LB_WAYS})"),
            flow_bucket=_int(flows, "bucket", P4LB_BUCKET, 1, 64, "flows", f"use a power of two in 1..64 (p4/p4lb.p4 is built with {P4LB_BUCKET})"),
            client_port=_int(vip, "client_port", 1, 1, CPU_PORT - 1, at, f"use a switch port in 1..{CPU_PORT - 1} ({CPU_PORT} is the CPU port)"),
            client_net=net[0],
            client_prefix=net[1],
            client_mac=_mac(vip.get("client_mac", "00:00:00:00:01:01"), f"{at}.client_mac"),
        )
    except ConfigError as exc:
        raise ConfigFileError(_toml_field(exc.field, where), exc.value, exc.fix) from None


def _active(table: Table, n: int, where: str) -> int:
    return _int(table, "active", n, 0, n, where, f"use 0..{n} (number of backends)")


def _single(data: Table, health: HealthCheck, switch: SwitchTarget) -> Settings:
    """The single form: [vip], [[backend]] and active are the one service "default"."""
    backends, health_addresses, health_ports, weights = _backends(data)
    lb = _lb(_section(data, "vip"), _section(data, "flows"), backends)
    return Settings(lb, health, switch, _active(data, len(backends), ""), health_addresses, health_ports, weights)


def _service(i: int, raw: object, data: Table, base: Path | None, switch: SwitchTarget, default: HealthCheck) -> Settings:
    """One [[service]] table: its name, VIP, id, client side, backends, active and health (over the default)."""
    where = f"service[{i}]"
    if not isinstance(raw, dict):
        raise ConfigFileError(where, raw, "use a [[service]] table (name, address, port, id, [[service.backend]])")
    _known(raw, SERVICE_KEYS, where)
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigFileError(f"{where}.name", name, "give the service a name of 1..64 letters, digits, '_' or '-' (the CLI's --service NAME)")
    backends, health_addresses, health_ports, weights = _backends(raw, where)
    lb = _lb(raw, _section(data, "flows"), backends, where)
    own = raw.get("health", {})
    if not isinstance(own, dict):
        raise ConfigFileError(f"{where}.health", own, "use a [service.health] table (its keys override the default [health])")
    _known(own, SECTION_KEYS["health"], f"{where}.health")
    health = _health({**_section(data, "health"), **own}, base, f"{where}.health") if own else default
    return Settings(lb, health, switch, _active(raw, len(backends), where), health_addresses, health_ports, weights, name=name, where=where)


def _services(data: Table, base: Path | None, switch: SwitchTarget, default: HealthCheck) -> tuple[Settings, ...]:
    raw = data["service"]
    if not isinstance(raw, list) or not raw:
        raise ConfigFileError("service", raw, "add one [[service]] table per VIP (name, address, port, id, [[service.backend]])")
    for key in SINGLE_FORM:
        if key in data:
            raise ConfigFileError(key, data[key], f"the config has [[service]] tables: move the top-level {key} into each [[service]] table (or write one service with [vip] and [[backend]], without [[service]])")
    if len(raw) > SERVICES:
        raise ConfigFileError("service", len(raw), f"use at most {SERVICES} services (service ids are 8 bits)")
    services = tuple(_service(i, r, data, base, switch, default) for i, r in enumerate(raw))
    check_services(services)
    return services


def check_services(services: tuple[Settings, ...]) -> None:
    """Services of one switch are distinct (name, id, VIP:port) and agree on what they share: the source rewrite
    of a backend address's replies toward a client port (send_frame is keyed by both) and the client networks' routes."""
    names: dict[str, int] = {}
    ids: dict[int, int] = {}
    vips: dict[tuple[int, int], int] = {}
    rewrites: dict[tuple[int, int], tuple[int, int]] = {}  # (client port, backend address) -> (VIP address, first service)
    routes: dict[tuple[int, int], tuple[int, int, int]] = {}  # client net -> (port, mac, first service)
    for i, s in enumerate(services):
        lb = s.lb
        if s.name in names:
            raise ConfigFileError(f"{s.where}.name", s.name, f"service[{names[s.name]}] has this name already: give every service its own name")
        if lb.service in ids:
            raise ConfigFileError(s.field("vip.service"), lb.service, f"service[{ids[lb.service]}] ({services[ids[lb.service]].name}) has this id already: give every service its own id in 0..{SERVICES - 1}")
        vip = (lb.vip, lb.vip_port)
        if vip in vips:
            raise ConfigFileError(s.field("vip.port"), lb.vip_port, f"service[{vips[vip]}] ({services[vips[vip]].name}) serves {ip_str(lb.vip)}:{lb.vip_port} already: give this service another port (or address)")
        for j, b in enumerate(lb.backends):
            addr, first = rewrites.setdefault((lb.client_port, b.ip), (lb.vip, i))
            if addr != lb.vip:
                raise ConfigFileError(s.field(f"backend[{j}].address"), ip_str(b.ip), f"service[{first}] ({services[first].name}) has a backend at this address, whose replies toward client port {lb.client_port} leave from {ip_str(addr)}: one address's replies toward a port leave from one source; give this backend another address, or this service the address {ip_str(addr)} (or another client_port)")
        port, mac, first = routes.setdefault((lb.client_net, lb.client_prefix), (lb.client_port, lb.client_mac, i))
        if (port, mac) != (lb.client_port, lb.client_mac):
            raise ConfigFileError(s.field("vip.client_net"), f"{ip_str(lb.client_net)}/{lb.client_prefix}", f"service[{first}] ({services[first].name}) routes this client network to port {port} with another client_port or client_mac: one network has one route; use the same client_port and client_mac, or another client_net")
        names[s.name], ids[lb.service], vips[vip] = i, i, i


def parse_config(data: Table, base: Path | None = None) -> Config:
    """Validate a parsed TOML document (relative paths from folder `base`): one service ([vip], [[backend]]) or
    several ([[service]] tables); raise ConfigFileError on the first bad field."""
    if not isinstance(data, dict):
        raise ConfigFileError("config", data, "give a TOML document")
    _known(data, TOP_KEYS, "")
    health = _health(_section(data, "health"), base)  # the default, checked (and its errors named) as written
    if "service" in data:
        return Config(_services(data, base, _switch(data, base), health), multi=True)
    return Config((_single(data, health, _switch(data, base)),))


def parse(data: Table, base: Path | None = None) -> Settings:
    """The one service of a parsed TOML document (see parse_config); a config of several is refused."""
    config = parse_config(data, base)
    if len(config.services) != 1:
        raise ConfigFileError("service", len(config.services), f"this use takes one service; the config has {len(config.services)} ({', '.join(config.names)})")
    return config.services[0]


def load(path: Path) -> Settings:
    """Read and validate a TOML file of one service."""
    return parse(*_document(path))


def load_config(path: Path) -> Config:
    """Read and validate a TOML file: one service or several."""
    return parse_config(*_document(path))


def _document(path: Path) -> tuple[Table, Path]:
    """A TOML file's parsed document and its folder."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(str(path), "(file)", f"save it as UTF-8 (byte {exc.start} is not UTF-8)") from None
    except OSError as exc:
        raise ConfigFileError("config", str(path), f"give a readable file ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(str(path), "(file)", f"fix the TOML syntax: {exc}") from None
    except RecursionError:
        raise ConfigFileError(str(path), "(file)", "nest arrays and tables less deeply") from None
    return data, Path(path).resolve().parent

