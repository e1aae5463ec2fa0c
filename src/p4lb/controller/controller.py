"""The controller: carries out operations as exactly the writes the model plans and the prover checks (P7)."""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from p4lb.controller.errors import ControllerError, StateFileError, SwitchError
from p4lb.controller.settings import Settings
from p4lb.controller.switch import Switch, SwitchView
from p4lb.model.crc import ip_str
from p4lb.model.errors import PlanError
from p4lb.model.ops import Op, Write
from p4lb.model.p4lb import P4LB, P4lbState, check_plan, p4lb_plan
from p4lb.model.pool import Pool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Applied:
    """What one operation did."""

    op: str
    before: Pool
    after: Pool
    writes: tuple[Write, ...]


class BackendState(enum.Enum):
    """A backend's state in one word, by precedence: failed, draining, inactive (scaled out), serving."""

    FAILED = "failed"
    DRAINING = "draining"
    INACTIVE = "inactive"
    SERVING = "serving"


@dataclass(frozen=True)
class BackendStatus:
    """One row of `p4lb status`: the backend, its sets, whether the committed group lists it, its flows."""

    backend: int
    address: str
    switch_port: int
    active: bool
    healthy: bool
    draining: bool
    in_group: bool
    open_flows: int
    flows_dispatched: int

    @property
    def states(self) -> tuple[BackendState, ...]:
        """Every set that keeps new flows away, in precedence order; (SERVING,) if none."""
        off = ((BackendState.FAILED, not self.healthy), (BackendState.DRAINING, self.draining), (BackendState.INACTIVE, not self.active))
        return tuple(w for w, on in off if on) or (BackendState.SERVING,)

    @property
    def state(self) -> BackendState:
        """The one word: the first of `states`."""
        return self.states[0]

    def to_json(self) -> dict[str, object]:
        """Stable JSON fields: address without port, switch_port an int, state a word."""
        return {**asdict(self), "state": self.state.value}


def _mirror(view: SwitchView) -> P4lbState:
    """The model state of the controller-written part of the switch, as read back."""
    members = {(v, i): b for v in (0, 1) for i, b in enumerate(view.groups[v])}
    sizes = (len(view.groups[0]), len(view.groups[1]))
    return P4lbState(vip=view.vip or 0, rr_group=sizes, rr_member=members, rr_next=view.rr_next)


class Controller:
    """Owns the operator's sets and the switch's control-plane state; one operation at a time."""

    def __init__(self, settings: Settings, switch: Switch, grace_s: float | None = None, state_file: Path | None = None) -> None:
        self.settings = settings
        self.switch = switch
        self.state_file = state_file
        self.pool = load_pool(state_file, settings) if state_file else Pool.initial(settings.lb.n, settings.active)
        self.grace_s = settings.lb.drain_grace_ms / 1000 if grace_s is None else grace_s
        self.last_commit = 0.0

    def deploy(self) -> list[Write]:
        """Push the pipeline and backends, then commit the configured group (or reconcile if already running).

        Re-running it after adding backends at the end of the config (or removing the last ones) installs the new
        `backend` entries and commits the new group; a removed backend's entry stays, so its open flows finish.
        """
        self._preflight()
        with self._locked():
            pool = self.current_pool()
            try:
                view = self.switch.read()
            except SwitchError:
                view = None  # no pipeline yet
            if view is not None and view.vip is not None:
                self.switch.install_backends(self.settings.lb)  # upserts: identical entries change nothing
                writes = self._execute(_mirror(view), pool, "reconcile")
            else:
                self.switch.install_pipeline()
                self.switch.install_backends(self.settings.lb)
                writes = self._execute(P4lbState(), pool, "deploy")
            if self.state_file:
                save_pool(self.state_file, pool, self.settings)
        return writes

    def reconcile(self, view: SwitchView | None = None) -> list[Write]:
        """Make the committed group match the operator's sets, without touching open flows; idempotent."""
        view = view or self.switch.read()
        return self._execute(_mirror(view), self.pool, "reconcile")

    def apply(self, op: Op) -> Applied:
        """Carry out one operation: validate it, plan its writes, check the plan, write them in order."""
        op.apply(self._preflight())
        with self._locked():
            before = self.current_pool()
            after = op.apply(before)
            state = _mirror(self.switch.read(full=False))
            writes = self._execute(state, after, str(op))
            self.pool = after
            if self.state_file:
                save_pool(self.state_file, after, self.settings)
        return Applied(str(op), before, after, tuple(writes))

    def current_pool(self) -> Pool:
        """The operator's sets: re-read from the state file, which other `p4lb` commands may have changed."""
        if self.state_file:
            self.pool = load_pool(self.state_file, self.settings)
        return self.pool

    def _preflight(self) -> Pool:
        """The operator's sets, after checking the state file can be read and written: before the lock file exists."""
        pool = self.current_pool()
        if self.state_file:
            folder = self.state_file.parent
            if not folder.is_dir():
                raise StateFileError(f"the state file's folder {folder} does not exist: create it, or give --state a path in an existing folder")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise StateFileError(f"the state file's folder {folder} is not writable: fix its permissions, or give --state a writable path")
        return pool

    @contextlib.contextmanager
    def _locked(self):
        """One operation at a time across processes (the health loop and an operator's command)."""
        if not self.state_file:
            yield
            return
        with open(self.state_file.with_suffix(self.state_file.suffix + ".lock"), "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _execute(self, state: P4lbState, after: Pool, why: str) -> list[Write]:
        plan = p4lb_plan(P4LB, state, after)
        try:
            check_plan(state, plan, after)
        except PlanError as exc:
            raise ControllerError(f"{why}: refusing a plan the proof does not cover: {exc}") from exc
        wait = self.grace_s - (time.monotonic() - self.last_commit)
        if plan and wait > 0:
            time.sleep(wait)  # packets that read the old version before the last commit have left the pipeline
        for w in plan:
            self.switch.write(w)
        if plan:
            self.last_commit = time.monotonic()
            log.info("%s: %d writes, committed version %d, group %s", why, len(plan), plan[-1].value, after.members())
        return plan

    def drops(self) -> dict[str, int]:
        """The lb_drops counter by reason: refused SYNs (flow_table_full), no_eligible, unknown_flow, malformed,
        black holes (no_backend_entry)."""
        return self.switch.read().lb_drops

    def status(self) -> list[BackendStatus]:
        """One row per backend: its sets, whether it is in the committed group, new flows dispatched to it."""
        view = self.switch.read()
        group = view.groups[view.vip] if view.vip is not None else ()
        open_flows = Counter(e.backend for e in self.switch.open_flows().values())
        pool = self.pool
        return [
            BackendStatus(
                backend=b.id,
                address=ip_str(b.ip),
                switch_port=b.port,
                active=b.id in pool.active,
                healthy=b.id in pool.healthy,
                draining=b.id in pool.draining,
                in_group=b.id in group,
                open_flows=open_flows.get(b.id, 0),
                flows_dispatched=view.backend_flows.get(b.id, 0),
            )
            for b in self.settings.lb.backends
        ]


def save_pool(path: Path, pool: Pool, settings: Settings | None = None) -> None:
    """Write the operator's sets (and the backends' addresses) atomically, so a kill never leaves half a file."""
    data: dict = {"n": pool.n, "active": sorted(pool.active), "healthy": sorted(pool.healthy), "draining": sorted(pool.draining)}
    if settings is not None:
        data["backends"] = [ip_str(b.ip) for b in settings.lb.backends]
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(data) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise StateFileError(f"cannot write the state file {path} ({exc.strerror}): give --state a writable file path") from None


def load_pool(path: Path, settings: Settings) -> Pool:
    """The operator's sets saved by the last operation, or the configured start (all healthy, `active` active).

    Backends added at the end of the config since then join healthy (and active if within `active`); backends
    removed from the end leave every set. A backend id whose address changed is refused: pinned flows name ids.
    """
    n = settings.lb.n
    if not path.exists():
        return Pool.initial(n, settings.active)
    data = _read_state(path)
    try:
        old_n = int(data["n"])
        sets = {k: frozenset(int(b) for b in data[k]) for k in ("active", "healthy", "draining")}
        old_backends = [str(a) for a in data.get("backends", [])]
    except (ValueError, KeyError, TypeError) as exc:
        raise StateFileError(f"state file {path} is not a p4lb state file (bad field {exc}): delete it to start from the config") from None
    for i, (old, b) in enumerate(zip(old_backends, settings.lb.backends, strict=False), start=1):
        if old != ip_str(b.ip):
            raise StateFileError(f"backend {i} was {old} and is now {ip_str(b.ip)} in the config: keep ids stable (append new backends at the end), or delete {path}")
    keep = frozenset(range(1, n + 1))
    added = frozenset(range(old_n + 1, n + 1))
    active = (sets["active"] | frozenset(b for b in added if b <= settings.active)) & keep
    return Pool(n, active, (sets["healthy"] | added) & keep, sets["draining"] & keep)


def _read_state(path: Path) -> dict:
    """The state file's JSON object, or a StateFileError naming the file and the fix."""
    try:
        data = json.loads(path.read_text())
    except IsADirectoryError:
        raise StateFileError(f"state file {path} is a directory: give --state a file path, or move {path} away") from None
    except OSError as exc:
        raise StateFileError(f"state file {path} is unreadable ({exc.strerror}): fix its permissions, or give --state another path") from None
    except ValueError as exc:
        raise StateFileError(f"state file {path} is not valid JSON ({exc}): delete it to start from the config") from None
    if not isinstance(data, dict):
        raise StateFileError(f"state file {path} holds {type(data).__name__}, not a JSON object: delete it to start from the config")
    return data
