"""Probe and load input files safely.

:func:`probe_input` reads only a file's header: it detects the format by content, checks it
against the allow-list and the caps in :class:`~vlm_core.config.Settings`, and fails with a
one-line :class:`~vlm_core.errors.InputError` before any pixel data is decoded.
:func:`load_input` then decodes a probed file into a core type.

Every format is probed and loaded by the :class:`~vlm_core.io.readers.InputReader` registered
for it through ``register_readers``: the core's own readers (images, NIfTI, text; see
:mod:`vlm_core.io.core_readers`) and a plugin's (DICOM, video). Pass the registry's
``readers`` to these functions; the core's readers are always among them. A reader with a
``group`` function turns the files of its format found under a folder into inputs of several
files (a DICOM series: one :class:`Probe` whose ``path`` is the series folder and ``members``
its slices).
"""

from __future__ import annotations

import glob
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vlm_core.config import Settings, settings
from vlm_core.errors import InputError, VLMError, describe_exception
from vlm_core.io.core_readers import CORE_READERS
from vlm_core.io.probe import Probe
from vlm_core.io.readers import InputReader, ReaderError
from vlm_core.io.sniff import ALLOWED, sniff_format
from vlm_core.kinds import Kind

__all__ = ["Probe", "ProbeCheck", "Readers", "collect_inputs", "load_input", "probe_input"]

log = logging.getLogger("vlm.io")

Readers = Mapping[str, InputReader]
#: a further check of a probed input (a task's accepted image sizes): raises ``InputError``
ProbeCheck = Callable[[Probe], None]


def _with_core(readers: Readers | None) -> Readers:
    """``readers`` (the registry's, by format) with the core's own: the core's come first, as
    in the registry, where a plugin cannot register a reader for a format the core reads."""
    if not readers:
        return CORE_READERS
    return {**readers, **CORE_READERS}


class OtherKindError(InputError):
    """A readable file of a kind the task does not take: in a folder, the least telling reason
    a file was skipped (a KITTI folder's calibration texts beside the sweeps a task takes)."""


def _article(name: str) -> str:
    """ "a" or "an" before a format's name: an MP4, an HDF5, a NIFTI (read as a word), a PNG."""
    spelled = len(name) > 1 and name[1].lower() not in "aeiou"  # letter by letter: M-P-4
    vowel_sound = name[0].lower() in "aeiou" or (spelled and name[0].lower() in "fhlmnrsx")
    return "an" if vowel_sound else "a"


def _unreadable(path: Path, fmt: str, readers: Readers, accepted: list[Kind] | None) -> str:
    """The one-line refusal of a file whose content is ``fmt``: what it looks like and the
    formats that are readable (of the kinds ``accepted``)."""
    what = "an unrecognised format" if fmt == "unknown" else f"{_article(fmt)} {fmt.upper()} file"
    readable = sorted(f for f in readers if not accepted or ALLOWED.get(f) in accepted)
    if not readable:
        kinds = ", ".join(str(k) for k in accepted or ())
        return f"{path}: content is {what}, and no format of {kinds} inputs is readable"
    return f"{path}: content is {what}, not one of the readable formats ({', '.join(readable)})"


def _check_file(
    path: Path, accepted: list[Kind] | None, s: Settings, readers: Readers
) -> tuple[str, Kind, int]:
    """The checks every file passes before its header is read: existence, size, format, kind,
    and a reader for its format."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path}: file is empty")
    if size > s.max_input_bytes:
        raise InputError(
            f"{path}: file is {size:,} bytes, over the limit of {s.max_input_bytes:,} "
            "(VLM_MAX_INPUT_BYTES)"
        )
    try:
        fmt = sniff_format(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    kind = ALLOWED.get(fmt)
    if kind is None:
        raise InputError(_unreadable(path, fmt, readers, accepted))
    if accepted is not None and kind not in accepted:
        wanted = ", ".join(str(k) for k in accepted) or "no input files"
        what = str(kind) if fmt == str(kind) else f"{fmt} {kind}"  # "a text", "a png image"
        raise OtherKindError(f"{path}: is a {what}, but this task takes {wanted}")
    if fmt not in readers:
        raise InputError(_unreadable(path, fmt, readers, accepted))
    return fmt, kind, size


def probe_input(
    path: Path,
    accept: Iterable[Kind] | None = None,
    s: Settings | None = None,
    *,
    readers: Readers | None = None,
) -> Probe:
    """Check ``path`` from its header only; raise :class:`InputError` naming the problem.

    ``readers`` are the registry's, by format (the core's own readers are always added); a
    file of a format none of them reads is refused here, before anything is decoded.
    """
    s = s or settings()
    readers = _with_core(readers)
    fmt, kind, size = _check_file(path, list(accept) if accept is not None else None, s, readers)
    return _probe_checked(path, fmt, kind, size, s, readers)


def _probe_checked(
    path: Path, fmt: str, kind: Kind, size: int, s: Settings, readers: Readers
) -> Probe:
    """Read the header of a file that passed :func:`_check_file`, with its format's reader."""
    shape = _reader_probe(readers[fmt], path, (path,), kind, s)
    return Probe(path=path, format=fmt, kind=kind, shape=shape, size_bytes=size)


def _call_reader(reader: InputReader, stage: str, *args: Any) -> Any:
    """Call one of a reader's functions; anything but a :class:`VLMError` is a bug of the
    reader's plugin (of the core, for the core's readers)."""
    try:
        func = getattr(reader, f"resolve_{stage}")()
        return func(*args)
    except (KeyboardInterrupt, VLMError):
        raise
    except BaseException as exc:  # SystemExit too: a reader must not end the host
        raise ReaderError(reader, stage, describe_exception(exc)) from exc


def _reader_probe(
    reader: InputReader, where: Path, files: tuple[Path, ...], kind: Kind, s: Settings
) -> tuple[int, ...]:
    """The shape ``reader`` reports for ``files``, checked against the caps again."""
    shape = _call_reader(reader, "probe", files)
    if not (
        isinstance(shape, tuple)
        and shape
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    ):
        raise ReaderError(reader, "probe", f"returned {shape!r}, not a shape of positive ints")
    count = math.prod(shape)
    if kind is Kind.VOLUME and count > s.max_volume_voxels:
        raise InputError(
            f"{where}: {reader.format} header claims {count:,} voxels {shape}, over the limit "
            f"of {s.max_volume_voxels:,} (VLM_MAX_VOLUME_VOXELS)"
        )
    if kind is Kind.SCENE and (len(shape) < 2 or shape[1] > s.max_cloud_points):
        if len(shape) < 2:
            raise ReaderError(reader, "probe", f"returned {shape!r}, not (frames, points, ...)")
        raise InputError(
            f"{where}: {reader.format} header claims {shape[1]:,} points in a sweep, over the "
            f"limit of {s.max_cloud_points:,} (VLM_MAX_CLOUD_POINTS)"
        )
    if kind is Kind.IMAGE and math.prod(shape[:2]) > s.max_image_pixels:
        raise InputError(
            f"{where}: {reader.format} header claims {math.prod(shape[:2]):,} pixels {shape}, "
            f"over the limit of {s.max_image_pixels:,} (VLM_MAX_IMAGE_PIXELS)"
        )
    return shape


def _probe_group(
    files: tuple[Path, ...], fmt: str, kind: Kind, reader: InputReader, s: Settings
) -> Probe:
    """Probe the files of one group (already checked one by one) as one input."""
    if len(files) == 1:
        size = files[0].stat().st_size
        shape = _reader_probe(reader, files[0], files, kind, s)
        return Probe(path=files[0], format=fmt, kind=kind, shape=shape, size_bytes=size)
    folder = Path(os.path.commonpath([str(f.parent) for f in files]))
    size = sum(f.stat().st_size for f in files)
    if size > s.max_input_bytes:
        raise InputError(
            f"{folder}: {len(files)} {fmt} files of one input total {size:,} bytes, over the "
            f"limit of {s.max_input_bytes:,} (VLM_MAX_INPUT_BYTES)"
        )
    shape = _reader_probe(reader, folder, files, kind, s)
    return Probe(path=folder, format=fmt, kind=kind, shape=shape, size_bytes=size, members=files)


def _load_with_reader(probe: Probe, reader: InputReader) -> Any:
    from vlm_core.types import Image, Scene, Text, Video, Volume

    expected: dict[Kind, type] = {
        Kind.IMAGE: Image,
        Kind.VOLUME: Volume,
        Kind.VIDEO: Video,
        Kind.TEXT: Text,
        Kind.SCENE: Scene,
    }
    loaded = _call_reader(reader, "load", probe)
    wanted = expected[probe.kind]
    if not isinstance(loaded, wanted):
        got = type(loaded).__name__
        raise ReaderError(reader, "load", f"returned {got}, not a {wanted.__name__}")
    return loaded


def load_input(probe: Probe, readers: Readers | None = None) -> Any:
    """Decode a probed input into the core type of its kind (:class:`Image`, :class:`Volume`,
    :class:`Video` or :class:`Text`) with its format's reader.

    ``readers`` are the registry's, by format (the core's own readers are always added).
    """
    readers = _with_core(readers)
    reader = readers.get(probe.format)
    if reader is None:
        raise InputError(_unreadable(probe.path, probe.format, readers, [probe.kind]))
    return _load_with_reader(probe, reader)


def _is_pattern(arg: str) -> bool:
    return any(ch in arg for ch in "*?[")


def collect_inputs(
    args: Sequence[str],
    accept: Sequence[Kind],
    s: Settings | None = None,
    *,
    readers: Readers | None = None,
    check: ProbeCheck | None = None,
) -> list[Probe]:
    """Expand files, folders and globs into probed inputs.

    Files named explicitly must be usable; files found in folders or by globs that do not fit
    are skipped (logged), and a folder or glob that yields nothing usable is an error. Files
    found of a format whose reader groups files (``readers``) become one input per group: a
    DICOM series folder is one volume. ``check`` (e.g. the task's accepted image sizes) is one
    more condition every input must meet, from its header.
    """
    s = s or settings()
    readers = _with_core(readers)
    check = check or _accept_all
    probes: list[Probe] = []
    for arg in args:
        path = Path(arg).expanduser()
        if path.is_dir() or (_is_pattern(arg) and not path.exists()):
            if path.is_dir():
                found = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p, path))
                where = f"folder {path}"
            else:
                found = sorted(Path(p) for p in glob.glob(arg, recursive=True) if Path(p).is_file())
                where = f"pattern '{arg}'"
            usable, reasons = _probe_found(found, list(accept), s, readers, check)
            if not usable:
                kinds = ", ".join(str(k) for k in accept)
                detail = f" ({len(found)} files, none usable; first: {reasons[0]})" if found else ""
                raise InputError(
                    f"{where} has no usable inputs for this task (takes {kinds}){detail}"
                )
            probes += usable
        else:
            probe = probe_input(path, accept, s, readers=readers)
            check(probe)
            probes.append(probe)
    return probes


def _accept_all(probe: Probe) -> None:
    return None


def _probe_found(
    found: list[Path], accept: list[Kind], s: Settings, readers: Readers, check: ProbeCheck
) -> tuple[list[Probe], list[str]]:
    """Probe the files found in a folder or by a glob, grouping those whose reader groups.

    Returns the usable inputs, in the order of their first file, and why the others were
    skipped.
    """
    slots: list[Probe | Path] = []  # a probe, or a file whose input is decided by its group
    pending: dict[str, list[Path]] = {}
    kinds: dict[str, Kind] = {}
    reasons: list[str] = []
    other_kind: list[str] = []  # listed after the other reasons: they say least
    for candidate in found:
        try:
            fmt, kind, size = _check_file(candidate, accept, s, readers)
            if readers[fmt].group is not None:
                pending.setdefault(fmt, []).append(candidate)
                kinds[fmt] = kind
                slots.append(candidate)
            else:
                checked = _probe_checked(candidate, fmt, kind, size, s, readers)
                check(checked)
                slots.append(checked)
        except OtherKindError as exc:
            other_kind.append(str(exc))
            log.info("skipping %s", exc)
        except InputError as exc:
            reasons.append(str(exc))
            log.info("skipping %s", exc)
    grouped: dict[Path, Probe | None] = {}  # first member → its input (None: unusable)
    for fmt, files in pending.items():
        reader = readers[fmt]
        groups = _groups(reader, files)
        for group in groups:
            try:
                grouped_probe = _probe_group(group, fmt, kinds[fmt], reader, s)
                check(grouped_probe)
                probe: Probe | None = grouped_probe
            except InputError as exc:
                probe = None
                reasons.append(str(exc))
                log.info("skipping %s", exc)
            grouped[min(group)] = probe
        in_groups = {f for group in groups for f in group}
        for f in files:
            if f not in in_groups:
                reasons.append(f"{f}: not part of any {fmt} input")
                log.info("skipping %s: not part of any %s input", f, fmt)
    usable: list[Probe] = []
    for slot in slots:
        if isinstance(slot, Probe):
            usable.append(slot)
        elif (probe := grouped.get(slot)) is not None:
            usable.append(probe)
    return usable, reasons + other_kind


def _groups(reader: InputReader, files: list[Path]) -> list[tuple[Path, ...]]:
    """The reader's groups of ``files``, checked: non-empty, only given files, none twice.

    An :class:`InputError` from the reader (an inconsistent series) rejects the whole argument.
    """
    returned = _call_reader(reader, "group", list(files))
    given = set(files)
    seen: set[Path] = set()
    groups: list[tuple[Path, ...]] = []
    try:
        for group in returned:
            members = tuple(Path(f) for f in group)
            if not members:
                raise ValueError("an empty group")
            for member in members:
                if member not in given:
                    raise ValueError(f"a file it was not given ({member})")
                if member in seen:
                    raise ValueError(f"a file in two groups ({member})")
                seen.add(member)
            groups.append(members)
    except (TypeError, ValueError) as exc:
        raise ReaderError(reader, "group", f"returned {exc}") from None
    return groups


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)
