"""Typed configuration shared by the model, the prover and the controller."""

from __future__ import annotations

from dataclasses import dataclass

from p4lb.model.crc import ip, ip_str
from p4lb.model.errors import ConfigError
from p4lb.model.flowtable import Policy, TableShape

MAX_BACKENDS = 128  # the P4 program's compile-time bound on N (positions and ids are bit<8>)
SEED_BACKENDS = 4
SERVICES = 256  # service ids are bit<8>: the vip entry's lb_select(service, ...) and every per-service key and index
CPU_PORT = 510  # the P4 programs' controller port (PacketOut/PacketIn): simple_switch_grpc --cpu-port 510
# The flow table p4/p4lb.p4 is compiled with (FLOW_BITS, WAYS, BUCKET): 4 ways x 8-place buckets on 2^20 places.
# LbConfig's defaults; a test build (-DFLOW_BITS=5) keeps the ways and buckets on a table of one bucket per way.
P4LB_TABLE_BITS = 20
P4LB_WAYS = 4
P4LB_BUCKET = 8
P4LB_SMALL_TABLE_BITS = 5  # the test build p4/build/p4lb_small.json: one 8-place bucket per way, 32 places
P4LB_MID_TABLE_BITS = 10  # the capacity spot-check build p4/build/p4lb_mid.json: 32 buckets per way, 1,024 places


@dataclass(frozen=True)
class Backend:
    """One backend server behind the VIP."""

    id: int  # 1..N
    ip: int
    mac: int
    port: int  # switch port it is attached to

    def __str__(self) -> str:
        return f"#{self.id} {ip_str(self.ip)} port {self.port}"


@dataclass(frozen=True)
class LbConfig:
    """The load balancer's parameters: VIP, backends, flow table size, idle timeout."""

    vip: int = ip("10.0.0.1")
    vip_port: int = 80
    backends: tuple[Backend, ...] = ()
    idle_timeout_us: int = 60_000_000
    flow_table_bits: int = P4LB_TABLE_BITS  # 2**bits places in the flow table
    flow_ways: int = P4LB_WAYS  # independent crc32 hashes per flow (1 with flow_bucket 1: the one-way crc16 table)
    flow_bucket: int = P4LB_BUCKET  # consecutive places per way: a flow has flow_ways x flow_bucket candidates
    client_port: int = 1
    drain_grace_ms: int = 50
    client_net: int = ip("10.0.0.0")  # the return path: replies to client_net/client_prefix leave on client_port
    client_prefix: int = 24
    client_mac: int = 0x0101
    service: int = 0  # the service id: its vip entry's lb_select(service, ...), the first key of its rr_group/rr_member/backend entries, the index of its registers and counters

    def __post_init__(self) -> None:
        validate(self)

    @property
    def shape(self) -> TableShape:
        """The flow table's shape: a new flow takes the least-loaded of its buckets (model.flowtable)."""
        return TableShape(self.flow_ways, self.flow_bucket, self.flow_table_bits, Policy.LEAST_LOADED)

    @property
    def n(self) -> int:
        """Number of backends N."""
        return len(self.backends)

    def backend(self, backend_id: int) -> Backend:
        """The backend with this id."""
        for b in self.backends:
            if b.id == backend_id:
                return b
        raise ConfigError("backend", backend_id, f"use an id in 1..{self.n}")


def validate(cfg: LbConfig) -> None:
    """Raise ConfigError naming the first bad field."""
    if isinstance(cfg.service, bool) or not isinstance(cfg.service, int) or not 0 <= cfg.service < SERVICES:
        raise ConfigError("vip.service", cfg.service, f"use a whole-number service id in 0..{SERVICES - 1}")
    if not 1 <= cfg.vip_port <= 65535:
        raise ConfigError("vip_port", cfg.vip_port, "use a TCP port in 1..65535")
    if not 1 <= len(cfg.backends) <= MAX_BACKENDS:
        raise ConfigError("backends", len(cfg.backends), f"give 1..{MAX_BACKENDS} backends")
    for pos, b in enumerate(cfg.backends, start=1):
        if b.id != pos:
            raise ConfigError(f"backends[{pos - 1}].id", b.id, f"number backends 1..N in order (expected {pos})")
        if not 0 < b.port < CPU_PORT:
            raise ConfigError(f"backends[{pos - 1}].port", b.port, f"use a switch port in 1..{CPU_PORT - 1} ({CPU_PORT} is the CPU port)")
        if b.port == cfg.client_port:
            raise ConfigError(f"backends[{pos - 1}].port", b.port, "a backend port must differ from client_port")
        if b.ip == cfg.vip:
            raise ConfigError(f"backends[{pos - 1}].ip", ip_str(b.ip), "a backend address must differ from the VIP")
    if len({b.ip for b in cfg.backends}) != len(cfg.backends):
        raise ConfigError("backends", [ip_str(b.ip) for b in cfg.backends], "give each backend its own address")
    if not 0 < cfg.client_port < CPU_PORT:
        raise ConfigError("client_port", cfg.client_port, f"use a switch port in 1..{CPU_PORT - 1} ({CPU_PORT} is the CPU port)")
    if not 1 <= cfg.idle_timeout_us < 1 << 47:
        raise ConfigError("idle_timeout", cfg.idle_timeout_us, "use a positive timeout below 2**47 microseconds")
    if not 0 <= cfg.client_prefix <= 32 or cfg.client_net & ((1 << (32 - cfg.client_prefix)) - 1):
        raise ConfigError("client_net", f"{ip_str(cfg.client_net)}/{cfg.client_prefix}", "use a network address with its prefix length, e.g. 10.0.0.0/24")
    if not 0 <= cfg.client_mac < 1 << 48:
        raise ConfigError("client_mac", cfg.client_mac, "use a 48-bit MAC address")
    if not 1 <= cfg.flow_table_bits <= 20:
        raise ConfigError("flow_table_bits", cfg.flow_table_bits, "use 1..20 (2..1M flow slots)")
    if cfg.flow_ways * cfg.flow_bucket > 1 << cfg.flow_table_bits:
        raise ConfigError("flow_table_bits", cfg.flow_table_bits, f"{cfg.flow_ways} ways x {cfg.flow_bucket}-place buckets need at least {cfg.flow_ways * cfg.flow_bucket} places: raise flow_table_bits, or set flow_ways=1, flow_bucket=1 for a one-way table")
    cfg.shape  # noqa: B018  (TableShape checks ways and bucket against the size)


def table_fields(table: tuple[int, int, int] | None) -> dict[str, int]:
    """LbConfig keywords for a (bits, ways, bucket) flow table; none for None (the default table)."""
    return {} if table is None else dict(zip(("flow_table_bits", "flow_ways", "flow_bucket"), table, strict=True))


def default_backends(n: int) -> tuple[Backend, ...]:
    """N test backends as in the seed: backend i is 10.0.{i+1}.{i+1}, MAC 00:..:{i+1}:{i+1}, switch port i+1."""
    return tuple(
        Backend(id=i, ip=ip(f"10.0.{i + 1}.{i + 1}"), mac=(i + 1) * 0x101, port=i + 1)
        for i in range(1, n + 1)
    )


def default_config(n: int = SEED_BACKENDS, **kw: object) -> LbConfig:
    """The seed's topology (VIP 10.0.0.1:80, client on port 1) with N backends."""
    return LbConfig(backends=default_backends(n), **kw)  # type: ignore[arg-type]
