"""A lab: test hosts, simple_switch_grpc between them, a P4Runtime session, and a way to see each packet's fate.

Ports: 0 = `sink` (where BMv2 sends a packet whose egress_spec stayed 0: the seed's black hole, made visible),
1 = `client`, 2..N+1 = backends 1..N. Every packet is followed by a probe (UDP to the client network, which the
`forward` table hairpins to port 1); once the probe is back, the packet before it has left the ingress, so a
packet not seen anywhere by then (plus a short grace for the egress threads) was dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from p4lb.controller.p4rt import P4rt
from p4lb.controller.switch import P4RuntimeSwitch
from p4lb.lab.hosts import Host, HostSpec, Topology, wait_until
from p4lb.lab.toolchain import artifacts
from p4lb.model.config import CPU_PORT, LbConfig, default_config
from p4lb.model.crc import ip, ip_str
from p4lb.p4 import p4lb_build

log = logging.getLogger(__name__)

CLIENT_MAC = 0x0101
SWITCH_MAC = 0x00AA00000001  # source MAC of frames the client sends (any value: the switch does not check it)
PROBE_DST = ip("10.0.0.250")
PROBE_SPORT = 7
GRACE_S = 0.004
LATE_S = 0.3  # how long a packet that seems dropped without any counter is waited for (see Lab.late)

TIMEOUT_S = 2.0
IN_FLIGHT = 16  # frames sent back to back at most: a busy BMv2's capture socket on a port holds about 32 small ones
SWITCH_JSON_ENV, SWITCH_P4INFO_ENV = "P4LB_SWITCH_JSON", "P4LB_SWITCH_P4INFO"


def lab_build(program: str, cfg: LbConfig) -> str:
    """The committed build a lab runs: p4lb's of the config's flow table size (p4lb, or p4lb_small), else the program's."""
    return p4lb_build(cfg.flow_table_bits) if program == "p4lb" else program


def lab_artifacts(program: str, cfg: LbConfig | None = None) -> tuple[Path, Path]:
    """(P4Info, BMv2 JSON) the lab pushes: the committed build for `cfg`'s table (lab_build), or for p4lb another
    compile of it (a mutant) named by $P4LB_SWITCH_JSON (and $P4LB_SWITCH_P4INFO if its P4Info differs)."""
    p4info, bmv2_json = artifacts(lab_build(program, cfg or default_config(4)))
    if program != "p4lb" or not os.environ.get(SWITCH_JSON_ENV):
        return p4info, bmv2_json
    return Path(os.environ.get(SWITCH_P4INFO_ENV) or p4info), Path(os.environ[SWITCH_JSON_ENV])


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for the gRPC server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Launch:
    """How the switch is started: which binary, under which wrapper (e.g. valgrind), how long it may take to listen."""

    binary: str = "simple_switch_grpc"
    wrapper: tuple[str, ...] = ()
    start_timeout_s: float = 10.0


class Bmv2:
    """simple_switch_grpc on the given ports, gRPC on 127.0.0.1; stopped on exit."""

    def __init__(self, interfaces: dict[int, str], log_dir: Path, launch: Launch = Launch()) -> None:
        self.grpc = f"127.0.0.1:{free_port()}"
        self.log_path = log_dir / "bmv2.log"
        self.launch = launch
        cmd = [*launch.wrapper, launch.binary, "--device-id", "0", "--no-p4"]
        for port, ifname in sorted(interfaces.items()):
            cmd += ["-i", f"{port}@{ifname}"]
        if os.environ.get("P4LB_BMV2_LOG"):
            cmd += ["--log-file", str(log_dir / "bmv2-trace"), "--log-flush", "--log-level", "trace"]
        cmd += ["--", "--grpc-server-addr", self.grpc, "--cpu-port", str(CPU_PORT)]
        self.cmd = cmd

    def __enter__(self) -> Bmv2:
        self.out = self.log_path.open("w")
        self.proc = subprocess.Popen(self.cmd, stdout=self.out, stderr=subprocess.STDOUT)
        if not wait_until(self._listening, self.launch.start_timeout_s, 0.05):
            self.__exit__()
            raise RuntimeError(f"simple_switch_grpc did not open {self.grpc}: {self.log_path.read_text()[-2000:]}")
        return self

    def restart(self) -> None:
        """Stop the switch and start it again on the same ports and gRPC address (it comes back with no pipeline)."""
        self.__exit__()
        self.__enter__()

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"simple_switch_grpc exited ({self.proc.returncode}): {self.log_path.read_text()[-2000:]}")
        host, port = self.grpc.rsplit(":", 1)
        with socket.socket() as s:
            return s.connect_ex((host, int(port))) == 0

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


@dataclass(frozen=True)
class Seen:
    """Where a packet went: a switch port (0 = no backend there) and the frame as it left, or nowhere (dropped)."""

    port: int | None
    frame: bytes = b""


CLIENT_IP = "10.0.0.10"


def host_specs(cfg: LbConfig, silent: bool = True) -> list[HostSpec]:
    """sink (port 0), client (port client_port), one host per backend at its port and MAC.

    Silent hosts have no address (raw frames only). Otherwise the client is CLIENT_IP with the VIP as a static
    neighbour, and each backend has its address, a route back to the client network over the switch, and a
    management link for health checks.
    """
    specs = [HostSpec("sink", 0, 0x00EE00000000)]
    nbr = ("lladdr", mac(SWITCH_MAC), "dev", "eth0", "nud", "permanent")
    net = f"{ip_str(cfg.client_net)}/{cfg.client_prefix}"
    if silent:
        specs.append(HostSpec("client", cfg.client_port, cfg.client_mac))
        specs += [HostSpec(f"b{b.id}", b.port, b.mac) for b in cfg.backends]
        return specs
    specs.append(HostSpec("client", cfg.client_port, cfg.client_mac, f"{CLIENT_IP}/{cfg.client_prefix}", (("ip", "neigh", "replace", ip_str(cfg.vip), *nbr),)))
    for b in cfg.backends:
        setup = (("ip", "route", "add", net, "dev", "eth0"), ("ip", "neigh", "replace", CLIENT_IP, *nbr))
        specs.append(HostSpec(f"b{b.id}", b.port, b.mac, f"{ip_str(b.ip)}/32", setup, mgmt=b.id))
    return specs


class Lab(contextlib.ExitStack):
    """Hosts + BMv2 running `program` + a P4Runtime session; packets sent from the client, fates observed."""

    def __init__(self, program: str, cfg: LbConfig | None = None, silent: bool = True, push: bool = True, launch: Launch = Launch()) -> None:
        """cfg: the backends and, for p4lb, the flow table: the build of its size is run (lab_build; p4lb_small for
        flow_table_bits = P4LB_SMALL_TABLE_BITS). push=False: hold no P4Runtime session (the controller under test
        will); reset() pushes with a brief one. launch: another BMv2 binary, a wrapper command, a longer start timeout."""
        super().__init__()
        self.program = program
        self.cfg = cfg or default_config(4)
        self.silent = silent
        self.holds_session = push  # not `push`: that is ExitStack.push
        self.launch = launch

    def __enter__(self) -> Lab:
        super().__enter__()
        try:
            self.tmp = Path(self.enter_context(tempfile.TemporaryDirectory(prefix="p4lb-lab-")))
            self.topo = self.enter_context(Topology(host_specs(self.cfg, self.silent)))
            self.bmv2 = self.enter_context(Bmv2(self.topo.interfaces(), self.tmp, self.launch))
            p4info, bmv2_json = lab_artifacts(self.program, self.cfg)
            if (p4info, bmv2_json) != artifacts(lab_build(self.program, self.cfg)):
                log.warning("lab: pushing %s (from $%s), not the committed build", bmv2_json, SWITCH_JSON_ENV)
            if not self.holds_session:
                return self
            if self.program == "p4lb":
                self.switch = P4RuntimeSwitch(self.bmv2.grpc, 0, (0, 1), str(p4info), str(bmv2_json), self.cfg)
                self.callback(self.switch.close)
                self.rt = self.switch.rt
            else:
                self.rt = P4rt(self.bmv2.grpc)
                self.callback(self.rt.close)
            self.rt.push(p4info, bmv2_json)
        except BaseException:
            self.close()
            raise
        return self

    def reset(self) -> None:
        """Push the pipeline again: every table, register and counter back to empty."""
        if self.holds_session:
            self.rt.push(*lab_artifacts(self.program, self.cfg))
            return
        with P4rt(self.bmv2.grpc, election_id=(0, 100)) as rt:
            rt.push(*lab_artifacts(self.program, self.cfg))

    def read_slot(self, index: int) -> dict[str, int]:
        """Registers at one index, through the CPU port: p4lb's flow slot (+ rr_next, idle_timeout, now), or the
        seed's flowlet_select cell (+ myselect, mymax)."""
        if self.program == "p4lb":
            return self.switch.read_slot(index)
        self.rt.packet_out({"op": 1, "index": index})
        got = self.rt.packet_in()
        assert got["index"] == index, got
        return got

    @property
    def hosts(self) -> dict[str, Host]:
        """The lab's hosts by name."""
        return self.topo.hosts

    def port_of(self, name: str) -> int:
        """The switch port of a host."""
        return self.hosts[name].port

    def backend_at(self, port: int | None) -> int:
        """Backend id attached at a port (0 if none, or no port)."""
        for b in self.cfg.backends:
            if b.port == port:
                return b.id
        return 0

    def send(self, frame: bytes) -> list[Seen]:
        """Send a frame from the client, then a probe; every frame the switch emitted for the first one."""
        return self.send_all([frame])

    def send_all(self, frames: list[bytes]) -> list[Seen]:
        """Send frames from the client back to back, IN_FLIGHT at a time each followed by a probe; every frame the
        switch emitted for them."""
        got: list[Seen] = []
        for i in range(0, max(1, len(frames)), IN_FLIGHT):
            got += self._send_some(frames[i : i + IN_FLIGHT])
        return got

    def _send_some(self, frames: list[bytes]) -> list[Seen]:
        """Send frames, then a probe; every frame the switch emitted before the probe came back (and a grace after)."""
        client = self.hosts["client"]
        self.topo.drain_all()
        for frame in frames:
            client.send(frame)
        client.send(probe_frame())
        got: list[Seen] = []
        deadline = time.monotonic() + TIMEOUT_S
        probe_back = False
        while time.monotonic() < deadline and not probe_back:
            self.topo.wait_any(0.05)
            for h in self.hosts.values():
                for f in h.drain():
                    if is_probe(f):
                        probe_back = True
                    else:
                        got.append(Seen(h.port, f))
        if not probe_back:
            raise RuntimeError(f"the probe never came back through the switch (log: {self.bmv2.log_path})")
        time.sleep(GRACE_S)
        for h in self.hosts.values():
            got += [Seen(h.port, f) for f in h.drain() if not is_probe(f)]
        return got

    def late(self, timeout_s: float = LATE_S) -> list[Seen]:
        """Frames that arrive within timeout_s (none: the packet really was dropped). The probe returning first
        does not prove a frame for another port has left: BMv2 has a queue and thread per egress port, so a
        drop that no counter explains is waited for a while before it is believed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.topo.wait_any(min(0.05, max(0.0, deadline - time.monotonic()))):
                got = [Seen(h.port, f) for h in self.hosts.values() for f in h.drain() if not is_probe(f)]
                if got:
                    time.sleep(GRACE_S)
                    return got + [Seen(h.port, f) for h in self.hosts.values() for f in h.drain() if not is_probe(f)]
        return []


def probe_frame() -> bytes:
    """UDP to the client network: plain forwarding, hairpinned to the client port, no load-balancer state."""
    from scapy.layers.inet import IP, UDP  # noqa: PLC0415
    from scapy.layers.l2 import Ether  # noqa: PLC0415

    return bytes(Ether(src=mac(SWITCH_MAC), dst=mac(0xAA)) / IP(src="10.0.0.10", dst=ip_str(PROBE_DST)) / UDP(sport=PROBE_SPORT, dport=9) / b"probe")


def is_probe(frame: bytes) -> bool:
    """True for the probe (IPv4, UDP, to PROBE_DST)."""
    return len(frame) >= 34 and frame[12:14] == b"\x08\x00" and frame[23] == 17 and frame[30:34] == PROBE_DST.to_bytes(4, "big")


def mac(value: int) -> str:
    """48-bit int to text."""
    return ":".join(f"{b:02x}" for b in value.to_bytes(6, "big"))
