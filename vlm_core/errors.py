"""Domain exceptions.

Every error a user can cause is a :class:`VLMError` whose message says what was asked, what was
found and what to do. The CLI prints the message on one line and exits with ``exit_code``.
"""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable


class VLMError(Exception):
    """Base class of every error the framework raises on purpose."""

    exit_code = 1


class UsageError(VLMError):
    """The request itself is wrong: unknown task, bad parameter, missing file."""

    exit_code = 2


class UnknownTaskError(UsageError):
    """No installed plugin provides the requested task id."""


class UnknownPluginError(UsageError):
    """No installed plugin has the requested name."""


class ParameterError(UsageError):
    """A task parameter has the wrong type, is out of bounds or is not known."""


class InputError(UsageError):
    """An input file is missing, of a format outside the allow-list, too large or corrupt.

    Tasks raise it too for inputs they cannot process; it never marks the plugin as failed.
    """


class RefusedError(UsageError):
    """Every input of a ``--strict`` run looks unlike the task's training data: none answered."""


class PluginError(VLMError):
    """A plugin failed to import, to register or to run (fatal only in strict mode)."""

    def __init__(self, plugin: str, message: str) -> None:
        super().__init__(f"plugin '{plugin}': {message}")
        self.plugin = plugin
        self.reason = message


class PluginValidationError(PluginError):
    """A plugin declares something the contract does not allow (unknown hook, bad task spec)."""


class TaskRunError(VLMError):
    """A task raised something other than a :class:`UsageError` while running: a bug in the
    plugin, reported against its name. ``quarantined``: the plugin's own samples crashed too,
    so it is disabled until `vlm plugins enable` (otherwise only this input failed)."""

    def __init__(self, plugin: str, task: str, reason: str, quarantined: bool = False) -> None:
        hint = f"; plugin disabled until `vlm plugins enable {plugin}`" if quarantined else ""
        super().__init__(f"plugin '{plugin}' failed in task '{task}': {reason}{hint}")
        self.plugin = plugin
        self.task = task
        self.reason = reason
        self.quarantined = quarantined


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def check_fields(data: Iterable[str], known: Iterable[str], what: str) -> None:
    """Raise a :class:`UsageError` naming the first key of ``data`` that is not ``known``
    (``what``: e.g. "GAN architecture"), with the known fields and a suggestion."""
    names = set(known)
    for key in data:
        if key not in names:
            raise UsageError(
                f"unknown {what} field '{key}' (the fields are {', '.join(sorted(names))})"
                f"{did_you_mean(key, names)}"
            )


def describe_exception(exc: BaseException) -> str:
    """One line naming the exception type and its message (``SystemExit(3)`` for exits)."""
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r})"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class OutputInUseError(UsageError):
    """Another run holds the output folder (its lock file) and is still running."""

    def __init__(
        self,
        folder: str,
        run_id: str | None = None,
        pid: int | None = None,
        started: str | None = None,
        host: str = "",
    ) -> None:
        if run_id is None:
            who = "another run"
        else:
            where = f" on {host}" if host else ""
            who = f"run {run_id[:12]} (pid {pid}{where}, started {started})"
        super().__init__(f"--out {folder} is in use by {who}; wait for it or choose another folder")
        self.folder = folder
        self.run_id = run_id
        self.pid = pid


class DiskFullError(VLMError):
    """A file could not be written: its device is full or the user's disk quota is used up.

    An environment failure, not a bad request: exit 1, without "internal error".
    """

    def __init__(self, path: str | None, *, quota: bool = False, detail: str = "") -> None:
        reason = " (disk quota exceeded)" if quota else ""
        where = f" while writing {path}" if path else ""
        super().__init__(f"no space left on device{reason}{where}{detail}")
        self.path = path


#: errno values that mean "no room to write": device full, quota exceeded (POSIX only)
DISK_FULL_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None
)


def disk_full(
    exc: BaseException, path: str | None = None, detail: str = ""
) -> DiskFullError | None:
    """A :class:`DiskFullError` for an ``OSError`` that says the disk is full or over quota,
    naming ``path`` (else the file the error names), or None for any other exception."""
    if not isinstance(exc, OSError) or exc.errno not in DISK_FULL_ERRNOS:
        return None
    name = path or (str(exc.filename) if exc.filename else None)
    return DiskFullError(name, quota=exc.errno != errno.ENOSPC, detail=detail)
