"""Test hosts: one network namespace per host, joined to the switch by a veth pair; removed on exit, also on failure.

The switch side of each pair stays in the test's namespace (BMv2 attaches to it as port P); the host side is moved
into its own namespace as `eth0`. Hosts with addresses run real TCP stacks (end-to-end tests); hosts without
addresses are silent, and the test injects and captures raw frames there through an AF_PACKET socket opened inside
the namespace. No route leaves a namespace: the only links are the veth pairs to the switch.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
PREFIX = "p4lb"  # every namespace and link this harness makes starts with it


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command (ip, sysctl), raising with its stderr."""
    res = subprocess.run(cmd, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr.strip()}")
    return res


class NetNs:
    """Enter a named network namespace for the calling thread (sockets opened inside stay there)."""

    def __init__(self, name: str) -> None:
        self.path = Path("/var/run/netns") / name
        self.libc = ctypes.CDLL(None, use_errno=True)

    def __enter__(self) -> NetNs:
        self.home = os.open("/proc/self/ns/net", os.O_RDONLY)
        target = os.open(self.path, os.O_RDONLY)
        try:
            if self.libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {self.path}")
        finally:
            os.close(target)
        return self

    def __exit__(self, *exc: object) -> None:
        self.libc.setns(self.home, CLONE_NEWNET)
        os.close(self.home)


@dataclass(frozen=True)
class HostSpec:
    """A host to build: name, switch port, MAC, 'address/prefix' (None: silent), extra commands, management link."""

    name: str
    port: int
    mac: int
    ip: str | None = None
    setup: tuple[tuple[str, ...], ...] = ()  # run inside the namespace after eth0 is up
    mgmt: int | None = None  # k: a second veth to the test's namespace, 169.254.77.(4k+1) here, .(4k+2) there


def mgmt_addresses(k: int) -> tuple[str, str]:
    """(test side, host side) addresses of management link k (a /30: a connected route to this veth only)."""
    return f"169.254.77.{4 * k + 1}", f"169.254.77.{4 * k + 2}"


@dataclass
class Host:
    """One namespace with `eth0`, attached to switch port `port`."""

    name: str
    ns: str
    port: int
    switch_if: str
    mac: int
    ip: str | None = None
    mgmt_ip: str | None = None
    mgmt_if: str | None = None
    sock: socket.socket | None = field(default=None, repr=False)

    def exec(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the host's namespace."""
        return run("ip", "netns", "exec", self.ns, *cmd, check=check)

    def popen(self, *cmd: str, **kw: Any) -> subprocess.Popen[bytes]:
        """Start a process inside the host's namespace (keyword arguments as subprocess.Popen's; bytes mode)."""
        return subprocess.Popen(["ip", "netns", "exec", self.ns, *cmd], **kw)

    def open_socket(self) -> socket.socket:
        """An AF_PACKET socket on the host's eth0 (opened inside its namespace)."""
        if self.sock is None:
            with NetNs(self.ns):
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                s.bind(("eth0", 0))
            s.setblocking(False)
            self.sock = s
        return self.sock

    def send(self, frame: bytes) -> None:
        """Inject one Ethernet frame towards the switch."""
        self.open_socket().send(frame)

    def drain(self) -> list[bytes]:
        """Every frame received since the last call (frames this host sent are skipped)."""
        s = self.open_socket()
        out: list[bytes] = []
        while True:
            try:
                data, addr = s.recvfrom(65535)
            except BlockingIOError:
                return out
            if addr[2] != PACKET_OUTGOING:
                out.append(data)


def mac_str(mac: int) -> str:
    """48-bit int to aa:bb:cc:dd:ee:ff."""
    return ":".join(f"{b:02x}" for b in mac.to_bytes(6, "big"))


class Topology:
    """Hosts on switch ports; `with Topology(...) as topo:` creates them and always removes them."""

    made = 0  # serial number of topologies made by this process (part of their names)

    def __init__(self, specs: list[HostSpec]) -> None:
        Topology.made += 1
        # "p4lb" + pid in hex + one serial character + "s" + port fits the 15 characters of a link name
        self.tag = f"{os.getpid():x}{'0123456789abcdefghijklmnopqrstuvwxyz'[Topology.made % 36]}"
        self.specs = specs
        self.hosts: dict[str, Host] = {}

    def __enter__(self) -> Topology:
        cleanup_stale()
        try:
            for spec in self.specs:
                self.hosts[spec.name] = self._add(spec)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add(self, spec: HostSpec) -> Host:
        name, port, mac, ip = spec.name, spec.port, spec.mac, spec.ip
        ns = f"{PREFIX}{self.tag}-{name}"
        sw, peer = f"{PREFIX}{self.tag}s{port}", f"{PREFIX}{self.tag}h{port}"
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", sw, "type", "veth", "peer", "name", peer)
        host = Host(name, ns, port, sw, mac, ip.split("/")[0] if ip else None)
        run("ip", "link", "set", peer, "netns", ns)
        host.exec("ip", "link", "set", peer, "name", "eth0")
        host.exec("ip", "link", "set", "eth0", "address", mac_str(mac))
        for where in (("sysctl", "-qw", f"net.ipv6.conf.{sw}.disable_ipv6=1"),):
            run(*where, check=False)
        host.exec("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", check=False)
        if ip:
            host.exec("ip", "addr", "add", ip, "dev", "eth0")
        host.exec("ip", "link", "set", "eth0", "up")
        host.exec("ip", "link", "set", "lo", "up")
        run("ip", "link", "set", sw, "up")
        for cmd in spec.setup:
            host.exec(*cmd)
        if spec.mgmt is not None:
            self._mgmt(host, spec.mgmt)
        return host

    def _mgmt(self, host: Host, k: int) -> None:
        """A management link from the test's namespace to the host (health checks reach backends over it)."""
        here, there = mgmt_addresses(k)
        local, peer = f"{PREFIX}{self.tag}m{k}", f"{PREFIX}{self.tag}n{k}"
        run("ip", "link", "add", local, "type", "veth", "peer", "name", peer)
        run("ip", "link", "set", peer, "netns", host.ns)
        run("ip", "addr", "add", f"{here}/30", "dev", local)
        run("ip", "link", "set", local, "up")
        host.exec("ip", "link", "set", peer, "name", "mgmt0")
        host.exec("ip", "addr", "add", f"{there}/30", "dev", "mgmt0")
        host.exec("ip", "link", "set", "mgmt0", "up")
        host.mgmt_ip, host.mgmt_if = there, local

    def close(self) -> None:
        """Remove every namespace and link this topology made."""
        for host in self.hosts.values():
            if host.sock is not None:
                host.sock.close()
            run("ip", "link", "del", host.switch_if, check=False)
            if host.mgmt_if:
                run("ip", "link", "del", host.mgmt_if, check=False)
            run("ip", "netns", "del", host.ns, check=False)
        self.hosts.clear()

    def interfaces(self) -> dict[int, str]:
        """Switch port -> interface, for simple_switch_grpc -i."""
        return {h.port: h.switch_if for h in self.hosts.values()}

    def drain_all(self) -> None:
        """Discard whatever is queued on every host."""
        for h in self.hosts.values():
            h.drain()

    def wait_any(self, timeout: float) -> bool:
        """Wait until some host has a frame queued."""
        socks = [h.open_socket() for h in self.hosts.values()]
        ready, _, _ = select.select(socks, [], [], timeout)
        return bool(ready)


def cleanup_stale() -> None:
    """Remove namespaces and links left by a test run that was killed (their owner process is gone)."""
    res = run("ip", "netns", "list", check=False)
    for line in res.stdout.splitlines():
        ns = line.split()[0] if line.split() else ""
        if not ns.startswith(PREFIX):
            continue
        tag = ns[len(PREFIX) :].split("-")[0]
        try:
            pid = int(tag[:-1], 16)
        except ValueError:
            continue
        if not Path(f"/proc/{pid}").exists():
            run("ip", "netns", "del", ns, check=False)
            log.info("removed stale namespace %s", ns)


def wait_until(pred: Callable[[], object], timeout: float, step: float = 0.01) -> bool:
    """Poll pred() until it is true or timeout passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())
