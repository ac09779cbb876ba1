"""Input readers: how each allowed format is probed and decoded.

The core sniffs every allowed format by content (:mod:`vlm_core.io.sniff`). Every format is
then read by an :class:`InputReader` registered through the ``register_readers`` hook: the core
registers its own for images, NIfTI and text (:data:`CORE_DECODED`, a built-in plugin:
:mod:`vlm_core.io.core_readers`) before any plugin loads, and a plugin registers one for the
others (``dicom``, ``mp4``: :data:`READER_FORMATS`). :mod:`vlm_core.io.load` probes, groups and
loads files with them. This module is imported by plugin entry modules, so it stays light: the
standard library only (no numpy, no torch).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlm_core.errors import PluginError
from vlm_core.io.sniff import ALLOWED

if TYPE_CHECKING:
    from vlm_core.io.probe import Probe

#: Formats the core's own readers read; a plugin's reader cannot replace these.
CORE_DECODED = frozenset({"png", "jpeg", "tiff", "bmp", "webp", "nifti", "nifti-gz", "text"})

#: Formats a plugin may register a reader for: allowed, sniffed, but not read by the core.
READER_FORMATS = frozenset(f for f in ALLOWED if f not in CORE_DECODED)

#: ``probe(files) -> shape``: read headers only, check the caps, raise ``InputError``.
ProbeFunction = Callable[[Sequence[Path]], tuple[int, ...]]
#: ``load(probe) -> Image | Volume | ...``: decode a probed input into a core type.
LoadFunction = Callable[["Probe"], Any]
#: ``group(files) -> groups``: which of the files found under a folder form one input each.
GroupFunction = Callable[[Sequence[Path]], Sequence[Sequence[Path]]]

_FUNCTION_PATH = re.compile(r"^[\w.]+:\w+$")


@dataclass(frozen=True)
class InputReader:
    """The reader of one format (the core's or a plugin's); functions are callables or
    ``"module:function"`` strings imported on first use (so registering stays cheap).

    ``probe(files)`` receives the files of one input (one file, or the members of a group in
    the order ``group`` returned them), reads their headers only, checks the caps of
    :func:`vlm_core.config.settings` (``max_volume_voxels``, ``max_image_pixels``,
    ``max_cloud_points``) and returns the shape the input will load as (a scene's:
    ``(frames, points of its largest sweep)``); it raises
    :class:`~vlm_core.errors.InputError` with a one-line message for a file it cannot use.
    ``load(probe)`` decodes ``probe.files`` into the core type of the format's kind (a
    :class:`~vlm_core.types.Volume` for ``dicom``, a :class:`~vlm_core.types.Scene` for a
    point cloud).
    ``group(files)`` (optional) receives every file of this format found under one folder or
    glob argument and returns the groups that form one input each, members in load order (a
    DICOM series becomes one volume); files in no group are skipped, and an ``InputError``
    rejects the whole argument (an inconsistent series).
    """

    format: str  # a format of READER_FORMATS, e.g. "dicom" (of CORE_DECODED: the core's own)
    probe: ProbeFunction | str
    load: LoadFunction | str
    group: GroupFunction | str | None = None
    description: str = ""  # one line, shown by `vlm plugins list`
    plugin: str = ""  # set by the host: the plugin that registered the reader ("vlm_core")

    def resolve_probe(self) -> ProbeFunction:
        func: ProbeFunction = _resolve(self.probe)
        return func

    def resolve_load(self) -> LoadFunction:
        func: LoadFunction = _resolve(self.load)
        return func

    def resolve_group(self) -> GroupFunction | None:
        if self.group is None:
            return None
        func: GroupFunction = _resolve(self.group)
        return func


class ReaderError(PluginError):
    """A reader raised something other than ``InputError``: a bug in the plugin that
    registered it, reported against its name (the runner quarantines the plugin, as for a
    crashing task; never the core, whose readers a task's samples do not judge)."""

    def __init__(
        self, reader: InputReader, stage: str, reason: str, quarantined: bool = False
    ) -> None:
        hint = ""
        if quarantined:
            hint = f"; plugin disabled until `vlm plugins enable {reader.plugin}`"
        super().__init__(reader.plugin, f"{reader.format} reader failed in {stage}: {reason}{hint}")
        self.reader = reader
        self.stage = stage
        self.detail = reason


def _resolve(target: Any) -> Any:
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def validate_reader(reader: object) -> list[str]:
    """Problems with a registered reader on its own; an empty list means valid. Whether its
    format is already taken (by the core's readers, registered first, or another plugin's) is
    the host's check: :func:`vlm_core.plugins.load_registry`."""
    if not isinstance(reader, InputReader):
        return [f"registered {type(reader).__name__}, not an InputReader"]
    problems: list[str] = []
    if reader.format not in ALLOWED:
        known = ", ".join(sorted(READER_FORMATS))
        problems.append(f"reader format '{reader.format}' is not one of {known}")
    for attr in ("probe", "load", "group"):
        value = getattr(reader, attr)
        if value is None and attr == "group":
            continue
        if isinstance(value, str):
            if not _FUNCTION_PATH.match(value):
                problems.append(
                    f"{reader.format} reader: {attr} must be 'module:function', got '{value}'"
                )
        elif not callable(value):
            problems.append(
                f"{reader.format} reader: {attr} is neither callable nor 'module:function'"
            )
    return problems
