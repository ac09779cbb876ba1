"""The plugin contract: every hook a ``vlm`` plugin may implement.

A plugin is a module (or object) named by an entry point in the ``vlm.plugins`` group. It
implements hooks by decorating functions with :data:`hookimpl`. Hooks receive a ``register``
callback, so the host owns the registry, its validation and its errors. Each hook here has a
section in ``docs/hooks.md`` and a test; ``tests/test_hook_contract.py`` fails when one is
missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from vlm_core.io.readers import InputReader
    from vlm_core.outputs.kind import OutputKind
    from vlm_core.tasks import TaskSpec

PROJECT_NAME = "vlm"
ENTRY_POINT_GROUP = "vlm.plugins"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_tasks(register: Callable[[TaskSpec], None]) -> None:
    """Register the plugin's tasks.

    :param register: call once per task with a :class:`vlm_core.tasks.TaskSpec`. The task id
        must be ``<plugin>.<task>`` where ``<plugin>`` is the plugin's entry-point name.
        Registering an invalid spec or a duplicate id marks the plugin as failed.

    Keep this cheap: no model loads and no imports of torch or model libraries. They belong in
    the task's run function, which runs when the task is first used.
    """


@hookspec
def register_readers(register: Callable[[InputReader], None]) -> None:
    """Register input readers for formats the core recognises but does not decode.

    :param register: call once per format with a :class:`vlm_core.io.readers.InputReader`
        (``format`` one of :data:`vlm_core.io.readers.READER_FORMATS`, e.g. ``"dicom"``).
        An invalid reader, or a format another plugin already reads, marks the plugin as
        failed.

    Keep this cheap: name the reader's functions as ``"module:function"`` strings (or import
    nothing heavy), so that decoding libraries load only when a file of the format is read.
    """


@hookspec
def register_output_kinds(register: Callable[[OutputKind], None]) -> None:
    """Register kinds of output the plugin's tasks return beyond the core's.

    :param register: call once per kind with a :class:`vlm_core.outputs.OutputKind` named
        ``<plugin>.<kind>``: its class, JSON summary, exporters, ``vlm run`` line, dashboard
        renderer and History view. The plugin's tasks may then declare the kind in ``outputs``.
        An invalid kind or a name registered twice marks the plugin as failed.

    Keep this cheap: name the kind's class and functions as ``"module:function"`` strings, so
    that they are imported when an output of the kind is first made, exported or shown.
    """
