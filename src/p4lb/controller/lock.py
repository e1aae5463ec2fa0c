"""One controller per switch: a lock file per switch (address and device id) in a fixed runtime folder.

The folder is $XDG_RUNTIME_DIR/p4lb, or /tmp/p4lb-UID; it is created mode 0700 and must belong to us. The holder
writes its pid and command line into the lock file, so a command that waits in vain names who holds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shlex
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from p4lb.controller.errors import LockError

log = logging.getLogger(__name__)

POLL_S = 0.01


def runtime_dir() -> Path:
    """$XDG_RUNTIME_DIR/p4lb or /tmp/p4lb-UID, created 0700; LockError if it is not a folder of ours."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base) / "p4lb" if base else Path(tempfile.gettempdir()) / f"p4lb-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, parents=bool(base), exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise LockError(f"cannot create the lock folder {path} ({exc.strerror}): set XDG_RUNTIME_DIR to a writable folder") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise LockError(f"the lock folder {path} is not a folder owned by you: remove it, or set XDG_RUNTIME_DIR")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def lock_name(key: str) -> str:
    """A file name for a switch key: readable, and unique by a hash of the key."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:60]
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class SwitchLock:
    """The lock of one switch (`key`: address and device id, or a dry run's state file)."""

    key: str
    timeout_s: float = 10.0
    folder: Path | None = None  # default: runtime_dir()
    held: threading.local = field(default_factory=threading.local, compare=False, repr=False)  # per thread, the lock files this lock object holds: holding one again re-enters

    def path(self, role: str = "op") -> Path:
        """The lock file of one role: 'op' (one operation at a time) or 'run' (one health loop per switch)."""
        return (self.folder or runtime_dir()) / f"{lock_name(self.key)}.{role}.lock"

    @contextlib.contextmanager
    def hold(self, role: str = "op", timeout_s: float | None = None) -> Iterator[Path]:
        """Hold the lock (waiting up to timeout_s); LockError naming the holder if it stays taken. A thread holding it
        through this lock object already holds it on (an operation of one service inside a command that holds it
        for all); another lock object of the same switch waits, as another controller's would."""
        path = self.path(role)
        held: set[Path] = self.held.__dict__.setdefault("paths", set())
        if path in held:
            yield path
            return
        wait = self.timeout_s if timeout_s is None else timeout_s
        fd = _open(path)
        try:
            _acquire(fd, path, wait, self.key, role)
            _write_holder(fd)
            held.add(path)
            try:
                yield path
            finally:
                held.discard(path)
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _open(path: Path) -> int:
    """The lock file, opened without following a symbolic link, mode 0600."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise LockError(f"cannot open the lock file {path} ({why}): remove it") from None


def _acquire(fd: int, path: Path, wait: float, key: str, role: str) -> None:
    """flock, polling until `wait` seconds have passed."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                what = "a health loop (p4lb run)" if role == "run" else "an operation"
                raise LockError(f"another controller is running {what} on switch {key}: {holder(path)}; waited {wait:g} s (lock file {path})") from None
            time.sleep(POLL_S)


def _write_holder(fd: int) -> None:
    """Our pid and command line, for whoever waits."""
    data = json.dumps({"pid": os.getpid(), "command": shlex.join(sys.argv)[:300], "since": time.time()}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def holder(path: Path) -> str:
    """Who holds a lock, as written in its file: 'pid N (command)'."""
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as f:
            info = json.loads(f.read() or b"{}")
        return f"pid {int(info['pid'])} ({info.get('command', '?')})"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
