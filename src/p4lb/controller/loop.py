"""The health loop: probe every backend each interval, then make the switch match the verdicts in one plan.

Every round re-reads the operator's sets and the switch's committed version and plans from what the switch really
holds, so the loop repairs any difference on its own: a plan cut short by a kill, a switch that restarted (its
pipeline gone: deployed again), an operator's manual fail or heal. All verdict changes of a round go into one plan
and one commit. A round reads the vip and rr_group entries only (the members as this session wrote or last read
them); every entry is read back when those differ, after a switch error, a reconnect or another controller's
arbitration, when another process started writing or committed, and every FULL_READ_ROUNDS rounds (which notices
entries changed or deleted by hand) -- though not in a round whose verdicts changed: that read waits a round, so a
failover does not pay for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from p4lb.controller.controller import Applied, Controller
from p4lb.controller.errors import LockError, StateFileError, SwitchError
from p4lb.controller.health import HealthMonitor, Prober
from p4lb.model.pool import Pool

if TYPE_CHECKING:
    from p4lb.controller.metrics import Metrics

log = logging.getLogger(__name__)

FULL_READ_ROUNDS = 50  # every this many rounds (and after a switch error) every entry is read back, not only vip and rr_group


def with_verdicts(pool: Pool, verdicts: Mapping[int, bool]) -> Pool:
    """The operator's sets with the checker's verdicts as the healthy set (other sets unchanged)."""
    up = {b for b, ok in verdicts.items() if ok and 1 <= b <= pool.n}
    down = {b for b, ok in verdicts.items() if not ok}
    return Pool(pool.n, pool.active, frozenset((pool.healthy - down) | up), pool.draining, pool.weights)


@dataclass(frozen=True)
class RoundResult:
    """What one round did."""

    probe_s: float  # the probes (at most the interval)
    total_s: float  # probes and the switch
    applied: Applied | None  # None when the switch could not be reached


class HealthLoop:
    """Probes, converges, exports; one round at a time on the caller's thread."""

    def __init__(self, ctl: Controller, prober: Prober | None = None, metrics: Metrics | None = None) -> None:
        s = ctl.settings
        self.ctl = ctl
        self.metrics = metrics
        pool = ctl.current_pool()
        initial = {b: b in pool.healthy for b in range(1, s.lb.n + 1)}
        observe = metrics.observer(s.name) if metrics is not None else None
        self.monitor = HealthMonitor(s.health_addresses, s.health, initial=initial, prober=prober, ports=s.health_ports, observe=observe)
        self.due = 0  # rounds until the next periodic full read-back (0: this round, unless the verdicts changed)
        self.reread = True  # read everything back this round: the first one, and after an error
        self.last_verdicts: dict[int, bool] = {}  # the verdicts of the last round

    def round(self) -> RoundResult:
        """Probe every backend, then one converge of the switch to the verdicts."""
        started = time.monotonic()
        self.monitor.round()
        probed = time.monotonic()
        applied = self._converge(dict(self.monitor.verdicts()))
        self._export()
        return RoundResult(probed - started, time.monotonic() - started, applied)

    def _converge(self, verdicts: dict[int, bool]) -> Applied | None:
        """The switch made to match the verdicts; switch, lock and state file errors are logged and retried next round."""
        def update(pool: Pool) -> Pool:
            return with_verdicts(pool, verdicts)

        moved, self.last_verdicts = verdicts != self.last_verdicts, verdicts
        thorough = self.reread or (self.due <= 0 and not moved)
        try:
            applied = self.metrics.converge(self.ctl, update, "health", thorough) if self.metrics is not None else self.ctl.converge(update, "health", thorough)
        except (SwitchError, LockError, StateFileError) as exc:
            log.error("health round: %s; retrying next round", exc)
            self.reread = True
            return None
        self.reread = False
        self.due = FULL_READ_ROUNDS - 1 if thorough else self.due - 1
        if applied.writes:
            changed = applied.before.healthy ^ applied.after.healthy
            ops = ", ".join(f"{'heal' if b in applied.after.healthy else 'fail'} {b} ({self.monitor.reasons.get(b, '')})" for b in sorted(changed))
            log.warning("commit: %s: %d writes, group now %s", ops or "reconcile", len(applied.writes), list(applied.group))
        return applied

    def _export(self) -> None:
        """Refresh the metrics' switch snapshot every round (counters and backend_open: one read)."""
        if self.metrics is None:
            return
        self.metrics.update_from(self.ctl, quick=True)

    def run(self, rounds: int = 0, stop: threading.Event | None = None) -> int:
        """Rounds every interval (half of it while a verdict is pending) until `rounds` (0: forever) or `stop`."""
        n = 0
        try:
            while (rounds == 0 or n < rounds) and not (stop is not None and stop.is_set()):
                res = self.round()
                n += 1
                pause = max(0.0, self.monitor.next_delay() - res.total_s)
                if stop is not None:
                    stop.wait(pause)
                else:
                    time.sleep(pause)
        finally:
            self.monitor.close()
        return n


def health_loops(ctls: Sequence[Controller], make: Callable[[Controller], HealthLoop]) -> list[HealthLoop]:
    """One loop per service; if building one fails, the loops built before it are closed (their event loops and
    probe sockets) before the error goes on."""
    loops: list[HealthLoop] = []
    try:
        for ctl in ctls:
            loops.append(make(ctl))
    except BaseException:
        for loop in loops:
            loop.monitor.close()
        raise
    return loops


def run_all(loops: list[HealthLoop], rounds: int = 0, stop: threading.Event | None = None) -> int:
    """Several services' loops on one thread: each round when its own interval is up (the earliest first), each
    `rounds` rounds (0: forever) or until `stop`; the rounds run in all."""
    due = [time.monotonic()] * len(loops)
    done = [0] * len(loops)
    try:
        while not (stop is not None and stop.is_set()):
            waiting = [i for i in range(len(loops)) if rounds == 0 or done[i] < rounds]
            if not waiting:
                break
            i = min(waiting, key=lambda k: due[k])
            pause = max(0.0, due[i] - time.monotonic())
            if stop is not None:
                stop.wait(pause)
            else:
                time.sleep(pause)
            started = time.monotonic()
            loops[i].round()
            done[i] += 1
            due[i] = started + loops[i].monitor.next_delay()
    finally:
        for loop in loops:
            loop.monitor.close()
    return sum(done)
