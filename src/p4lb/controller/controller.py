"""The controller: carries out operations as exactly the writes the model plans and the prover checks (P7)."""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from p4lb.controller.errors import ConfigFileError, ControllerError, GrpcCode, RefusedError, StateFileError, SwitchError
from p4lb.controller.lock import SwitchLock
from p4lb.controller.settings import DEFAULT_SERVICE, Settings, named
from p4lb.controller.switch import BATCHED, Switch, SwitchView
from p4lb.model.config import LbConfig
from p4lb.model.crc import ip_str
from p4lb.model.errors import ConfigError, PlanError
from p4lb.model.ops import Op, Target, Write
from p4lb.model.p4lb import P4LB, P4lbState, check_plan, p4lb_plan, p4lb_write
from p4lb.model.pool import Pool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Applied:
    """What one operation did."""

    op: str
    before: Pool
    after: Pool
    writes: tuple[Write, ...]
    group: tuple[int, ...] = ()  # the committed group afterwards


@dataclass(frozen=True)
class Retired:
    """What `retire` did: the drain's commit, the wait for open flows, the entries deleted."""

    drain: Applied
    waited_s: float
    open_left: int  # the service's open flows when its entries were deleted (their connections are cut)
    deleted: int  # table entries deleted


class Mark(enum.Enum):
    """Where `p4lb retire` left a service (the state file's "retirement"; deploy clears it)."""

    RETIRING = "retiring"  # drained (an empty group committed), its entries not yet deleted: `retire` resumes
    RETIRED = "retired"  # off the switch


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
    weight: int  # copies in the round-robin group while eligible
    open_flows: int  # flow places OPEN on it (backend_open: open, or idle and not yet reclaimed); with --scan, flows open now
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
    return P4lbState(version=view.version or 0, rr_group=sizes, rr_member=members, rr_next=view.rr_next)


class Controller:
    """Owns the operator's sets and the switch's control-plane state; one operation at a time per switch."""

    def __init__(self, settings: Settings, switch: Switch, grace_s: float | None = None, state_file: Path | None = None, lock: SwitchLock | None = None) -> None:
        self.settings = settings
        self.switch = switch
        self.state_file = state_file
        self.pool = load_pool(state_file, settings) if state_file else initial_pool(settings)
        self.mark: Mark | None = load_mark(state_file, settings) if state_file else None  # the state file's retirement mark, as last read
        self.grace_s = settings.lb.drain_grace_ms / 1000 if grace_s is None else grace_s
        self.lock = lock or (SwitchLock(settings.switch.key, settings.switch.lock_timeout_ms / 1000) if state_file else None)
        self.last_commit = 0.0  # Unix time of the last commit (also kept in the state file, for other processes)
        self.writer = ""  # who last started writing the switch, as the state file said at our last look (see _announce)
        self.seen_deployed = False  # this controller read its vip entry (VIP:port selecting its id) or committed its group

    def deploy(self, census: Census | None = None, shared_checked: bool = False) -> list[Write]:
        """Push the pipeline and backends, then commit the configured group (or reconcile if already running).

        Re-running it after adding backends at the end of the config (or removing the last ones) installs the new
        `backend` entries and commits the new group; a removed backend's entry stays, so its open flows finish.
        A service new on a switch that runs the pipeline is refused while the flow table holds entries of its id
        (`census`: the flow table's places by service, read at most once while the caller holds the lock).
        `shared_checked`: check_deploy checked the settings every service shares, under the lock the caller still
        holds, so the backends' install does not check them again.
        """
        self._preflight()
        with named(self.settings), self._locked():
            pool = self.current_pool()
            view = self._view(full=True)
            if view is not None and view.version is not None:
                self.seen_deployed = True
                self.switch.install_backends(self.settings.lb, check=not shared_checked)  # upserts: identical entries change nothing
                writes = self._execute(_mirror(view), pool, "reconcile")
            else:
                writes = self._fresh(pool, "deploy", push=view is None, census=census, shared_checked=shared_checked)
            self.mark = None  # deploy brings a retired service back: this save clears the mark
            self._save(pool)
        return writes

    def check_deploy(self, census: Census) -> bool:
        """What deploy() refuses before its first write, checked without writing: another service's vip entry on
        this VIP:port or this id, the settings every service shares, stale flows of a new service. True if it
        checked the shared settings (deploy(shared_checked=True) then skips them, under the same hold of the lock);
        False on a switch without a pipeline, where the push empties every table and deploy checks them itself."""
        with named(self.settings), self._locked():
            view = self._view(full=False)
            if view is None:
                return False  # no pipeline: the push empties the table
            self.switch.check_shared(self.settings.lb)
            if view.version is None:
                self._check_stale(census)
            return True

    def reconcile(self, view: SwitchView | None = None) -> list[Write]:
        """Make the committed group match the operator's sets, without touching open flows; idempotent."""
        view = view or self.switch.read()
        return self._execute(_mirror(view), self.pool, "reconcile")

    def apply(self, op: Op) -> Applied:
        """Carry out one operation: validate it, plan its writes, check the plan, write them in order."""
        op.apply(self._preflight())
        if self.mark is not None:
            raise RefusedError(f"service {self.settings.name} is {self.mark.value} (p4lb retire): `p4lb deploy --service {self.settings.name}` brings it back first")
        return self.converge(op.apply, str(op))

    def retire(self, wait_s: float, others: Sequence[LbConfig] = (), poll_s: float = 1.0) -> Retired:
        """Take the service off the switch. The state file is marked RETIRING first (the operator's sets kept), then
        an empty group is committed (every backend draining: new connections are refused and counted no_eligible,
        open ones stay on their backend); the switch is left to other controllers while up to `wait_s` passes for
        the service's open flows (backend_open) to end; then its entries go, the vip entry first
        (Switch.remove_service; `others`: the config's other services, whose return path stays), and the mark
        becomes RETIRED. An interrupted retire resumes where it stopped. While marked, operations are refused and
        the health loop writes nothing for the service; `deploy` brings it back with its sets."""
        pool = self._preflight()
        name = self.settings.name
        with named(self.settings):
            if self.mark is Mark.RETIRED:
                raise RefusedError(f"service {name} is already retired: `p4lb deploy --service {name}` brings it back")
            with self._locked():
                view = self._view(full=False)
                if view is None and self.mark is Mark.RETIRING:  # the switch restarted meanwhile: nothing of it is left
                    self.mark = Mark.RETIRED
                    self._save(pool)
                    return Retired(Applied("retire: the switch runs no pipeline", pool, pool, ()), 0.0, 0, 0)
                if view is None:
                    raise RefusedError(f"service {name}: the switch runs no p4lb pipeline, so there is nothing to retire")
                if view.version is None and self.mark is None:
                    raise RefusedError(f"service {name}: no vip entry on the switch selects it, so there is nothing to retire (`p4lb deploy` deploys it)")
                self.mark = Mark.RETIRING
                self._save(pool)  # before any write: an interrupted retire resumes, the sets kept
                start = _mirror(view) if view.version is not None else P4lbState()
                drained = replace(pool, draining=frozenset(range(1, pool.n + 1)))
                writes = self._execute(start, drained, "retire: drain every backend") if view.version is not None else []
            waited, left = self._wait_for_flows(wait_s, poll_s)
            with self._locked():
                deleted = self.switch.remove_service(self.settings.lb, others)
                self.seen_deployed = False
                self.mark = Mark.RETIRED
                self._save(pool)
        log.info("service %s retired: %d entries deleted, %d open flows cut", name, deleted, left)
        return Retired(Applied("retire: drain every backend", pool, drained, tuple(writes), committed(start, writes)), waited, left, deleted)

    def _wait_for_flows(self, wait_s: float, poll_s: float) -> tuple[float, int]:
        """Up to wait_s for the service's OPEN flow places (the data plane's backend_open counts, idle ones included
        until reclaimed) to go to 0, the switch's session closed between reads so that other controllers (the health
        loop) stay primary; (seconds waited, places still OPEN)."""
        start = time.monotonic()
        while True:
            left = sum(self.switch.read(full=True).backend_open.values())
            self.switch.close()
            elapsed = time.monotonic() - start
            if not left or elapsed >= wait_s:
                return elapsed, left
            time.sleep(min(poll_s, wait_s - elapsed))

    def retired(self) -> bool:
        """The state file marks the service retired or retiring (p4lb retire; deploy clears the mark)."""
        self.current_pool()
        return self.mark is not None

    def converge(self, update: Callable[[Pool], Pool], why: str, thorough: bool = True) -> Applied:
        """Under the lock: the operator's sets (re-read) changed by `update`, and the switch made to match them.

        One plan and one commit, however many backends changed; the plan starts from what the switch holds (read
        back), so a partial plan left by a killed controller is repaired, and a switch that lost its pipeline (a
        restart) is deployed again. Without `thorough` the switch is read quickly (read_quick: its vip and rr_group
        entries, the rest as this session wrote or last read it) unless another process started writing the switch
        or committed since our last look (the state file's writer or last commit moved): the plan only writes the
        staged entries that differ, so what this session knows of them must be what the switch holds.
        """
        with named(self.settings), self._locked():
            seen = self._marks()
            before = self.current_pool()
            after = update(before)
            view = self._view(full=False, quick=not thorough and self._marks() == seen)
            if self.mark is not None:
                log.info("%s: service %s is %s (p4lb retire): nothing written", why, self.settings.name, self.mark.value)
                return Applied(why, before, before, ())
            start = _mirror(view) if view is not None and view.version is not None else P4lbState()
            if view is None or view.version is None:
                log.warning("%s: the switch has no p4lb pipeline or no committed group (restarted, or its vip entry deleted?): deploying again", why)
                writes = self._fresh(after, f"redeploy ({why})", push=view is None)
            else:
                self.seen_deployed = True
                writes = self._execute(start, after, why)
            self.pool = after
            if writes or after != before:
                self._save(after)
        return Applied(why, before, after, tuple(writes), committed(start, writes))

    def current_pool(self) -> Pool:
        """The operator's sets: re-read from the state file, which other `p4lb` commands may have changed."""
        if self.state_file:
            self.pool = load_pool(self.state_file, self.settings)
            self.mark = load_mark(self.state_file, self.settings)
            last_commit, self.writer = load_marks(self.state_file, self.settings)
            self.last_commit = max(self.last_commit, last_commit)
        return self.pool

    def _marks(self) -> tuple[float, str]:
        """What the state file said, at our last look, of the last commit and of who last started writing."""
        return self.last_commit, self.writer

    def _view(self, full: bool, quick: bool = False) -> SwitchView | None:
        """What the switch holds, or None if it runs no pipeline (FAILED_PRECONDITION); other errors propagate."""
        try:
            return self.switch.read_quick(full=full) if quick else self.switch.read(full=full)
        except SwitchError as exc:
            if exc.code is GrpcCode.FAILED_PRECONDITION:
                log.info("no pipeline on the switch: %s", exc)
                return None
            raise

    def _fresh(self, pool: Pool, why: str, push: bool = True, census: Census | None = None, shared_checked: bool = False) -> list[Write]:
        """A switch without our service's state: push the pipeline if it runs none (`push`: a pipeline that runs
        keeps every other service's entries and flows), install the backends (their shared settings checked first
        unless `shared_checked`), commit the group from scratch. On a pipeline that runs, a flow table holding
        entries of our id is refused first (see _check_stale)."""
        census = census or Census()
        if push:
            self.switch.install_pipeline()
            census.cleared()
        else:
            self._check_stale(census)
        self.switch.install_backends(self.settings.lb, check=not shared_checked)
        writes = self._execute(P4lbState(), pool, why)
        if not writes:  # an empty group: the model's start already holds it, but the switch has no vip entry yet
            writes = [Write(Target.VIP, (), P4lbState().version)]
            self._write(writes)
        self.seen_deployed = True
        return writes

    def _check_stale(self, census: Census) -> None:
        """The proofs start from a flow table without entries of the service: a service with no vip entry on a
        switch that runs the pipeline (new there) is refused while places hold flows keyed by its id (left by an
        earlier service of that id), before any write. A service this controller already manages (`manages`) is
        not new: its vip entry vanished (deleted by hand, say), and the flows keyed by its id are its own open
        connections, which restoring its vip entry serves again; no census is taken for it."""
        svc = self.settings.lb.service
        if self.mark is not None:
            log.info("service %s (id %d): bringing the %s service back, its flows kept", self.settings.name, svc, self.mark.value)
            return
        if self.manages():
            log.warning("service %s (id %d): no vip entry on the switch, but this controller manages the service: restoring it, its flows kept", self.settings.name, svc)
            return
        held = census.of(self.switch).get(svc, 0)
        if held:
            raise ConfigFileError("vip.service", svc, f"the switch's flow table still holds {held} flow place(s) keyed by service id {svc} (left by an earlier service of this id), and a new service must start without any: give this service an id no flow entry uses, or deploy the pipeline again (it clears every service)")

    def manages(self) -> bool:
        """This controller already manages its service on the switch, under its name and id: it saw the service's
        vip entry or committed its group in this process (the running loop), or the state file records the service
        under its name with this id (a process of this config deployed or changed it)."""
        if self.seen_deployed:
            return True
        return self.state_file is not None and load_service_id(self.state_file, self.settings) == self.settings.lb.service

    def _save(self, pool: Pool) -> None:
        if self.state_file:
            save_pool(self.state_file, pool, self.settings, self.last_commit, self.writer, mark=self.mark)

    def _announce(self) -> None:
        """Before a plan's first write: name this process as the switch's last writer in the state file (the sets
        unchanged), so that a process which reads the switch quickly (the health loop) reads it all back next time,
        even if this one is killed before it commits. Not fsynced: it only has to reach other live processes."""
        if self.state_file:
            self.writer = f"pid {os.getpid()} at {time.time_ns()}"
            save_pool(self.state_file, self.pool, self.settings, self.last_commit, self.writer, durable=False, mark=self.mark)

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
    def _locked(self) -> Iterator[None]:
        """One operation at a time per switch, across processes (the health loop and an operator's command)."""
        if self.lock is None:
            yield
            return
        with self.lock.hold():
            yield

    def _execute(self, state: P4lbState, after: Pool, why: str) -> list[Write]:
        """Plan, check and write; wait out the grace period since the last commit (of any process) first. Messages
        name the service when the config has several."""
        why = f"service {self.settings.name}: {why}" if self.settings.where else why
        plan = p4lb_plan(P4LB, state, after)
        try:
            check_plan(state, plan, after)
        except PlanError as exc:
            raise ControllerError(f"{why}: refusing a plan the proof does not cover: {exc}") from exc
        if not plan:
            return plan
        wait = min(self.grace_s, self.grace_s - (time.time() - self.last_commit))
        if wait > 0:
            time.sleep(wait)  # packets that read the old version before the last commit have left the pipeline
        self._announce()
        done = 0
        for batch in batches(plan):
            try:
                self._write(batch)
            except SwitchError as exc:
                raise _partial(why, done, plan, exc) from exc
            done += len(batch)
        self.last_commit = time.time()
        log.info("%s: %d writes, committed version %d, group %s", why, len(plan), plan[-1].value, committed(state, plan))
        return plan

    def _write(self, batch: list[Write]) -> None:
        """One write, or a batch of staged table writes in one request where the switch can."""
        write_batch = getattr(self.switch, "write_batch", None)
        if len(batch) > 1 and write_batch is not None:
            write_batch(batch)
        else:
            for w in batch:
                self.switch.write(w)

    def drops(self, quick: bool = False) -> dict[str, int]:
        """The lb_drops counter by reason: refused SYNs (flow_table_full), no_eligible, unknown_flow, malformed,
        black holes (no_backend_entry). `quick`: the tables read as in read_quick."""
        return self._read(quick).lb_drops

    def _read(self, quick: bool) -> SwitchView:
        """Everything read back (quick: the controller's tables as read_quick gives them)."""
        return self.switch.read_quick(full=True) if quick else self.switch.read()

    def status(self, scan: bool = False, quick: bool = False) -> list[BackendStatus]:
        """One row per backend: its sets, whether it is in the committed group, new flows dispatched to it, and its
        open flows: the data plane's backend_open count (flow places OPEN on it: open flows and idle ones no SYN has
        reclaimed yet; read with the counters, one CPU-port request), or with `scan` the flows open at the switch
        clock, from a read of every flow place (2^20 places: 16,384 CPU-port requests). `quick`: the tables read as in
        read_quick."""
        return self.report(scan, quick)[0]

    def report(self, scan: bool = False, quick: bool = False, scanned: Counter[int] | None = None) -> tuple[list[BackendStatus], dict[str, int]]:
        """status() and drops() from one read of the switch (`scanned`: with `scan`, the service's open flows by
        backend from a scan the caller made for several services at once)."""
        view = self._read(quick)
        group = view.groups[view.version] if view.version is not None else ()
        if scan and scanned is None:
            scanned = Counter(e.backend for _, e in self.switch.iter_open_flows())
        open_flows = scanned if scan and scanned is not None else Counter(view.backend_open)
        pool = self.pool
        rows = [
            BackendStatus(
                backend=b.id,
                address=ip_str(b.ip),
                switch_port=b.port,
                active=b.id in pool.active,
                healthy=b.id in pool.healthy,
                draining=b.id in pool.draining,
                in_group=b.id in group,
                weight=pool.weight(b.id),
                open_flows=open_flows.get(b.id, 0),
                flows_dispatched=view.backend_flows.get(b.id, 0),
            )
            for b in self.settings.lb.backends
        ]
        return rows, view.lb_drops


@dataclass
class Census:
    """The switch's held flow places by service id (Switch.flow_census), read at most once: while one holds the
    switch's lock no other controller deploys, so a service without a vip entry gains no flows (only its vip entry
    leads packets to its id), and its count stays an upper bound for a whole command."""

    counts: dict[int, int] | None = None

    def of(self, switch: Switch) -> dict[int, int]:
        """The census, read the first time."""
        if self.counts is None:
            started = time.monotonic()
            self.counts = switch.flow_census()
            log.info("flow census: %s in %.1f s", self.counts or "every place free", time.monotonic() - started)
        return self.counts

    def cleared(self) -> None:
        """The pipeline was pushed: every place is free."""
        self.counts = {}


def committed(st: P4lbState, plan: list[Write]) -> tuple[int, ...]:
    """The committed group once `plan` is written over `st`."""
    for w in plan:
        st = p4lb_write(st, w)
    return st.members(st.version)


def batches(plan: list[Write]) -> list[list[Write]]:
    """The plan in order, runs of staged table writes (BATCHED) grouped; the commit (the last write) always alone."""
    out: list[list[Write]] = []
    for i, w in enumerate(plan):
        if out and w.target in BATCHED and out[-1][-1].target in BATCHED and i < len(plan) - 1:
            out[-1].append(w)
        else:
            out.append([w])
    return out


def _partial(why: str, k: int, plan: list[Write], exc: SwitchError) -> SwitchError:
    """A plan that stopped at write k: what the switch may hold now, and what repairs it (same status code)."""
    held = "the committed version is unchanged" if k < len(plan) - 1 else "the commit itself failed: the switch may or may not have switched version"
    return SwitchError(f"{why}: write {k + 1} of {len(plan)} failed ({held}; the next command or health round reconciles it): {exc}", exc.code)


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace `path` with `data`: a new file (mode 0600, never through a symbolic link), fsynced, renamed over it.

    A kill or a full disk leaves the old file as it was. Without `durable` nothing is fsynced: still atomic for
    other processes and across a kill, not across a power cut."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        if path.is_symlink():
            raise OSError(errno.ELOOP, "it is a symbolic link")
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_pool(path: Path, pool: Pool, settings: Settings | None = None, last_commit: float = 0.0, writer: str = "", durable: bool = True, mark: Mark | None = None) -> None:
    """Write the operator's sets, the backends' addresses, the last commit's time and the switch's last writer
    atomically (see atomic_write). A service of a [[service]] config keeps its sets under its name, beside the
    other services' (read back from the file); the single form writes them at the top level, as it always has."""
    sets: dict[str, object] = {"n": pool.n, "active": sorted(pool.active), "healthy": sorted(pool.healthy), "draining": sorted(pool.draining), "weights": list(pool.weights)}
    if settings is not None:
        sets["backends"] = [ip_str(b.ip) for b in settings.lb.backends]
        sets["id"] = settings.lb.service  # the service id the sets are of (see Controller.manages)
    if mark is not None:
        sets["retirement"] = mark.value  # where p4lb retire left the service; deploy's save clears it
    marks = {"last_commit": last_commit, "writer": writer}
    if settings is None or not settings.where:
        data: dict[str, object] = sets | marks
    else:
        old = _read_state(path) if path.exists() else {}
        services = dict(old["services"]) if isinstance(old.get("services"), dict) else {}
        services[settings.name] = sets | {"last_commit": last_commit}  # the grace keeps apart one service's commits
        data = {"services": services} | marks | {"last_commit": max(last_commit, _time(old.get("last_commit")))}
    try:
        atomic_write(path, (json.dumps(data) + "\n").encode(), durable)
    except OSError as exc:
        raise StateFileError(f"cannot write the state file {path} ({exc.strerror}; the previous one is intact): free space or give --state a writable file path") from None


def load_last_commit(path: Path) -> float:
    """Unix time of the last commit any process recorded in the state file (0 if none)."""
    return load_marks(path)[0]


def load_marks(path: Path, settings: Settings | None = None) -> tuple[float, str]:
    """(Unix time of the last commit, the process that last started writing the switch) as the state file records
    them; (0, "") if there is none. With `settings` of a [[service]] config: the last commit of that service (a
    packet of one service reads only its own version, so the grace period keeps apart only its own commits)."""
    if not path.exists():
        return 0.0, ""
    data = _read_state(path)
    writer = data.get("writer", "")
    mine = data.get("services", {}).get(settings.name) if settings is not None and settings.where and isinstance(data.get("services"), dict) else None
    commit = _time((mine if isinstance(mine, dict) else data).get("last_commit", 0.0))
    return commit, writer if isinstance(writer, str) else ""


def _time(value: object) -> float:
    """A time read from the state file (anything else: 0)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def load_service_id(path: Path, settings: Settings) -> int | None:
    """The service id the state file records for the service's sets (under its name; the whole file in the single
    form); None if it has none (no file, no sets of this service, or a file written before ids were recorded)."""
    data = _service_sets(path, settings) if path.exists() else None
    sid = data.get("id") if data is not None else None
    return sid if isinstance(sid, int) and not isinstance(sid, bool) else None


def load_mark(path: Path, settings: Settings) -> Mark | None:
    """Where p4lb retire left the service, as the state file records it (None: not retired)."""
    data = _service_sets(path, settings) if path.exists() else None
    value = data.get("retirement") if data is not None else None
    if value is None:
        return None
    try:
        return Mark(value)
    except ValueError:
        raise StateFileError(f"state file {path} has a bad retirement {value!r} for service {settings.name} (retiring or retired): delete the field to treat the service as deployed") from None


def load_pool(path: Path, settings: Settings) -> Pool:
    """The operator's sets saved by the last operation, or the configured start (all healthy, `active` active).

    Backends added at the end of the config since then join healthy (and active if within `active`); backends
    removed from the end leave every set. A backend id whose address changed is refused: pinned flows name ids.
    """
    n = settings.lb.n
    data = _service_sets(path, settings) if path.exists() else None
    if data is None:
        return initial_pool(settings)
    try:
        old_n = int(data["n"])
        sets = {k: frozenset(int(b) for b in data[k]) for k in ("active", "healthy", "draining")}
        old_backends = [str(a) for a in data.get("backends", [])]
        saved = [int(w) for w in data.get("weights", [])]
    except (ValueError, KeyError, TypeError) as exc:
        raise StateFileError(f"state file {path} is not a p4lb state file (bad field {exc}): delete it to start from the config") from None
    for i, (old, b) in enumerate(zip(old_backends, settings.lb.backends, strict=False), start=1):
        if old != ip_str(b.ip):
            raise StateFileError(f"backend {i} was {old} and is now {ip_str(b.ip)} in the config: keep ids stable (append new backends at the end), or delete {path}")
    keep = frozenset(range(1, n + 1))
    added = frozenset(range(old_n + 1, n + 1))
    active = (sets["active"] | frozenset(b for b in added if b <= settings.active)) & keep
    configured = initial_pool(settings).weights
    weights = tuple(saved[b - 1] if b <= min(old_n, len(saved)) else configured[b - 1] for b in range(1, n + 1))
    try:
        return Pool(n, active, (sets["healthy"] | added) & keep, sets["draining"] & keep, weights)
    except ConfigError as exc:
        raise StateFileError(f"state file {path} has a bad weight ({exc}): delete it to start from the config") from None


def _service_sets(path: Path, settings: Settings) -> dict[str, Any] | None:
    """The service's sets in the state file: under its name (a [[service]] config's file), or the whole file (one
    written for the single form, read for the single form or for a [[service]] named "default"); None if it has none."""
    data = _read_state(path)
    services = data.get("services")
    if services is None:
        return data if not settings.where or settings.name == DEFAULT_SERVICE else None
    if not isinstance(services, dict):
        raise StateFileError(f"state file {path} has a bad services field: delete it to start from the config")
    sets = services.get(settings.name)
    if sets is not None and not isinstance(sets, dict):
        raise StateFileError(f"state file {path} has bad sets for service {settings.name}: delete it to start from the config")
    return sets


def initial_pool(settings: Settings) -> Pool:
    """The configured start: all healthy, backends 1..active active, none draining, the configured weights."""
    return Pool.initial(settings.lb.n, settings.active, settings.weights)


def _read_state(path: Path) -> dict[str, Any]:
    """The state file's JSON object, or a StateFileError naming the file and the fix."""
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as f:
            data = json.loads(f.read())
    except IsADirectoryError:
        raise StateFileError(f"state file {path} is a directory: give --state a file path, or move {path} away") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateFileError(f"state file {path} is a symbolic link: give --state the real file") from None
        raise StateFileError(f"state file {path} is unreadable ({exc.strerror}): fix its permissions, or give --state another path") from None
    except ValueError as exc:
        raise StateFileError(f"state file {path} is not valid JSON ({exc}): delete it to start from the config") from None
    if not isinstance(data, dict):
        raise StateFileError(f"state file {path} holds {type(data).__name__}, not a JSON object: delete it to start from the config")
    return data
