"""A run's output folder: names safe to create, the claim a run holds on its folder, publishing.

A run given ``--out DIR`` first *claims* it (:func:`claim_output`):

- it takes the lock file ``.DIR.vlm-lock`` beside the folder for the whole run
  (:mod:`vlm_core.lockfile`); a second run into the same folder is refused (exit 2) with the
  first one's run id, pid and start time, until the first ends; a lock left by a process that
  is gone is taken over, and what that run left is cleaned up (its staging folder; a run it
  was replacing is put back if the kill came mid-swap);
- when DIR holds a finished run (its ``run.json``), the new run writes *beside* it, into the
  first free ``DIR-2``, ``DIR-3``, … (locked too), unless ``overwrite`` is set: then DIR's
  contents are replaced by the new run's outputs as a whole, so no file of the old run stays;
- an empty folder, or one that holds no vlm run, is written into (files of the same name are
  replaced, others left alone).

The run exports into a staging folder beside the target and :func:`publish` moves it into
place only when every file is written. Control characters in the names of folders the run
creates are replaced by ``_`` (:func:`safe_path`, :func:`safe_name`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

from vlm_core.errors import OutputInUseError, UsageError, disk_full
from vlm_core.lockfile import Holder, LockFile, LockHeld

#: what a name must not carry to the file system or a terminal: C0/C1 controls and DEL, line
#: and paragraph separators, and the bidirectional overrides that reorder displayed text
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
RUN_RECORD = "run.json"  # written last by the exporter: a folder with it holds a finished run
MAX_BESIDE = 1000


def clean_text(text: str) -> str:
    """``text`` with every control character replaced by ``_``."""
    return _CONTROL.sub("_", text)


def printable(text: str) -> str:
    """``text`` with every control character shown as its escape (``\\x1b``, ``\\n``), for a
    terminal or a one-line message."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def safe_name(name: str, fallback: str = "result") -> str:
    """One path component made from ``name`` (an input's stem, an output's name): control
    characters and path separators become ``_``, and ``.``/``..`` (which would point at the
    folder or its parent) become underscores; ``fallback`` for an empty name."""
    cleaned = clean_text(name).replace("/", "_").replace("\\", "_")
    if cleaned and not cleaned.strip("."):
        return "_" * len(cleaned)
    return cleaned or fallback


def safe_path(path: Path) -> Path:
    """``path`` with control characters replaced in each component that does not exist yet
    (the ones a run would create; existing ones are kept so the path still leads there)."""
    current = Path(path.anchor)
    for part in path.parts[1 if path.anchor else 0 :]:
        candidate = current / part
        current = candidate if os.path.lexists(candidate) else current / clean_text(part)
    return current


def holds_finished_run(folder: Path) -> bool:
    """Whether ``folder`` holds the outputs of a finished vlm run (its ``run.json``)."""
    try:
        data = json.loads((folder / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "task" in data and "items" in data


def lock_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.vlm-lock"


def staging_dir(folder: Path, run_id: str) -> Path:
    return folder.parent / f".{folder.name}.vlm-staging-{run_id[:8]}"


def replaced_dir(folder: Path, run_id: str) -> Path:
    """Where :func:`publish` parks a replaced run until the new one is in place."""
    return folder.parent / f".{folder.name}.vlm-replaced-{run_id[:8]}"


def _clean_after(folder: Path, dead: Holder | None) -> None:
    """Remove what a run that died holding ``folder``'s lock left: its staging folder, and a
    run it was replacing (put back when the kill came between the two renames)."""
    if dead is None:
        return
    old = replaced_dir(folder, dead.run_id)
    if old.is_dir():
        if os.path.lexists(folder):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, folder)
    shutil.rmtree(staging_dir(folder, dead.run_id), ignore_errors=True)


@dataclass
class OutputClaim:
    """The folder a run writes (``target``) for the ``--out`` it was given (``requested``)."""

    requested: Path
    target: Path
    run_id: str
    replace: bool = False  # target holds a finished run the outputs replace (``overwrite``)
    locks: list[LockFile] = field(default_factory=list)

    @property
    def beside(self) -> bool:
        """Whether the outputs go beside ``requested`` because it holds a finished run."""
        return self.target != self.requested

    def release(self) -> None:
        while self.locks:
            self.locks.pop().release()


def _lock(folder: Path, shown: Path, holder: Holder) -> LockFile:
    try:
        lock = LockFile.acquire(lock_path(folder), holder)
    except LockHeld as exc:
        held = exc.holder
        if held is None:
            raise OutputInUseError(printable(str(shown))) from None
        here = held.host == socket.gethostname()
        raise OutputInUseError(
            printable(str(shown)), held.run_id, held.pid, held.started, "" if here else held.host
        ) from None
    _clean_after(folder, lock.previous)
    return lock


def _writable(action: str, out: Path, exc: OSError) -> Exception:
    full = disk_full(exc)
    if full is not None:
        return full
    where = printable(str(exc.filename or out))
    return UsageError(f"--out {printable(str(out))}: cannot {action} {where}: {exc.strerror}")


def claim_output(out: Path, run_id: str, *, overwrite: bool = False) -> OutputClaim:
    """Lock the output folder for run ``run_id`` and decide where its outputs go (see the
    module docstring). Release the claim when the run ends, however it ends.

    Raises:
        OutputInUseError: another live run holds the folder.
        UsageError: ``out`` is a file or the root of a file system, or its parent cannot be
            created.
    """
    folder = safe_path(out).resolve()
    shown = printable(str(out))
    if not folder.name:
        raise UsageError(f"--out {shown} is the root of a file system; choose a folder in it")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {shown} exists and is not a folder")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _writable("create", out, exc) from exc
    holder = Holder.this_process(run_id)
    claim = OutputClaim(folder, folder, run_id)
    try:
        claim.locks.append(_lock(folder, out, holder))
        if holds_finished_run(folder):
            if overwrite:
                claim.replace = True
            else:
                claim.target = _beside(folder, holder, claim)
    except OSError as exc:
        claim.release()
        raise _writable("lock", out, exc) from exc
    except BaseException:
        claim.release()
        raise
    return claim


def _beside(folder: Path, holder: Holder, claim: OutputClaim) -> Path:
    """The first ``folder-N`` (N = 2, 3, …) that does not exist and no run holds; locked."""
    for n in range(2, MAX_BESIDE + 2):
        candidate = folder.with_name(f"{folder.name}-{n}")
        if os.path.lexists(candidate):
            continue
        try:
            claim.locks.append(LockFile.acquire(lock_path(candidate), holder))
        except LockHeld:
            continue
        _clean_after(candidate, claim.locks[-1].previous)
        if os.path.lexists(candidate):  # made between the check and the lock
            claim.locks.pop().release()
            continue
        return candidate
    raise UsageError(
        f"--out {printable(str(folder))} and {MAX_BESIDE} folders beside it hold runs; "
        "choose another folder or pass --overwrite"
    )


def publish(staging: Path, claim: OutputClaim) -> None:
    """Move the staged outputs into ``claim.target``: the whole folder when it is new or
    replaced, entry by entry (same names replaced) into a folder that holds no vlm run."""
    target = claim.target
    if not target.exists():
        os.replace(staging, target)
        return
    if claim.replace:
        old = replaced_dir(target, claim.run_id)
        os.replace(target, old)
        try:
            os.replace(staging, target)
        except BaseException:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    for entry in staging.iterdir():
        dest = target / entry.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(entry, dest)
    staging.rmdir()
