"""End-to-end support: real HTTP servers in backend namespaces, a real client, and the `p4lb` CLI driving BMv2.

The client (10.0.0.10) opens TCP connections to the VIP 10.0.0.1:80 through the switch; each backend runs an
HTTP server that answers with its own name. The controller reaches the backends' health endpoints over
management links (169.254.77.0/24 veths), never through the data plane.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p4lb.lab.hosts import NetNs, wait_until
from p4lb.lab.toolchain import artifacts
from p4lb.model.crc import ip_str

if TYPE_CHECKING:
    from p4lb.lab.lab import Lab

INTERVAL_MS = 100


def toml_config(lab: Lab) -> str:
    """The controller configuration for a lab (health checks over the management links)."""
    cfg = lab.cfg
    p4info, bmv2_json = artifacts("p4lb")
    lines = [
        f"active = {cfg.n}",
        "[vip]",
        f'address = "{ip_str(cfg.vip)}"',
        f"port = {cfg.vip_port}",
        f"client_port = {cfg.client_port}",
        "[switch]",
        f'grpc = "{lab.bmv2.grpc}"',
        f'p4info = "{p4info}"',
        f'bmv2_json = "{bmv2_json}"',
        "[health]",
        'kind = "http"',
        "port = 80",
        f"interval_ms = {INTERVAL_MS}",
        "timeout_ms = 50",
        "rise = 2",
        "fall = 2",
    ]
    for b in cfg.backends:
        h = lab.hosts[f"b{b.id}"]
        lines += ["[[backend]]", f'address = "{ip_str(b.ip)}"', f'mac = "{":".join(f"{x:02x}" for x in b.mac.to_bytes(6, "big"))}"', f"port = {b.port}", f'health_address = "{h.mgmt_ip}"']
    return "\n".join(lines) + "\n"


class E2E:
    """The lab, one HTTP server per backend, and the CLI."""

    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        self.config = tmp / "p4lb.toml"
        self.config.write_text(toml_config(lab))
        self.servers: dict[int, subprocess.Popen[bytes]] = {}
        self.loop: subprocess.Popen[bytes] | None = None

    def start_server(self, b: int) -> None:
        """`python -m http.server` in backend b's namespace, serving 'backend b'."""
        root = self.tmp / f"www{b}"
        root.mkdir(exist_ok=True)
        (root / "index.html").write_text(f"backend {b}\n")
        h = self.lab.hosts[f"b{b}"]
        addr = h.mgmt_ip
        assert addr is not None, f"backend {b} has no management link (a lab with silent=False has one)"
        self.servers[b] = h.popen(sys.executable, "-m", "http.server", "80", "--bind", "0.0.0.0", "--directory", str(root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(lambda: self._listening(addr), 10.0, 0.05), f"server {b} did not start"

    @staticmethod
    def _listening(addr: str) -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex((addr, 80)) == 0

    def stop_server(self, b: int) -> None:
        """Kill backend b's server (the backend 'dies': connections to it are refused)."""
        p = self.servers.pop(b)
        p.kill()
        p.wait()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `p4lb -c CONFIG ARGS`."""
        res = subprocess.run([sys.executable, "-m", "p4lb.controller.cli", "-c", str(self.config), *args], capture_output=True, text=True, cwd=self.tmp, timeout=120)
        if check and res.returncode != 0:
            raise AssertionError(f"p4lb {' '.join(args)} exited {res.returncode}: {res.stdout}{res.stderr}")
        return res

    def start_loop(self) -> None:
        """`p4lb run` in the background, logging each transition."""
        self.loop_log = (self.tmp / "run.log").open("w")
        self.loop = subprocess.Popen([sys.executable, "-m", "p4lb.controller.cli", "-c", str(self.config), "-v", "run"], stdout=self.loop_log, stderr=subprocess.STDOUT, cwd=self.tmp)
        # started = its P4Runtime session is open (Python and gRPC start-up is not part of any failover time)
        assert wait_until(lambda: "P4Runtime session with" in self.loop_text(), 15.0, 0.02), f"p4lb run did not start: {self.loop_text()}"

    def loop_text(self) -> str:
        """What `p4lb run` has logged so far."""
        return (self.tmp / "run.log").read_text()

    def transitions(self, op: str) -> int:
        """How many of the loop's commits carried the transition `op` ("fail 3"): lines "commit: fail 3 (REASON), ...: N writes"."""
        return sum(1 for line in self.loop_text().splitlines() if "commit: " in line and f"{op} (" in line.split("commit: ", 1)[1])

    def stop_loop(self) -> None:
        """Kill the health loop (SIGKILL: no clean-up of any kind)."""
        if self.loop is not None:
            self.loop.kill()
            self.loop.wait()
            self.loop = None
            self.loop_log.close()

    def status(self) -> dict[str, Any]:
        """`p4lb status --json`."""
        status: dict[str, Any] = json.loads(self.cli("status", "--json").stdout)
        return status

    def connect(self, timeout: float = 1.0) -> socket.socket:
        """A TCP connection from the client to the VIP."""
        client = self.lab.hosts["client"]
        with NetNs(client.ns):
            s = socket.socket()
        s.settimeout(timeout)
        s.connect((ip_str(self.lab.cfg.vip), self.lab.cfg.vip_port))
        return s

    def get(self, s: socket.socket | None = None) -> int | None:
        """GET / through the VIP (on a new connection unless one is given): the backend that answered, or None."""
        try:
            s = s or self.connect()
            with s:
                s.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
        except OSError:
            return None
        body = data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip()
        return int(body.split()[-1]) if body.startswith("backend") else None

    def close(self) -> None:
        """Stop everything this object started."""
        self.stop_loop()
        for b in list(self.servers):
            self.stop_server(b)
