"""Fault injection on BMv2 running p4lb.p4, with real `p4lb` processes: a hung switch (SIGSTOP), kill -9 of a
command at each write of its plan, two controllers on one switch. After each fault the health loop converges, and
the switch's view satisfies P1-P8 for the sets it converged to: its tables read back list exactly the eligible
backends once each, new flows go round-robin to them alone, open flows stay on their backends, nothing is dropped.

Health checks are TCP connects to one listener per backend on 127.0.0.1 (a backend dies when its listener closes);
packets are raw frames from the lab's client port, their fate seen on the backends' ports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p4lb.controller.lock import SwitchLock
from p4lb.controller.settings import load
from p4lb.controller.switch import P4RuntimeSwitch
from p4lb.lab.driver import tcp_frame
from p4lb.lab.hosts import wait_until
from p4lb.lab.toolchain import artifacts, require_switch
from p4lb.model.crc import ip, ip_str
from p4lb.model.p4lb import flow_slot
from p4lb.model.packet import ACK, PSH, SYN, Packet

ELECTION_ID = 10  # the loop's; one-shot commands take 11; the test's own observer session is a backup (5)
RPC_TIMEOUT_MS = 500
CLIENT = ip("10.0.1.1")
EVERYONE = (1, 2, 3, 4)

# `p4lb ARGS` that SIGKILLs itself once $P4LB_TEST_KILL_AFTER writes of its plan have reached the switch: before the
# next one, or at once after the last (the commit) so that it never saves the state file. A batch is cut where the
# count ends (what the switch holds after a kill inside one Write), then the process dies.
KILLER = """
import os, signal, sys
from p4lb.controller import cli
from p4lb.controller.switch import P4RuntimeSwitch

left = int(os.environ["P4LB_TEST_KILL_AFTER"])
batch, single = P4RuntimeSwitch.write_batch, P4RuntimeSwitch.write

def die_if_done():
    if left == 0:
        os.kill(os.getpid(), signal.SIGKILL)

def write_batch(self, ws):
    global left
    die_if_done()
    k = min(len(ws), left)
    batch(self, ws[:k])
    left -= k
    die_if_done()

def write(self, w):
    global left
    die_if_done()
    single(self, w)
    left -= 1
    die_if_done()

P4RuntimeSwitch.write_batch, P4RuntimeSwitch.write = write_batch, write
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def faults_lab():
    """BMv2 running p4lb.p4 between a client and 4 backends; no session held (the `p4lb` processes hold theirs)."""
    require_switch()
    from p4lb.lab.lab import Lab  # noqa: PLC0415

    with Lab("p4lb", push=False) as lab:
        yield lab


class Rig:
    """The lab freshly pushed, one health listener per backend, a config, and the `p4lb` processes of one test."""

    def __init__(self, lab, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        self.listeners = {b.id: socket.create_server(("127.0.0.1", 0), backlog=128) for b in lab.cfg.backends}
        self.health = {b: s.getsockname() for b, s in self.listeners.items()}
        self.config = tmp / "p4lb.toml"
        self.config.write_text(self.toml())
        self.settings = load(self.config)
        self.env = os.environ | {"XDG_RUNTIME_DIR": str(tmp / "run"), "PYTHONUNBUFFERED": "1"}
        self.loops: list[tuple[subprocess.Popen[bytes], Path]] = []
        p4info, bmv2_json = artifacts("p4lb")
        self.observer = P4RuntimeSwitch(lab.bmv2.grpc, 0, (0, 5), str(p4info), str(bmv2_json), lab.cfg, timeout_s=2.0)
        self.ports = iter(range(20000, 60000))
        self.slots: set[int] = set()
        self.pinned: dict[Packet, int] = {}  # an open flow's first packet -> the backend it was given

    def toml(self) -> str:
        """The controller's config: the lab's VIP and backends, fast TCP checks of the listeners, short deadlines."""
        cfg = self.lab.cfg
        p4info, bmv2_json = artifacts("p4lb")
        lines = [
            f"active = {cfg.n}",
            "[vip]", f'address = "{ip_str(cfg.vip)}"', f"port = {cfg.vip_port}", f"client_port = {cfg.client_port}",
            f'client_net = "{ip_str(cfg.client_net)}/{cfg.client_prefix}"', f'client_mac = "{mac_str(cfg.client_mac)}"',
            "[switch]", f'grpc = "{self.lab.bmv2.grpc}"', f'p4info = "{p4info}"', f'bmv2_json = "{bmv2_json}"',
            f"election_id = {ELECTION_ID}", f"rpc_timeout_ms = {RPC_TIMEOUT_MS}", "lock_timeout_ms = 3000",
            "[health]", 'kind = "tcp"', "interval_ms = 100", "timeout_ms = 50", "rise = 2", "fall = 2",
        ]
        for b in cfg.backends:
            port = self.health[b.id][1]
            lines += ["[[backend]]", f'address = "{ip_str(b.ip)}"', f'mac = "{mac_str(b.mac)}"', f"port = {b.port}", 'health_address = "127.0.0.1"', f"health_port = {port}"]
        return "\n".join(lines) + "\n"

    # ---- processes -------------------------------------------------------------------------------------------
    def cli(self, *args: str, kill_after: int | None = None) -> subprocess.CompletedProcess[str]:
        """`p4lb -c CONFIG ARGS` to its end (SIGKILLed after `kill_after` writes of its plan, if given)."""
        code = ["-c", KILLER] if kill_after is not None else ["-m", "p4lb.controller.cli"]
        env = self.env | ({"P4LB_TEST_KILL_AFTER": str(kill_after)} if kill_after is not None else {})
        return subprocess.run([sys.executable, *code, "-c", str(self.config), *args], capture_output=True, text=True, cwd=self.tmp, env=env, timeout=60)

    def start_loop(self, wait: bool = True) -> subprocess.Popen[bytes]:
        """`p4lb -v run` in the background; with `wait`, until its first round has read the switch."""
        log = self.tmp / f"run{len(self.loops)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "p4lb.controller.cli", "-c", str(self.config), "-v", "run"], stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp, env=self.env)
        self.loops.append((proc, log))
        if wait:
            assert wait_until(lambda: "P4Runtime session with" in log.read_text(), 20.0, 0.02), log.read_text()
        return proc

    def loop_log(self, i: int = -1) -> str:
        """What a loop has logged."""
        return self.loops[i][1].read_text()

    def close(self) -> None:
        """Kill the loops, close the listeners and the observer's session."""
        for proc, _ in self.loops:
            proc.kill()
            proc.wait()
        for s in self.listeners.values():
            s.close()
        self.observer.close()

    # ---- what the switch does ------------------------------------------------------------------------------
    def down(self, b: int) -> None:
        """Backend b dies: its health listener closes (connects are refused)."""
        self.listeners[b].close()

    def up(self, b: int) -> None:
        """Backend b is back: its health listener opens again on the same port."""
        self.listeners[b] = socket.create_server(self.health[b], backlog=128)

    def group(self) -> tuple[int, ...] | None:
        """The committed group read back, sorted (the planner keeps members in place, so its order depends on the
        history); None before the first commit."""
        view = self.observer.read(full=False)
        return None if view.version is None else tuple(sorted(view.groups[view.version]))

    def converges(self, want: tuple[int, ...], limit_s: float = 15.0) -> None:
        """Wait until the committed group is `want` and stays so for a few rounds."""
        assert wait_until(lambda: self.group() == want, limit_s, 0.05), (self.group(), self.loop_log() if self.loops else "")
        time.sleep(0.5)
        assert self.group() == want

    def changes(self, before: tuple[int, ...], want: tuple[int, ...], limit_s: float = 15.0) -> None:
        """The committed group's next change, from `before`, is to `want` (no commit of another group first), and it
        stays so for a few rounds."""
        assert wait_until(lambda: self.group() != before, limit_s, 0.01), self.loop_log()
        assert self.group() == want, self.loop_log()
        time.sleep(0.5)
        assert self.group() == want

    def new_flow(self) -> Packet:
        """A SYN of a new client port whose flow slot no flow of this test has taken (a collision would be refused)."""
        while True:
            pkt = Packet(CLIENT, next(self.ports), SYN)
            slot = flow_slot(self.lab.cfg, pkt)
            if slot not in self.slots:
                self.slots.add(slot)
                return pkt

    def send(self, pkt: Packet) -> int:
        """Send one packet from the client: the backend it reached (0: dropped or lost; a frame not out when the
        probe came back is waited for, Lab.late: BMv2 queues each egress port apart, and a loaded machine lags)."""
        seen = self.lab.send(tcp_frame(self.lab.cfg, pkt)) or self.lab.late()
        assert len(seen) <= 1, seen
        return self.lab.backend_at(seen[0].port) if seen else 0

    def open_flows(self, count: int) -> None:
        """Open `count` new flows and remember where each went."""
        for _ in range(count):
            pkt = self.new_flow()
            self.pinned[pkt] = self.send(pkt)
            assert self.pinned[pkt] != 0, "a SYN to a deployed group was dropped"

    def drops(self) -> dict[int, int]:
        """The lb_drops counter, by reason."""
        return self.observer.rt.counter_read("lb_drops")


def mac_str(value: int) -> str:
    """A 48-bit MAC as text."""
    return ":".join(f"{x:02x}" for x in value.to_bytes(6, "big"))


def data(pkt: Packet) -> Packet:
    """A data packet of the same flow."""
    return Packet(pkt.src_ip, pkt.src_port, PSH | ACK)


def assert_properties(rig: Rig, eligible: tuple[int, ...]) -> None:
    """P1-P8 on the switch's view, for the eligible set the controller converged to."""
    view = rig.observer.read(full=False)
    assert view.version is not None and tuple(sorted(view.groups[view.version])) == eligible  # P1, P2, P7: exactly the eligible set, once each
    drops = rig.drops()
    for pkt, backend in rig.pinned.items():  # P4, P6: open flows stay on their backend, failed or not
        assert rig.send(data(pkt)) == backend, (pkt, backend)
    fresh = [rig.send(rig.new_flow()) for _ in range(2 * len(eligible))]  # P1, P2, P3, P5: round-robin over the group alone
    assert sorted(fresh) == sorted(eligible * 2), fresh
    assert rig.drops() == drops  # P3, P8: nothing dropped, no refusal


@pytest.fixture
def rig(faults_lab, tmp_path) -> Iterator[Rig]:
    """A fresh pipeline (every table, register and counter empty) and `p4lb deploy`, with 4 flows open."""
    faults_lab.reset()
    r = Rig(faults_lab, tmp_path)
    try:
        res = r.cli("deploy")
        assert res.returncode == 0, res.stdout + res.stderr
        r.open_flows(4)
        assert sorted(r.pinned.values()) == list(EVERYONE)
        yield r
    finally:
        r.close()


# ---- a hung switch -------------------------------------------------------------------------------------------------
def test_a_hung_switch_fails_a_command_within_its_deadline_then_the_loop_converges(rig):
    baseline = time.monotonic()
    assert rig.cli("deploy").returncode == 0  # reads everything back, writes nothing
    baseline = time.monotonic() - baseline  # a command's start-up and work on this machine, now
    bmv2 = rig.lab.bmv2.proc
    os.kill(bmv2.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        res = rig.cli("fail", "2")
        took = time.monotonic() - started
        assert res.returncode == 3, res.stdout + res.stderr
        assert "DEADLINE_EXCEEDED" in res.stdout or "unreachable" in res.stdout, res.stdout
        assert took < baseline + 4 * RPC_TIMEOUT_MS / 1000, (took, baseline, res.stdout)  # a few deadlines, not a hang
        with SwitchLock(rig.settings.switch.key, folder=rig.tmp / "run" / "p4lb").hold(timeout_s=0):
            pass  # the lock was released
        rig.start_loop(wait=False)  # a loop started while the switch hangs: its rounds fail at their deadlines, logged
        rig.down(4)
        assert wait_until(lambda: "retrying next round" in rig.loop_log(), 10.0, 0.05), rig.loop_log()
    finally:
        os.kill(bmv2.pid, signal.SIGCONT)
    rig.converges((1, 2, 3))  # 2 stayed healthy: its fail never happened
    assert_properties(rig, (1, 2, 3))
    errors = rig.loop_log().count("retrying next round")
    os.kill(bmv2.pid, signal.SIGSTOP)  # again, now that the loop has a session: its calls on it miss their deadlines
    try:
        rig.up(4)
        assert wait_until(lambda: rig.loop_log().count("retrying next round") > errors, 10.0, 0.05), rig.loop_log()
    finally:
        os.kill(bmv2.pid, signal.SIGCONT)
    rig.changes((1, 2, 3), EVERYONE)
    assert rig.loops[0][0].poll() is None  # the loop survived both hangs
    assert_properties(rig, EVERYONE)


# ---- kill -9 at each write of a plan ---------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [0, 2, 4, 5, 6])
def test_a_command_killed_after_k_writes_of_its_plan_is_repaired_by_the_running_loop(rig, k):
    """`p4lb fail 2` plans 6 writes into the never-used version (3 members and its size in one Write, rr_next, the
    commit) and is killed after k of them; the running loop then converges to its own verdicts."""
    rig.start_loop()
    res = rig.cli("fail", "2", kill_after=k)
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr
    rig.converges(EVERYONE)  # the state file never said 2 failed: the loop undoes a commit (k = 6)
    assert_properties(rig, EVERYONE)  # what the dead command staged reaches no packet
    rig.down(3)  # and the loop's verdicts change: backend 3 dies
    rig.changes(EVERYONE, (1, 2, 4))
    assert "Traceback" not in rig.loop_log()
    assert_properties(rig, (1, 2, 4))


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_a_killed_command_does_not_make_the_loop_commit_what_it_staged(rig, k):
    """The loop writes only the staged entries that differ from what it knows that version holds. After a fail and a
    heal (1, 2, 4, 3) is live and the unused version lists (1, 2, 4), as the loop knows; `p4lb fail 4` (3 writes:
    position 2 := 3, rr_next, the commit) is killed after k of them, leaving the size as it was. Then 3 dies: the loop
    wants (1, 2, 4), what it believes that version lists, and must read it back rather than commit what the dead
    command staged."""
    rig.start_loop()
    rig.down(3)
    rig.converges((1, 2, 4))
    rig.up(3)
    rig.converges(EVERYONE)
    res = rig.cli("fail", "4", kill_after=k)
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr
    rig.converges(EVERYONE)  # the state file never said 4 failed: the loop undoes a commit (k = 3)
    assert_properties(rig, EVERYONE)
    rig.down(3)
    rig.changes(EVERYONE, (1, 2, 4))  # not (1, 2, 3) first
    assert_properties(rig, (1, 2, 4))


# ---- two controllers on one switch -----------------------------------------------------------------------------------
def test_a_second_loop_on_the_same_switch_is_refused_naming_the_first(rig):
    first = rig.start_loop()
    res = rig.cli("run")
    assert res.returncode == 3, res.stdout + res.stderr
    assert "health loop (p4lb run)" in res.stdout and f"pid {first.pid}" in res.stdout, res.stdout
    rig.down(1)
    rig.changes(EVERYONE, (2, 3, 4))  # the first loop carries on
    assert first.poll() is None
    assert_properties(rig, (2, 3, 4))
