"""End to end: the `p4lb` CLI drives BMv2 running p4lb.p4; HTTP servers in backend namespaces, a real client."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from p4lb.lab.e2e import E2E, INTERVAL_MS, toml_config
from p4lb.lab.hosts import wait_until
from p4lb.lab.toolchain import artifacts, require_switch

STATUS_CLI_S = 5.0  # the whole command; the read itself is timed in test_status_counts (budget 2 s)


@pytest.fixture(scope="module")
def e2e_lab():
    """A lab whose hosts have addresses (real TCP) and management links."""
    require_switch()
    from p4lb.lab.lab import Lab  # noqa: PLC0415

    with Lab("p4lb", silent=False, push=False) as lab:
        yield lab


@pytest.fixture
def e2e(e2e_lab, tmp_path):
    """Servers up, pipeline deployed by `p4lb deploy` (after a fresh push by the lab)."""
    e2e_lab.reset()
    env = E2E(e2e_lab, tmp_path)
    try:
        for b in range(1, e2e_lab.cfg.n + 1):
            env.start_server(b)
        env.cli("deploy")
        yield env
    finally:
        env.close()


def test_round_robin_through_the_vip(e2e):
    got = [e2e.get() for _ in range(8)]
    assert got == [1, 2, 3, 4, 1, 2, 3, 4]
    status = e2e.status()
    assert [r["flows_dispatched"] for r in status["backends"]] == [2, 2, 2, 2]
    assert [r["open_flows"] for r in status["backends"]] == [0, 0, 0, 0]  # each GET closed its connection
    with e2e.connect() as kept:  # the 9th connection, open: backend 1
        port = kept.getsockname()[1]
        t0 = time.monotonic()
        assert [r["open_flows"] for r in e2e.status()["backends"]] == [1, 0, 0, 0]
        took = time.monotonic() - t0
        print(f"\n`p4lb status --json` (a new process: imports, P4Info, session, one read) at {1 << e2e.lab.cfg.flow_table_bits:,} flow places: {took:.2f} s")
        assert took < STATUS_CLI_S
        *flows, total = [json.loads(line) for line in e2e.cli("flows", "--json").stdout.splitlines()]
        assert [(f["client"].rsplit(":", 1)[1], f["backend"]) for f in flows] == [(str(port), 1)] and total == {"open_flows": 1}


def test_seed_demo_the_vip_keeps_working_after_a_server_dies(e2e):
    """The seed's demo (curl the VIP, kill a server, curl again), with the health loop failing it over."""
    e2e.start_loop()
    assert e2e.get() == 1
    kept = e2e.connect()  # an open connection, pinned to backend 2, which stays up
    killed_at = time.monotonic()
    e2e.stop_server(3)
    assert wait_until(lambda: e2e.transitions("fail 3") == 1, 10.0, 0.005), f"backend 3 was never failed: {e2e.loop_text()}"
    failover_ms = (time.monotonic() - killed_at) * 1000
    print(f"\nfailover (kill -> fail committed, seen in the loop's log): {failover_ms:.0f} ms at a {INTERVAL_MS} ms interval")
    got = [e2e.get() for _ in range(6)]
    assert None not in got and 3 not in got, got
    assert e2e.get(kept) == 2, "an open connection to a live backend broke"
    assert not e2e.status()["backends"][2]["in_group"]
    e2e.start_server(3)
    assert wait_until(lambda: e2e.transitions("heal 3") == 1, 10.0, 0.01), f"backend 3 was never healed: {e2e.loop_text()}"
    assert 3 in {e2e.get() for _ in range(4)}


def test_scale_and_drain_keep_open_connections(e2e):
    opened = [e2e.connect() for _ in range(4)]  # one connection to each backend, idle for now
    e2e.cli("scale", "--active", "2")
    assert {e2e.get() for _ in range(6)} == {1, 2}
    e2e.cli("drain", "1")
    assert {e2e.get() for _ in range(4)} == {2}
    assert sorted(e2e.get(s) for s in opened) == [1, 2, 3, 4]  # every open connection still reaches its backend
    e2e.cli("undrain", "1")
    e2e.cli("scale", "--active", "4")
    assert {e2e.get() for _ in range(8)} == {1, 2, 3, 4}


def test_controller_killed_mid_operation_converges_on_restart(e2e):
    """A half-written operation (staged member entries, no commit) is finished by the next `p4lb deploy`."""
    from p4lb.controller.p4rt import P4rt  # noqa: PLC0415

    status = e2e.status()
    assert all(r["in_group"] for r in status["backends"])
    # what a controller killed after its first staged writes leaves behind: the unused version half-written
    with P4rt(e2e.lab.bmv2.grpc, election_id=(0, 5)) as rt:
        rt.load_p4info(artifacts("p4lb")[0])
        version = rt.read_table("vip")[0].params["version"]
        rt.upsert("rr_member", {"meta.lb.service": 0, "meta.lb.version": 1 - version, "meta.lb.position": 0}, "set_member", {"backend": 3})
    e2e.cli("fail", "2")  # the state file now says 2 failed; the switch may have the half-written version
    assert {e2e.get() for _ in range(6)} == {1, 3, 4}
    first = e2e.cli("deploy").stdout
    again = e2e.cli("deploy").stdout
    assert "deployed: 0 writes" in again, (first, again)
    assert {e2e.get() for _ in range(6)} == {1, 3, 4}


def test_bad_config_writes_nothing(e2e):
    before = e2e.status()
    bad = e2e.config.read_text().replace('mac = "00:00:00:00:02:02"', 'mac = "00:00:00:00:02"')
    e2e.config.write_text(bad)
    res = e2e.cli("deploy", check=False)
    assert res.returncode == 2 and "backend[0].mac" in res.stdout
    e2e.config.write_text(toml_config(e2e.lab))
    assert e2e.status()["backends"] == before["backends"]


def test_unreachable_switch_is_a_clear_error(e2e, tmp_path):
    cfg = e2e.config.read_text().replace(e2e.lab.bmv2.grpc, "127.0.0.1:1")
    path = tmp_path / "down.toml"
    path.write_text(cfg)
    res = subprocess.run([sys.executable, "-m", "p4lb.controller.cli", "-c", str(path), "status"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert res.returncode == 3 and "unreachable" in res.stdout


def test_flow_command_shows_the_slot_of_a_connection(e2e):
    s = e2e.connect()
    port = s.getsockname()[1]
    out = e2e.cli("flow", f"10.0.0.10:{port}").stdout
    assert "OPEN, held by this connection, backend 1" in out, out
    assert e2e.get(s) == 1
    bad = e2e.cli("flow", "10.0.0.10", check=False)
    assert bad.returncode == 2 and "CLIENT_IP:PORT" in bad.stdout
