"""The PTF suite (tests/ptf_suite) as a P4 user runs it: their own simple_switch_grpc on veth pairs, then the `ptf`
runner with a port map, the P4Runtime address, P4Info and JSON in --test-params.

Everything lives in a network namespace of its own (veths, the switch, its gRPC port on the namespace's
loopback, and ptf), removed afterwards.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from p4lb.lab.hosts import PREFIX, NetNs, run, wait_until
from p4lb.lab.lab import free_port
from p4lb.lab.toolchain import artifacts, require_switch
from p4lb.model.config import CPU_PORT

SUITE = Path(__file__).resolve().parent.parent / "ptf_suite"
PORTS = range(6)  # 0 = black hole, 1 = client, 2..5 = backends 1..4
PTF_TIMEOUT_S = 300


@pytest.fixture
def netns() -> Iterator[str]:
    """A namespace of this test's own (named so the lab's stale clean-up can find it), with loopback up."""
    require_switch()
    ns = f"{PREFIX}{os.getpid():x}p-ptf"
    run("ip", "netns", "add", ns)
    try:
        run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        for p in PORTS:
            run("ip", "netns", "exec", ns, "ip", "link", "add", f"sw{p}", "type", "veth", "peer", "name", f"ptf{p}")
            for end in (f"sw{p}", f"ptf{p}"):
                run("ip", "netns", "exec", ns, "ip", "link", "set", end, "up")
        yield ns
    finally:
        run("ip", "netns", "del", ns, check=False)


def listening(ns: str, addr: str) -> bool:
    """Is something accepting on addr inside the namespace?"""
    host, port = addr.rsplit(":", 1)
    with NetNs(ns), socket.socket() as s:
        return s.connect_ex((host, int(port))) == 0


@pytest.fixture
def user_switch(netns: str, tmp_path: Path) -> Iterator[str]:
    """simple_switch_grpc on sw0..sw5 with no program, as a user starts it; its gRPC address."""
    addr = f"127.0.0.1:{free_port()}"
    cmd = ["ip", "netns", "exec", netns, "simple_switch_grpc", "--device-id", "0", "--no-p4"]
    cmd += [a for p in PORTS for a in ("-i", f"{p}@sw{p}")]
    cmd += ["--", "--grpc-server-addr", addr, "--cpu-port", str(CPU_PORT)]
    with (tmp_path / "bmv2.log").open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            assert wait_until(lambda: proc.poll() is None and listening(netns, addr), 10.0, 0.05), (tmp_path / "bmv2.log").read_text()
            yield addr
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def ptf_command(addr: str, log_dir: Path) -> list[str]:
    """The user's command: the ptf runner on the suite, port map, P4Runtime address, P4Info and JSON (and the
small build's, for P6 and P8)."""
    p4info, bmv2_json = artifacts("p4lb")
    small_p4info, small_json = artifacts("p4lb_small")  # P6, P8: the 32-place table, where refusals can be seen
    params = f"grpcaddr='{addr}';p4info='{p4info}';bmv2_json='{bmv2_json}';small_p4info='{small_p4info}';small_bmv2_json='{small_json}'"
    cmd = [str(Path(sys.executable).parent / "ptf"), "--test-dir", str(SUITE), "--log-dir", str(log_dir)]
    cmd += [a for p in PORTS for a in ("--interface", f"{p}@ptf{p}")]
    return [*cmd, "--test-params", params]


def test_ptf_suite_passes_under_the_ptf_runner(netns: str, user_switch: str, tmp_path: Path) -> None:
    cmd = ["ip", "netns", "exec", netns, *ptf_command(user_switch, tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=PTF_TIMEOUT_S, cwd=tmp_path)
    out = res.stdout + res.stderr
    ran = re.search(r"^Ran (\d+) tests? in", out, re.M)
    passed = re.findall(r" \.\.\. ok$", out, re.M)  # unittest's verbose lines (a docstring may come between name and verdict)
    print(f"\n{' '.join(cmd)}\n{len(passed)} ptf tests passed")
    assert res.returncode == 0 and ran and re.search(r"^OK$", out, re.M), f"ptf exit {res.returncode}:\n{out[-6000:]}"
    assert int(ran.group(1)) == len(passed) >= 18, out[-3000:]
