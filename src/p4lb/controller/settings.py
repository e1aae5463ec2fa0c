"""The controller's TOML configuration, parsed into the frozen dataclasses the model uses."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from p4lb.controller.errors import ConfigFileError
from p4lb.model.config import CPU_PORT, MAX_BACKENDS, Backend, LbConfig
from p4lb.model.crc import ip_str
from p4lb.model.errors import ConfigError
from p4lb.p4 import artifacts

MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


@dataclass(frozen=True)
class HealthCheck:
    """How backends are checked: TCP connect or HTTP GET, with rise/fall hysteresis."""

    kind: str = "tcp"
    port: int = 80
    path: str = "/"
    expect_status: int = 200
    interval_ms: int = 1000
    timeout_ms: int = 500
    rise: int = 2
    fall: int = 2


@dataclass(frozen=True)
class SwitchTarget:
    """Where the switch is and what pipeline it runs."""

    grpc: str = "127.0.0.1:9559"
    device_id: int = 0
    election_id: tuple[int, int] = (0, 1)
    p4info: str = str(artifacts("p4lb")[0])  # default: the compiled program shipped in the package
    bmv2_json: str = str(artifacts("p4lb")[1])


@dataclass(frozen=True)
class Settings:
    """Everything the controller needs."""

    lb: LbConfig
    health: HealthCheck
    switch: SwitchTarget
    active: int
    health_addresses: tuple[str, ...]


def _get(table: dict, key: str, kind: type, default: object, where: str) -> object:
    value = table.get(key, default)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigFileError(f"{where}.{key}", value, "use a whole number")
    if kind is str and not isinstance(value, str):
        raise ConfigFileError(f"{where}.{key}", value, "use a string")
    return value


def _address(value: object, field: str) -> int:
    try:
        return int(ipaddress.IPv4Address(str(value)))
    except ValueError:
        raise ConfigFileError(field, value, "use a dotted IPv4 address such as 10.0.2.2") from None


def _network(value: object, field: str) -> tuple[int, int]:
    try:
        net = ipaddress.IPv4Network(str(value))
    except ValueError:
        raise ConfigFileError(field, value, "use a network with its prefix length, e.g. 10.0.0.0/24 (host bits zero)") from None
    return int(net.network_address), net.prefixlen


def _mac(value: object, field: str) -> int:
    if not isinstance(value, str) or not MAC_RE.match(value):
        raise ConfigFileError(field, value, "use a MAC address such as 00:00:00:00:02:02")
    return int(value.replace(":", ""), 16)


def _range(value: int, lo: int, hi: int, field: str, fix: str) -> int:
    if not lo <= value <= hi:
        raise ConfigFileError(field, value, fix)
    return value


def _backends(data: dict) -> tuple[tuple[Backend, ...], tuple[str, ...]]:
    raw = data.get("backend", [])
    if not isinstance(raw, list) or not raw:
        raise ConfigFileError("backend", raw, "add one [[backend]] table per server (address, mac, port)")
    if len(raw) > MAX_BACKENDS:
        raise ConfigFileError("backend", len(raw), f"use at most {MAX_BACKENDS} backends")
    out, health = [], []
    for i, b in enumerate(raw):
        where = f"backend[{i}]"
        addr = _address(b.get("address"), f"{where}.address")
        mac = _mac(b.get("mac"), f"{where}.mac")
        port = _range(int(_get(b, "port", int, 0, where)), 1, CPU_PORT - 1, f"{where}.port", f"use the switch port the server is attached to (1..{CPU_PORT - 1}; {CPU_PORT} is the CPU port)")
        out.append(Backend(i + 1, addr, mac, port))
        health.append(str(b.get("health_address", ip_str(addr))))
    return tuple(out), tuple(health)


def _health(data: dict) -> HealthCheck:
    h = data.get("health", {})
    kind = _get(h, "kind", str, "tcp", "health")
    if kind not in ("tcp", "http"):
        raise ConfigFileError("health.kind", kind, "use 'tcp' (connect) or 'http' (GET path, expect status)")
    interval = _range(int(_get(h, "interval_ms", int, 1000, "health")), 10, 3_600_000, "health.interval_ms", "use 10..3600000 ms")
    timeout = _range(int(_get(h, "timeout_ms", int, 500, "health")), 1, interval, "health.timeout_ms", f"use 1..interval_ms ({interval}) ms")
    return HealthCheck(
        kind=str(kind),
        port=_range(int(_get(h, "port", int, 80, "health")), 1, 65535, "health.port", "use a TCP port 1..65535"),
        path=str(_get(h, "path", str, "/", "health")),
        expect_status=_range(int(_get(h, "expect_status", int, 200, "health")), 100, 599, "health.expect_status", "use an HTTP status 100..599"),
        interval_ms=interval,
        timeout_ms=timeout,
        rise=_range(int(_get(h, "rise", int, 2, "health")), 1, 100, "health.rise", "use 1..100 consecutive successes"),
        fall=_range(int(_get(h, "fall", int, 2, "health")), 1, 100, "health.fall", "use 1..100 consecutive failures"),
    )


def _relative(value: str, base: Path | None) -> str:
    """A path from the config file: relative ones are taken from the config file's folder."""
    path = Path(value).expanduser()
    return str(path if path.is_absolute() or base is None else (base / path).resolve())


def _switch(data: dict, base: Path | None) -> SwitchTarget:
    s = data.get("switch", {})
    grpc = str(_get(s, "grpc", str, "127.0.0.1:9559", "switch"))
    if not re.match(r"^[\w.\-\[\]:]+:\d+$", grpc):
        raise ConfigFileError("switch.grpc", grpc, "use host:port, e.g. 127.0.0.1:9559")
    return SwitchTarget(grpc=grpc, device_id=int(_get(s, "device_id", int, 0, "switch")), p4info=_relative(str(_get(s, "p4info", str, SwitchTarget.p4info, "switch")), base), bmv2_json=_relative(str(_get(s, "bmv2_json", str, SwitchTarget.bmv2_json, "switch")), base))


def _toml_field(field: str) -> str:
    """The model's field name as it is spelled in the TOML file."""
    for old, new in (("backends[", "backend["), ("].ip", "].address"), ("vip_port", "vip.port"), ("idle_timeout", "flows.idle_timeout_s"), ("flow_table_bits", "flows.table_bits"), ("client_", "vip.client_")):
        field = field.replace(old, new)
    return "backend" if field == "backends" else field


def parse(data: dict, base: Path | None = None) -> Settings:
    """Validate a parsed TOML document (relative paths from folder `base`); raise ConfigFileError on the first bad field."""
    vip = data.get("vip", {})
    backends, health_addresses = _backends(data)
    flows = data.get("flows", {})
    net = _network(vip.get("client_net", "10.0.0.0/24"), "vip.client_net")
    try:
        lb = LbConfig(
            vip=_address(vip.get("address", "10.0.0.1"), "vip.address"),
            vip_port=int(_get(vip, "port", int, 80, "vip")),
            backends=backends,
            idle_timeout_us=int(_get(flows, "idle_timeout_s", int, 60, "flows")) * 1_000_000,
            flow_table_bits=int(_get(flows, "table_bits", int, 16, "flows")),
            client_port=int(_get(vip, "client_port", int, 1, "vip")),
            client_net=net[0],
            client_prefix=net[1],
            client_mac=_mac(vip.get("client_mac", "00:00:00:00:01:01"), "vip.client_mac"),
        )
    except ConfigError as exc:
        raise ConfigFileError(_toml_field(exc.field), exc.value, exc.fix) from None
    active = _range(int(_get(data, "active", int, len(backends), "")), 0, len(backends), "active", f"use 0..{len(backends)} (number of backends)")
    return Settings(lb, _health(data), _switch(data, base), active, health_addresses)


def load(path: Path) -> Settings:
    """Read and validate a TOML file."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(str(path), "(file)", f"fix the TOML syntax: {exc}") from None
    except OSError as exc:
        raise ConfigFileError("config", str(path), f"give a readable file ({exc.strerror})") from None
    return parse(data, Path(path).resolve().parent)
