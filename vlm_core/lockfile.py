"""An exclusive lock file that says who holds it, and is taken over when its holder is gone.

The file is created with ``O_CREAT | O_EXCL`` and holds its owner as one JSON object (run id,
pid, host, start time). While the owner lives it also holds an operating-system lock on the
file (``flock`` on POSIX, ``msvcrt.locking`` on Windows), which the system drops when the
process ends however it ends: a second process that can take the OS lock knows the file is
stale and takes it over. On a file system without OS locks the owner's pid decides: a lock
whose process no longer runs on this host is stale (one on another host never is).

Locks are not inherited: a child made by ``fork`` (e.g. a DataLoader worker) closes its copy,
so a child outliving its parent cannot keep a dead run's lock alive.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_WINDOWS_BYTE = 1 << 30  # the byte msvcrt locks: far past the owner record, which stays readable
_NO_OS_LOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_held: set[int] = set()  # descriptors of the locks this process holds (closed in fork children)


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: a run id, its process, the host and when it started (ISO, UTC)."""

    run_id: str
    pid: int
    host: str
    started: str

    @classmethod
    def this_process(cls, run_id: str) -> Holder:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return cls(run_id, os.getpid(), socket.gethostname(), now)

    def alive(self) -> bool:
        """Whether the holder may still run: its pid runs on this host and started before the
        lock did (a recycled pid started later); always true for another host."""
        if self.host != socket.gethostname():
            return True
        import psutil

        try:
            created = psutil.Process(self.pid).create_time()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, ValueError):
            return False
        except psutil.Error:
            return True  # exists, but cannot be inspected
        try:
            started = datetime.fromisoformat(self.started).timestamp()
        except ValueError:
            return True
        return created <= started + 2.0  # the record's time is rounded to the second


class LockHeld(Exception):
    """The lock belongs to a live holder (``None``: one that has not written its record yet)."""

    def __init__(self, path: Path, holder: Holder | None) -> None:
        super().__init__(f"{path} is held by {holder or 'another process'}")
        self.path = path
        self.holder = holder


def _os_lock(fd: int) -> bool | None:
    """Take the OS lock without waiting: True, False (held elsewhere) or None (unsupported)."""
    try:
        if sys.platform == "win32":
            import msvcrt

            os.lseek(fd, _WINDOWS_BYTE, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _NO_OS_LOCK:
            return None
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, errno.EDEADLK):
            return False
        raise
    return True


def _read(fd: int) -> Holder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        data = json.loads(os.read(fd, 1 << 16).decode("utf-8"))
        return Holder(str(data["run_id"]), int(data["pid"]), str(data["host"]), data["started"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (its holder may have removed it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _close_held_in_child() -> None:
    for fd in list(_held):
        with contextlib.suppress(OSError):
            os.close(fd)  # the parent's descriptor keeps the lock
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_child)


class LockFile:
    """A held lock file; :meth:`release` (or leaving the ``with`` block) removes it.

    ``previous`` is the holder whose stale lock was taken over (None: the lock was free), so
    the caller can clean up after a run that died.
    """

    def __init__(self, path: Path, fd: int, holder: Holder, previous: Holder | None) -> None:
        self.path = path
        self.holder = holder
        self.previous = previous
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, holder: Holder, attempts: int = 100) -> LockFile:
        """Take the lock at ``path`` for ``holder`` without waiting for a live holder.

        Raises:
            LockHeld: a live process holds it (or is writing its record after ``attempts``
                short retries).
        """
        previous: Holder | None = None
        for _ in range(attempts):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o644)
                created = True
            except FileExistsError:
                try:
                    fd = os.open(path, os.O_RDWR | _CLOEXEC)
                except FileNotFoundError:
                    continue  # released between the two calls
                created = False
            try:
                taken = cls._take(path, fd, holder, created, previous)
            except BaseException:
                os.close(fd)
                raise
            if isinstance(taken, LockFile):
                return taken
            os.close(fd)
            if isinstance(taken, Holder):
                previous = taken  # its stale record is gone: create a fresh one
            else:
                time.sleep(0.01)
        raise LockHeld(path, None)

    @classmethod
    def _take(
        cls, path: Path, fd: int, holder: Holder, created: bool, previous: Holder | None
    ) -> LockFile | Holder | None:
        """The lock; the stale holder whose record was removed, to try again; None to try
        again later; or :class:`LockHeld` raised."""
        locked = _os_lock(fd)
        if locked is False:
            current = _read(fd)
            if current is None:
                return None  # its holder is writing the record
            raise LockHeld(path, current)
        if not _same_file(fd, path):
            return None  # removed by its holder meanwhile: take the new one
        if not created:
            stale = _read(fd)
            if locked is None:  # no OS lock on this file system: the record decides
                if stale is None and time.time() - os.fstat(fd).st_mtime < 10:
                    return None  # its holder is writing the record (older: never finished)
                if stale is not None and stale.alive():
                    raise LockHeld(path, stale)
                os.unlink(path)  # only a fresh O_EXCL create may win it now
                return stale
            log.info("taking over %s from %s: that process is gone", path, stale)
            previous = stale or previous
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(asdict(holder)).encode("utf-8"))
        _held.add(fd)
        return cls(path, fd, holder, previous)

    def release(self) -> None:
        """Remove the file and drop the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _held.discard(fd)
        if sys.platform == "win32":
            os.close(fd)  # Windows cannot remove an open file; the next holder takes it over
            return
        try:
            if _same_file(fd, self.path):
                os.unlink(self.path)  # while still locked, so no one takes the old file
        finally:
            os.close(fd)

    def __enter__(self) -> LockFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
