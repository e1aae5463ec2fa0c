"""`python -m p4lb.controller.bench`: failover time, backend dies -> the committed group no longer lists it.

Backends are HTTP servers on 127.0.0.2..5 (loopback); the switch is the executable model (BMv2 figures need
simple_switch_grpc and are measured by the switch benchmark where it exists). The seed's controller is the
same harness with its loop: ping every 1 s with a 1 s timeout, fail on the first miss.
"""

from __future__ import annotations

import http.server
import random
import statistics
import sys
import threading
import time
from dataclasses import replace

from rich.console import Console

from p4lb.controller.cli import health_loop
from p4lb.controller.controller import Controller
from p4lb.controller.settings import HealthCheck, parse
from p4lb.controller.switch import ModelSwitch
from p4lb.model.ops import Write

PORT = 18080
ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


class _Timed(ModelSwitch):
    """Records when each commit lands."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.commits: list[tuple[float, tuple[int, ...]]] = []

    def write(self, w: Write) -> None:
        super().write(w)
        if w.target == "vip":
            self.commits.append((time.monotonic(), self.state.members(self.state.vip)))


def trial(check: HealthCheck, victim: int = 2, rounds_limit_s: float = 10.0) -> float:
    """Seconds from the victim's death to the commit that drops it."""
    servers = [http.server.ThreadingHTTPServer((a, PORT), _Quiet) for a in ADDRESSES]
    for s in servers:
        threading.Thread(target=s.serve_forever, args=(0.005,), daemon=True).start()
    backends = [{"address": f"10.0.{i + 2}.{i + 2}", "mac": f"00:00:00:00:0{i + 2}:0{i + 2}", "port": i + 2, "health_address": a} for i, a in enumerate(ADDRESSES)]
    settings = parse({"backend": backends, "health": {"kind": check.kind, "port": PORT, "interval_ms": check.interval_ms, "timeout_ms": check.timeout_ms, "rise": check.rise, "fall": check.fall}})
    switch = _Timed(settings.lb)
    ctl = Controller(settings, switch)
    ctl.deploy()
    rounds = int(rounds_limit_s * 1000 / check.interval_ms)
    loop = threading.Thread(target=health_loop, args=(ctl, rounds), daemon=True)
    loop.start()
    time.sleep((3 + random.random()) * check.interval_ms / 1000)  # die at a random phase of the check loop
    servers[victim - 1].shutdown()
    servers[victim - 1].server_close()
    killed = time.monotonic()  # from here on, connections to the victim are refused
    deadline = killed + rounds_limit_s
    while time.monotonic() < deadline and not any(t > killed and victim not in g for t, g in switch.commits):
        time.sleep(0.001)
    done = next((t for t, g in switch.commits if t > killed and victim not in g), None)
    for s in servers:
        s.shutdown()
        s.server_close()
    loop.join(timeout=rounds_limit_s)
    if done is None:
        raise SystemExit("failover did not happen within the time limit")
    return done - killed


def main() -> int:
    """Print p4lb's failover time at a 100 ms interval next to the seed's ping loop."""
    console = Console()
    p4lb = HealthCheck("tcp", PORT, interval_ms=100, timeout_ms=50, rise=2, fall=2)
    seed = replace(p4lb, interval_ms=2000, timeout_ms=1000, fall=1, rise=1)  # ping -W1 then sleep 1
    rows = []
    for name, check, n in (("p4lb (tcp, 100 ms, fall 2)", p4lb, 5), ("seed loop (1 s sleep + 1 s timeout, fall 1)", seed, 3)):
        times = [trial(check) for _ in range(n)]
        times.sort()
        rows.append((name, times))
        console.print(f"{name}: failover median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms over {n} trials; limit 2 intervals = {2 * check.interval_ms} ms")
    ratio = statistics.median(rows[1][1]) / statistics.median(rows[0][1])
    console.print(f"seed / p4lb median failover: x{ratio:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
