"""Health checks as HAProxy and Envoy define them, against real loopback servers on 127.0.0.1: one deadline for the
whole probe, rounds bounded by the interval, 128 hanging backends, validated config, TCP, HTTP and HTTPS."""

from __future__ import annotations

import asyncio
import faulthandler
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from p4lb.controller.errors import ConfigFileError
from p4lb.controller.health import HealthMonitor, Probe, probe
from p4lb.controller.settings import CheckKind, HealthCheck, parse

BACKENDS = [{"address": f"10.0.{i + 1}.{i + 1}", "mac": f"00:00:00:00:0{i + 1}:0{i + 1}", "port": i + 1} for i in range(1, 5)]
Handler = Callable[[socket.socket, threading.Event], None]
T = TypeVar("T")


@pytest.fixture(autouse=True)
def watchdog():
    """A hung test kills the run (with stacks) instead of hanging it."""
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


class Server:
    """A TCP server on 127.0.0.1 whose connections `handler` serves, each on its own thread (or never accepted)."""

    def __init__(self, handler: Handler | None, tls: ssl.SSLContext | None = None, backlog: int = 512) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.handler, self.tls, self.conns = handler, tls, []
        self.sock.settimeout(0.02)
        if handler is not None:
            threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(2)
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.handler(conn, self.stopped)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def serve():
    servers: list[Server] = []

    def start(handler: Handler | None, **kw) -> int:
        servers.append(Server(handler, **kw))
        return servers[-1].port

    yield start
    for s in servers:
        s.stop()


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def answer(status: int, body: bytes = b"ok") -> Handler:
    def handler(conn, stopped):
        read_request(conn)
        conn.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))

    return handler


def dribble(conn, stopped):
    """The status line, then one header byte every 20 ms, forever."""
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    while not stopped.wait(0.02):
        conn.sendall(b"X")


def short_body(conn, stopped):
    """Headers promise 100 bytes; 10 come, then nothing."""
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    stopped.wait(2)


def hang(conn, stopped):
    read_request(conn)
    stopped.wait(2)


def close(conn, stopped):
    conn.close()


def http(port: int, timeout_ms: int = 50, **kw) -> HealthCheck:
    return HealthCheck(CheckKind.HTTP, port, timeout_ms=timeout_ms, interval_ms=max(100, timeout_ms), **kw)


def timed(address: str, check: HealthCheck) -> tuple[Probe, float]:
    t = time.monotonic()
    res = probe(address, check)
    return res, time.monotonic() - t


# Deadline assertions allow what the machine's load adds to the same work done against backends that answer at once
# (the baseline, measured next to the assertion): a few ms when idle, tens of ms at a load of 5 on two cores. A
# deadline that works ends within deadline + slack; a broken one (per read, queued, or none) runs for seconds, in
# every attempt, where a loaded machine's passing stall spoils one: up to TRIES attempts, one must be in time.
SLACK_MIN_S = 0.05
SLACK_FACTOR = 3
TRIES = 3


def slack(baseline: Callable[[], object], runs: int = 2) -> float:
    """SLACK_MIN_S plus SLACK_FACTOR times the slowest of a few runs of `baseline`, timed now."""
    worst = 0.0
    for _ in range(runs):
        t = time.monotonic()
        baseline()
        worst = max(worst, time.monotonic() - t)
    return SLACK_MIN_S + SLACK_FACTOR * worst


def within(attempt: Callable[[], T], limit_s: float, baseline: Callable[[], object]) -> tuple[T, float]:
    """Run `attempt` until one ends within limit_s + slack(baseline) (at most TRIES times): its result and time."""
    times = []
    for _ in range(TRIES):
        t = time.monotonic()
        res = attempt()
        times.append(time.monotonic() - t)
        if times[-1] < limit_s + slack(baseline):
            return res, times[-1]
    raise AssertionError(f"no attempt of {TRIES} ended within {limit_s * 1000:g} ms and the machine's slack: {times}")


def probe_baseline(serve) -> Callable[[], object]:
    """An HTTP probe of a backend that answers at once."""
    port = serve(answer(200))
    return lambda: probe("127.0.0.1", http(port, 5000))


def round_baseline(serve, n: int, max_concurrent: int = 256) -> tuple[Callable[[], object], HealthMonitor]:
    """A round of n TCP probes of a server that accepts and closes at once (close the monitor after)."""
    m = HealthMonitor(("127.0.0.1",) * n, HealthCheck(CheckKind.TCP, serve(close), interval_ms=5000, timeout_ms=4000, max_concurrent=max_concurrent))
    return m.round, m


# ---- one probe, one deadline -----------------------------------------------------------------------------------
@pytest.mark.parametrize("handler", [dribble, short_body, hang], ids=["dribbling", "short body", "hanging"])
def test_a_backend_that_never_finishes_its_answer_fails_at_the_deadline(serve, handler):
    """50 ms for the whole probe, not 50 ms per byte (a dribbler never stops) nor until the server gives up (2 s)."""
    check = http(serve(handler), 50)
    res, took = within(lambda: probe("127.0.0.1", check), 0.05, probe_baseline(serve))
    assert not res.ok and "timeout" in res.reason and took >= 0.045, (res, took)


def test_status_500_fails_and_200_passes(serve):
    bad = probe("127.0.0.1", http(serve(answer(500)), 500))
    assert not bad.ok and "status 500, expected 200" in bad.reason
    assert probe("127.0.0.1", http(serve(answer(200)), 500)).ok
    assert probe("127.0.0.1", http(serve(answer(204, b"")), 500, expect_status=204)).ok


def test_a_backend_that_closes_at_once_fails_fast(serve):
    res, took = timed("127.0.0.1", http(serve(close), 500))
    assert not res.ok and took < 0.45 and "timeout" not in res.reason  # before its 500 ms deadline


def test_garbage_instead_of_http_fails(serve):
    def garbage(conn, stopped):
        read_request(conn)
        conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")

    res = probe("127.0.0.1", http(serve(garbage), 500))
    assert not res.ok and "not an HTTP status line" in res.reason


def test_the_request_carries_path_and_host(serve):
    seen: list[bytes] = []

    def record(conn, stopped):
        seen.append(read_request(conn))
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")

    assert probe("127.0.0.1", http(serve(record), 500, path="/healthz?full=1", host="www.example.com")).ok
    assert seen[0].startswith(b"GET /healthz?full=1 HTTP/1.1\r\n") and b"\r\nHost: www.example.com\r\n" in seen[0]


def test_tcp_up_and_refused(serve):
    port = serve(None)  # listening, never accepting: the kernel completes the handshake
    assert probe("127.0.0.1", HealthCheck(CheckKind.TCP, port, timeout_ms=200)).ok
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    res = probe("127.0.0.1", HealthCheck(CheckKind.TCP, free, timeout_ms=200))
    assert not res.ok and "refused" in res.reason.lower()


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    return crt, key


def test_https_with_and_without_verification(serve, cert):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert)
    port = serve(answer(200), tls=ctx)
    check = HealthCheck(CheckKind.HTTPS, port, timeout_ms=1000, interval_ms=1000)
    refused = probe("127.0.0.1", check)
    assert not refused.ok and "CERTIFICATE_VERIFY_FAILED" in refused.reason  # self-signed: not trusted by default
    assert probe("127.0.0.1", HealthCheck(CheckKind.HTTPS, port, timeout_ms=1000, interval_ms=1000, tls_verify=False)).ok
    assert probe("127.0.0.1", HealthCheck(CheckKind.HTTPS, port, timeout_ms=1000, interval_ms=1000, ca_file=str(cert[0]))).ok
    bad = probe("127.0.0.1", HealthCheck(CheckKind.HTTPS, port, timeout_ms=1000, interval_ms=1000, tls_verify=False, expect_status=204))
    assert not bad.ok and "status 200" in bad.reason


# ---- rounds ----------------------------------------------------------------------------------------------------
def test_128_hanging_backends_finish_a_round_within_the_interval(serve):
    port = serve(None)  # accepted by the kernel, never answered: every probe hangs
    check = HealthCheck(CheckKind.HTTP, port, interval_ms=100, timeout_ms=50, fall=1)
    m = HealthMonitor(("127.0.0.1",) * 128, check)
    baseline, base = round_baseline(serve, 128)
    try:
        within(m.round, 0.1, baseline)  # within the interval, give or take the machine's load
        assert not any(m.verdicts().values())
        assert all("timeout" in r or "overran the round" in r for r in m.reasons.values()), m.reasons  # each at a deadline
    finally:
        m.close()
        base.close()


def test_a_round_never_overruns_the_interval_even_when_probes_queue(serve):
    port = serve(None)
    check = HealthCheck(CheckKind.HTTP, port, interval_ms=100, timeout_ms=100, fall=1, max_concurrent=8)  # 16 waves of 100 ms
    m = HealthMonitor(("127.0.0.1",) * 128, check)
    baseline, base = round_baseline(serve, 128, max_concurrent=8)
    try:
        within(m.round, 0.09, baseline)  # the probes stop at 90 ms, not after 16 waves (1.6 s)
        assert not any(m.verdicts().values())
        assert sum("overran the round" in r for r in m.reasons.values()) >= 100  # queued probes count as failures
    finally:
        m.close()
        base.close()


def test_a_prober_that_overruns_or_raises_is_a_failure():
    async def slow(backend, address):
        await asyncio.sleep(10)

    def broken(backend, address):
        raise RuntimeError("bug")

    def instant(backend, address):
        return Probe(True, "up")

    check = HealthCheck(interval_ms=50, timeout_ms=10, fall=1)
    for prober, words in ((slow, "overran"), (broken, "RuntimeError")):
        m, base = HealthMonitor(("127.0.0.1",) * 3, check, prober=prober), HealthMonitor(("127.0.0.1",) * 3, check, prober=instant)
        try:
            within(m.round, 0.045, base.round)  # not the prober's 10 s
            assert not m.verdicts()[1] and words in m.reasons[1], m.reasons
        finally:
            m.close()
            base.close()


def test_a_flapping_backend_is_damped(serve):
    count = [0]

    def flap(conn, stopped):
        count[0] += 1
        answer(200 if count[0] % 2 else 500)(conn, stopped)

    check = http(serve(flap), 200, rise=2, fall=2)
    m = HealthMonitor(("127.0.0.1",), check)
    try:
        assert [m.round() for _ in range(6)] == [[]] * 6 and m.verdicts() == {1: True}  # ok, fail, ok, ...: never 2 in a row
    finally:
        m.close()


def test_probe_latencies_are_observed(serve):
    seen = []
    m = HealthMonitor(("127.0.0.1", "127.0.0.1"), http(serve(answer(200)), 2000), ports=(0, serve(answer(500))), observe=lambda b, s, ok: seen.append((b, ok, s)))
    try:
        t = time.monotonic()
        m.round()
        took = time.monotonic() - t
    finally:
        m.close()
    assert [(b, ok) for b, ok, _ in seen] == [(1, True), (2, False)] and all(0 < s <= took for *_, s in seen), (seen, took)


# ---- validated config ------------------------------------------------------------------------------------------
def doc(health: dict | None = None, **backend0) -> dict:
    backends = [dict(b) for b in BACKENDS]
    backends[0].update(backend0)
    return {"backend": backends, "health": {"kind": "http", "interval_ms": 100, "timeout_ms": 50, **(health or {})}}


@pytest.mark.parametrize("path", ["/a b", "/a\r\nX-Injected: 1", "/ü", "relative", "", "/\t", "/a\nb"])
def test_bad_paths_are_config_errors_naming_health_path(path):
    with pytest.raises(ConfigFileError) as err:
        parse(doc({"path": path}))
    assert err.value.field == "health.path"


@pytest.mark.parametrize("host", ["a b", "x\r\nEvil: 1", "bücher.de", "", "h/ost"])
def test_bad_hosts_are_refused(host):
    if not host:
        assert parse(doc({"host": host})).health.host == ""  # empty: the backend's address
        return
    with pytest.raises(ConfigFileError) as err:
        parse(doc({"host": host}))
    assert err.value.field == "health.host"


@pytest.mark.parametrize("value", ["web1.example.com", "5", 5, "10.0.0", "10.0.0.256", "::1", "010.0.0.1", True])
def test_health_address_is_a_dotted_ipv4_address_only(value):
    with pytest.raises(ConfigFileError) as err:
        parse(doc(health_address=value))
    assert err.value.field == "backend[0].health_address" and "dotted IPv4" in str(err.value)


def test_health_settings_parse():
    s = parse(doc({"kind": "https", "path": "/healthz", "host": "lb.example.com:8443", "tls_verify": False, "expect_status": 204, "max_concurrent": 64}, health_address="127.0.0.1", health_port=8080))
    h = s.health
    assert (h.kind, h.path, h.host, h.tls_verify, h.expect_status, h.max_concurrent) == (CheckKind.HTTPS, "/healthz", "lb.example.com:8443", False, 204, 64)
    assert s.health_targets()[0] == ("127.0.0.1", 8080) and s.health_targets()[1] == ("10.0.3.3", 80)
    for bad in ({"expect_status": 99}, {"expect_status": 600}, {"kind": "icmp"}, {"tls_verify": "no"}, {"max_concurrent": 0}):
        with pytest.raises(ConfigFileError):
            parse(doc(bad))
