"""Uploaded files: size-limited, saved into the session's own temporary folder, and checked by
content before anything decodes them.

Each browser session gets one :class:`tempfile.TemporaryDirectory` kept in its session state;
uploads and run outputs go there, and the folder is removed when the session ends (its state is
dropped and the directory object finalised) or, at the latest, when the server exits.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import streamlit as st

from vlm_core.config import settings
from vlm_core.errors import InputError
from vlm_core.io import probe_input
from vlm_core.io.load import Readers
from vlm_core.io.sniff import sniff_format
from vlm_core.kinds import Kind
from vlm_core.tasks import TaskSpec

SESSION_DIR_KEY = "vlm.session_dir"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: The most an uploaded dataset ZIP may expand to, in bytes (1 GiB): lower than the core's
#: default for archives (4 GiB or half the free disk space) because anyone who reaches the
#: dashboard can upload one. A bigger dataset belongs in a folder on the server.
UPLOAD_ARCHIVE_BYTES = 1024**3


class Upload(Protocol):
    """What Streamlit's ``UploadedFile`` offers that this module uses."""

    name: str
    size: int

    def getvalue(self) -> bytes: ...


def session_dir() -> Path:
    """This session's private temporary folder (created on first use)."""
    holder = st.session_state.get(SESSION_DIR_KEY)
    if not isinstance(holder, tempfile.TemporaryDirectory):
        holder = tempfile.TemporaryDirectory(prefix="vlm-dashboard-", ignore_cleanup_errors=True)
        st.session_state[SESSION_DIR_KEY] = holder
    return Path(holder.name)


def upload_limit_bytes() -> int:
    """The largest upload accepted: Streamlit's ``server.maxUploadSize`` (``vlm dashboard
    --max-upload-mb``) or the core's ``VLM_MAX_INPUT_BYTES``, whichever is smaller."""
    server_mb = int(st.get_option("server.maxUploadSize"))
    return min(server_mb * 2**20, settings().max_input_bytes)


def safe_name(name: str) -> str:
    """A name that cannot leave its folder or confuse a shell (``../x y.png`` → ``x_y.png``)."""
    base = _UNSAFE.sub("_", Path(name.replace("\\", "/")).name).strip("._")
    return base[:120] or "upload"


def _size_text(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n:,} bytes"


def _unique(path: Path) -> Path:
    """``path``, or ``name-2.ext``, ``name-3.ext``, … when it is taken."""
    n = 1
    candidate = path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


#: formats whose files belong together: uploaded together, they go into one folder and are
#: one input (a DICOM series is one volume, grouped by the format's reader)
GROUPED_FORMATS = ("dicom",)

#: kinds of the files an input of a kind is read with: a scene's point cloud is read with the
#: camera image and the calibration text uploaded beside it (``NAME.bin``, ``NAME.png``,
#: ``NAME.txt``), so these are kept, beside the inputs, though the task does not take them
COMPANION_KINDS: dict[Kind, tuple[Kind, ...]] = {Kind.SCENE: (Kind.IMAGE, Kind.TEXT)}

#: input kinds whose data comes as a folder (a KITTI scene folder: image_2/, velodyne/,
#: calib/): a ZIP of the folder is unpacked (the core's safe extraction, under
#: :data:`UPLOAD_ARCHIVE_BYTES`) and read as that folder, as `vlm run` reads one
FOLDER_KINDS = frozenset({Kind.SCENE})


@dataclass(frozen=True)
class Refused:
    """An uploaded file that was not kept, and why."""

    name: str  # as the browser sent it
    reason: str  # one line, naming the problem ("content is a ZIP file ...")


@dataclass
class SavedUploads:
    """One batch of uploads after :func:`save_uploads`: what can run, and what was refused."""

    paths: list[Path] = field(default_factory=list)  # the inputs (a DICOM series: its folder)
    accepted: list[str] = field(default_factory=list)  # uploaded names kept, in upload order
    refused: list[Refused] = field(default_factory=list)  # in upload order


def save_uploads(
    files: Sequence[Upload], spec: TaskSpec, readers: Readers | None = None
) -> SavedUploads:
    """Save ``files`` into a new folder of the session's temporary folder and probe each one.

    Each file is judged on its own: it is refused before it is written when it is over
    :func:`upload_limit_bytes`, and removed again when its content is not a format of a kind
    ``spec`` takes that one of ``readers`` (the registry's; the core's own always) reads
    (:func:`vlm_core.io.probe_input` reads the header only). Nothing is decoded here. The
    others are kept, so one bad file in a batch costs only itself; every refusal is returned
    with its one-line reason.

    Files of a grouped format (DICOM) uploaded together are moved into one sub-folder, which
    is returned as one input in their place: the runner reads a folder of DICOM files as its
    series (one volume per series), as `vlm run` does with a series folder.

    For a task that takes scenes, a sweep's camera image and calibration uploaded with it are
    kept beside it (:data:`COMPANION_KINDS`), and a ZIP of a scene folder (KITTI's layout) is
    unpacked and returned as that folder (:data:`FOLDER_KINDS`).

    Raises:
        InputError: no file was uploaded. When every file is refused, ``paths`` is empty and
            nothing is left on disk.
    """
    if not files:
        raise InputError("no file uploaded: add at least one file, or pick a bundled sample")
    limit = upload_limit_bytes()
    folder = session_dir() / "uploads" / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    batch = SavedUploads()
    grouped: dict[str, list[Path]] = {}
    try:
        written: list[tuple[Upload, Path]] = []
        for upload in files:  # every file first: a scene's cloud is probed with its companions
            if upload.size > limit:
                batch.refused.append(Refused(upload.name, _too_big(upload.size, limit)))
                continue
            path = _unique(folder / safe_name(upload.name))
            path.write_bytes(upload.getvalue())
            written.append((upload, path))
        for upload, path in written:
            try:
                if FOLDER_KINDS & set(spec.inputs) and sniff_format(path) == "zip":
                    batch.paths.append(_unpacked(upload, path, spec, readers))
                    batch.accepted.append(upload.name)
                    continue
                probe = probe_input(path, spec.inputs, readers=readers)
            except InputError as exc:
                if path.exists() and _companion(path, spec, readers):
                    batch.accepted.append(upload.name)
                    continue
                path.unlink(missing_ok=True)  # an unpacked ZIP is gone already
                reason = str(exc).replace(str(path), upload.name).removeprefix(f"{upload.name}: ")
                batch.refused.append(Refused(upload.name, reason))
                continue
            if probe.format in GROUPED_FORMATS:
                grouped.setdefault(probe.format, []).append(path)
            batch.paths.append(path)
            batch.accepted.append(upload.name)
        for fmt, members in grouped.items():
            if len(members) < 2:
                continue
            group = folder / f"{fmt}-files"
            group.mkdir()
            for path in members:
                path.rename(group / path.name)
            at = batch.paths.index(members[0])
            batch.paths = [p for p in batch.paths if p not in members]
            batch.paths.insert(at, group)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    first: dict[str, int] = {}
    for i, upload in enumerate(files):
        first.setdefault(upload.name, i)
    batch.refused.sort(key=lambda refused: first[refused.name])  # in upload order
    if not batch.paths:
        shutil.rmtree(folder, ignore_errors=True)
    return batch


def _unpacked(upload: Upload, archive: Path, spec: TaskSpec, readers: Readers | None) -> Path:
    """The folder an uploaded ZIP of a scene folder unpacks to (beside it; the ZIP is
    removed), checked to hold an input of ``spec``; an ``InputError`` (with nothing left)
    when the archive is refused or holds none."""
    from vlm_core.io.load import collect_inputs
    from vlm_core.weights.archive import default_max_bytes, safe_extract
    from vlm_core.weights.errors import WeightsError

    folder = archive.with_name(archive.stem + "-files")
    try:
        cap = min(UPLOAD_ARCHIVE_BYTES, default_max_bytes(archive.parent))
        safe_extract(archive, folder, max_bytes=cap)
        collect_inputs([str(folder)], spec.inputs, readers=readers)
    except WeightsError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise InputError(exc.problem.replace(str(archive), upload.name)) from None
    except InputError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise InputError(str(exc).replace(str(folder), upload.name)) from None
    finally:
        archive.unlink(missing_ok=True)
    return folder


def _companion(path: Path, spec: TaskSpec, readers: Readers | None) -> bool:
    """Whether ``path`` is a file an input of ``spec`` is read with (:data:`COMPANION_KINDS`):
    kept beside the inputs, not run on its own."""
    kinds = [k for kind in spec.inputs for k in COMPANION_KINDS.get(kind, ())]
    if not kinds:
        return False
    try:
        probe_input(path, kinds, readers=readers)
    except InputError:
        return False
    return True


def _too_big(size: int, limit: int) -> str:
    return (
        f"{_size_text(size)}, over the upload limit of {_size_text(limit)} "
        "(vlm dashboard --max-upload-mb, VLM_MAX_INPUT_BYTES)"
    )


def extract_dataset_zip(upload: Upload) -> Path:
    """Unpack an uploaded dataset ZIP into a new folder under ``<data folder>/train-data``.

    The core's :func:`vlm_core.weights.safe_extract` does the work (no path traversal, links,
    devices; all or nothing; a member may expand at most 200 times), capped at
    :data:`UPLOAD_ARCHIVE_BYTES` or at the core's default when the disk has less room.

    Returns:
        The dataset folder: the archive's single top-level folder when it has one.

    Raises:
        InputError: the upload is over the upload limit or the archive is refused; nothing is
            left behind.
    """
    from vlm_core.weights.archive import default_max_bytes, safe_extract
    from vlm_core.weights.errors import WeightsError

    limit = upload_limit_bytes()
    if upload.size > limit:
        raise InputError(f"{upload.name}: {_too_big(upload.size, limit)}")
    dest = settings().data_dir / "train-data" / uuid.uuid4().hex[:12]
    inner = dest / Path(safe_name(upload.name)).stem
    dest.mkdir(parents=True)
    archive = dest.with_suffix(".zip")
    try:
        archive.write_bytes(upload.getvalue())
        cap = min(UPLOAD_ARCHIVE_BYTES, default_max_bytes(dest))
        safe_extract(archive, inner, max_bytes=cap)
    except WeightsError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise InputError(exc.problem.replace(str(archive), upload.name)) from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    finally:
        archive.unlink(missing_ok=True)
    entries = [p for p in inner.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else inner
