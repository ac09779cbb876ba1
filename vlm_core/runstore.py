"""The run store: every `vlm run` in an embedded SQLite database.

WAL journaling and a busy timeout make it safe for several processes writing at once (the
CLI, dashboard sessions, batch jobs); each write is one short ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_core.config import Settings, settings
from vlm_core.errors import UsageError

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

BUSY_TIMEOUT_S = 30.0


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
    """Open (and create) the run store at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)

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
        finally:
            conn.close()

    def _write(self, sql: str, args: Sequence[Any]) -> None:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(sql, args)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

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
        with self._connect() as conn:
            conn.row_factory = sqlite3.Row
            return [self._record(row) for row in conn.execute(sql, args)]

    def get(self, run_id: str) -> RunRecord:
        with self._connect() as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(
                "SELECT * FROM runs WHERE id = ? OR id LIKE ? ORDER BY started_at DESC LIMIT 2",
                (run_id, run_id + "%"),
            ).fetchall()
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
