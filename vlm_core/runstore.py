"""The run store: every `vlm run` in an embedded SQLite database.

WAL journaling and a busy timeout make it safe for several processes writing at once (the
CLI, dashboard sessions, batch jobs); each write is one short ``BEGIN IMMEDIATE`` transaction.

A damaged store never stops a run. When SQLite reports that the file is not a database or is
malformed, ``PRAGMA quick_check`` fails when a process first opens the store, or the ``runs``
table lacks the columns vlm writes, the file (with its ``-wal`` and ``-shm`` siblings) is moved
aside to ``runs.sqlite.corrupt-<UTC time>``, a fresh store is created, and one warning says
where the old one went. The move happens under a lock file, so two processes that find the
same damage move it once.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock

from vlm_core.config import Settings, settings
from vlm_core.errors import UsageError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    status TEXT NOT NULL,            -- running, ok, failed, rejected
    params TEXT NOT NULL DEFAULT '{}',
    inputs TEXT NOT NULL DEFAULT '[]',
    outputs TEXT NOT NULL DEFAULT '[]',
    out_dir TEXT,
    provenance TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    duration_ms REAL
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE INDEX IF NOT EXISTS runs_task ON runs (task);
"""
#: The columns vlm reads and writes; a ``runs`` table without them is treated as damaged.
COLUMNS = frozenset(
    [
        "id",
        "task",
        "status",
        "params",
        "inputs",
        "outputs",
        "out_dir",
        "provenance",
        "error",
        "started_at",
        "finished_at",
        "duration_ms",
    ]
)

BUSY_TIMEOUT_S = 30.0
#: SQLite's primary result codes for a damaged file: SQLITE_CORRUPT and SQLITE_NOTADB.
_DAMAGE_CODES = frozenset({11, 26})
_DAMAGE_TEXT = ("file is not a database", "malformed", "corrupt")
#: Stores checked with ``PRAGMA quick_check`` by this process (once each, not on every open).
_checked: set[Path] = set()

T = TypeVar("T")


class StoreDamaged(Exception):
    """The store file is damaged (internal: caught and recovered from inside this module)."""


def is_damage(exc: sqlite3.DatabaseError) -> bool:
    """True when ``exc`` says the database file is damaged (not locked, missing or read-only)."""
    if isinstance(exc, sqlite3.OperationalError):
        return False  # locked, unable to open, disk I/O error, read-only: the file may be fine
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _DAMAGE_CODES:
        return True
    text = str(exc).lower()
    return any(t in text for t in _DAMAGE_TEXT)


@dataclass(frozen=True)
class RunRecord:
    id: str
    task: str
    status: str
    params: dict[str, Any]
    inputs: list[Any]
    outputs: list[str]
    out_dir: str | None
    provenance: dict[str, Any]
    error: str | None
    started_at: float
    finished_at: float | None
    duration_ms: float | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class RunStore:
    """Open (and create) the run store at ``path``, setting a damaged one aside."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()

    @classmethod
    def default(cls, s: Settings | None = None) -> RunStore:
        return cls((s or settings()).run_store)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise UsageError(f"cannot open the run store {self.path}: {exc}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            yield conn
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise StoreDamaged(str(exc)) from exc
            raise
        finally:
            conn.close()

    def _initialise(self, check: bool) -> None:
        """Switch to WAL, check the file when ``check``, create the schema and check it.

        Raises:
            StoreDamaged: the file is damaged or holds a ``runs`` table vlm cannot use.
        """
        with self._connect() as conn:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.debug("the run store %s uses journal mode %s, not WAL", self.path, mode)
            if check:
                problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
                if problems != ["ok"]:
                    raise StoreDamaged("; ".join(problems))
            try:
                conn.executescript(SCHEMA)
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", 1) & 0xFF != 1:  # not SQLITE_ERROR: busy, I/O
                    raise
                raise StoreDamaged(f"its schema cannot be created: {exc}") from exc
            found = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
            missing = COLUMNS - found
            if missing:
                raise StoreDamaged(f"its runs table lacks the columns {', '.join(sorted(missing))}")

    def _lock(self) -> FileLock:
        return FileLock(self.path.with_name(self.path.name + ".lock"))

    def _open(self) -> None:
        """Create or check the store under its lock.

        Switching a fresh file to WAL needs an exclusive lock that SQLite's busy handler
        does not wait for when another process is creating the same file, so two first
        opens at once are serialised here rather than left to ``busy_timeout``.
        """
        check = self.path not in _checked
        with self._lock():
            try:
                self._initialise(check)
            except StoreDamaged as exc:
                self._recover_locked(str(exc))
        _checked.add(self.path)

    def _recover(self, reason: str) -> None:
        """Set the damaged store aside (once, across processes) and create a fresh one."""
        with self._lock():
            try:  # another process may have set it aside while this one waited for the lock
                self._initialise(check=True)
                return
            except StoreDamaged as exc:
                reason = str(exc)
            self._recover_locked(reason)

    def _recover_locked(self, reason: str) -> None:
        aside = self._set_aside()
        try:
            self._initialise(check=False)
        except StoreDamaged as exc:
            raise UsageError(f"cannot create a run store at {self.path}: {exc}") from None
        log.warning(
            "the run store %s is damaged (%s); moved it to %s and started a new one",
            self.path,
            " ".join(reason.replace("*", " ").split())[:200],  # one line, whatever SQLite said
            aside,
        )

    def _set_aside(self) -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            for suffix in ("-wal", "-shm", ""):  # the database file last: it marks the store
                src = self.path.with_name(self.path.name + suffix)
                if src.exists():
                    os.replace(src, aside.with_name(aside.name + suffix))
        except OSError as exc:
            raise UsageError(
                f"the run store {self.path} is damaged and cannot be moved aside: "
                f"{exc.strerror or exc}; move or delete it by hand"
            ) from None
        return aside

    def _guarded(self, operation: Callable[[], T]) -> T:
        """Run ``operation``; when the store turns out damaged, recover and run it once more."""
        try:
            return operation()
        except StoreDamaged as exc:
            self._recover(str(exc))
            return operation()

    def _write(self, sql: str, args: Sequence[Any]) -> None:
        def write() -> None:
            with self._connect() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(sql, args)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise

        self._guarded(write)

    def _read(self, sql: str, args: Sequence[Any]) -> list[sqlite3.Row]:
        def read() -> list[sqlite3.Row]:
            with self._connect() as conn:
                conn.row_factory = sqlite3.Row
                return conn.execute(sql, args).fetchall()

        return self._guarded(read)

    def start(
        self,
        run_id: str,
        task: str,
        params: Mapping[str, Any],
        inputs: Sequence[Any],
        out_dir: str | None,
    ) -> None:
        self._write(
            "INSERT INTO runs (id, task, status, params, inputs, out_dir, started_at) "
            "VALUES (?, ?, 'running', ?, ?, ?, ?)",
            (
                run_id,
                task,
                json.dumps(dict(params)),
                json.dumps(list(inputs)),
                out_dir,
                time.time(),
            ),
        )

    def finish(
        self,
        run_id: str,
        status: str,
        *,
        outputs: Sequence[str] = (),
        provenance: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        now = time.time()
        self._write(
            "UPDATE runs SET status = ?, outputs = ?, provenance = ?, error = ?, finished_at = ?,"
            " duration_ms = (? - started_at) * 1000 WHERE id = ?",
            (
                status,
                json.dumps(list(outputs)),
                json.dumps(dict(provenance or {}), default=str),
                error,
                now,
                now,
                run_id,
            ),
        )

    def list(self, limit: int = 20, task: str | None = None) -> list[RunRecord]:
        sql, args = "SELECT * FROM runs", list[Any]()
        if task:
            sql += " WHERE task = ?"
            args.append(task)
        sql += " ORDER BY started_at DESC, rowid DESC LIMIT ?"
        args.append(limit)
        return [self._record(row) for row in self._read(sql, args)]

    def get(self, run_id: str) -> RunRecord:
        rows = self._read(
            "SELECT * FROM runs WHERE id = ? OR id LIKE ? ORDER BY started_at DESC LIMIT 2",
            (run_id, run_id + "%"),
        )
        if not rows:
            raise UsageError(f"no run with id '{run_id}' (see `vlm runs list`)")
        if len(rows) > 1 and rows[0]["id"] != run_id:
            raise UsageError(f"run id prefix '{run_id}' is ambiguous; give more characters")
        return self._record(rows[0])

    @staticmethod
    def _record(row: sqlite3.Row) -> RunRecord:
        return RunRecord(
            id=row["id"],
            task=row["task"],
            status=row["status"],
            params=json.loads(row["params"]),
            inputs=json.loads(row["inputs"]),
            outputs=json.loads(row["outputs"]),
            out_dir=row["out_dir"],
            provenance=json.loads(row["provenance"]),
            error=row["error"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            duration_ms=row["duration_ms"],
        )
