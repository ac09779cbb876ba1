"""Domain exceptions.

Every error a user can cause is a :class:`VLMError` whose message says what was asked, what was
found and what to do. The CLI prints the message on one line and exits with ``exit_code``.
"""

from __future__ import annotations

import difflib
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


class PluginError(VLMError):
    """A plugin failed to import, to register or to run (fatal only in strict mode)."""

    def __init__(self, plugin: str, message: str) -> None:
        super().__init__(f"plugin '{plugin}': {message}")
        self.plugin = plugin
        self.reason = message


class PluginValidationError(PluginError):
    """A plugin declares something the contract does not allow (unknown hook, bad task spec)."""


class TaskRunError(VLMError):
    """A task raised while running; the plugin has been marked as failed."""

    def __init__(self, plugin: str, task: str, reason: str, quarantined: bool = False) -> None:
        hint = f"; plugin disabled until `vlm plugins enable {plugin}`" if quarantined else ""
        super().__init__(f"plugin '{plugin}' failed in task '{task}': {reason}{hint}")
        self.plugin = plugin
        self.task = task
        self.reason = reason


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
