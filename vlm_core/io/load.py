"""Probe and load input files safely.

:func:`probe_input` reads only a file's header: it detects the format by content, checks it
against the allow-list and the caps in :class:`~vlm_core.config.Settings`, and fails with a
one-line :class:`~vlm_core.errors.InputError` before any pixel data is decoded.
:func:`load_input` then decodes a probed file into a core type.

Formats the core recognises but does not decode (DICOM, video) are probed and loaded by the
:class:`~vlm_core.io.readers.InputReader` a plugin registered for them (``register_readers``);
pass the registry's ``readers`` to these functions. A reader with a ``group`` function turns the
files of its format found under a folder into inputs of several files (a DICOM series: one
:class:`Probe` whose ``path`` is the series folder and ``members`` its slices).
"""

from __future__ import annotations

import glob
import hashlib
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_core.config import Settings, settings
from vlm_core.errors import InputError, VLMError, describe_exception
from vlm_core.fileio import sha256_file
from vlm_core.io.readers import InputReader, ReaderError
from vlm_core.io.sniff import ALLOWED, HEAD_BYTES, gzip_head, nifti_version, sniff_format
from vlm_core.kinds import Kind

log = logging.getLogger("vlm.io")

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "bmp": "BMP", "webp": "WEBP"}
MAX_TEXT_BYTES = 1 << 20


Readers = Mapping[str, InputReader]
#: a further check of a probed input (a task's accepted image sizes): raises ``InputError``
ProbeCheck = Callable[["Probe"], None]


@dataclass(frozen=True)
class Probe:
    """An input that passed the header checks: its format, kind and header-reported shape.

    An input of several files (a DICOM series) has ``path`` = the folder that holds them and
    ``members`` = the files in load order; ``size_bytes`` is then their total size.
    """

    path: Path
    format: str
    kind: Kind
    shape: tuple[int, ...]
    size_bytes: int
    members: tuple[Path, ...] = ()

    @property
    def files(self) -> tuple[Path, ...]:
        """The files to read: the members, or the one file at ``path``."""
        return self.members or (self.path,)

    def sha256(self) -> str:
        """The file's sha256; for several files, the sha256 of their sha256s (hex, one per
        line, in member order), so it changes when any member's content or the order does."""
        if not self.members:
            return sha256_file(self.path)
        digests = "\n".join(sha256_file(member) for member in self.members)
        return hashlib.sha256(digests.encode("ascii")).hexdigest()


def _image_header(path: Path, fmt: str, s: Settings) -> tuple[int, ...]:
    from PIL import Image as PILImage

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(path, formats=[_PIL_FORMATS[fmt]]) as im:
                width, height = im.size
                bands = len(im.getbands())
    except PILImage.DecompressionBombError as exc:
        raise InputError(f"{path}: refused by Pillow's decompression-bomb guard: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: not a readable {fmt.upper()} image ({exc})") from None
    if width < 1 or height < 1:
        raise InputError(f"{path}: image header claims an empty {width}x{height} image")
    if width * height > s.max_image_pixels:
        raise InputError(
            f"{path}: image header claims {width}x{height} = {width * height:,} pixels, over the "
            f"limit of {s.max_image_pixels:,} (VLM_MAX_IMAGE_PIXELS)"
        )
    return (height, width, bands)


def _nifti_head(path: Path) -> bytes:
    """The first :data:`HEAD_BYTES` of a NIfTI file, decompressed when it is gzipped."""
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    return (gzip_head(path) or b"") if head.startswith(b"\x1f\x8b") else head


def _open_nifti(path: Path, head: bytes | None = None) -> Any:
    """The NIfTI-1 or NIfTI-2 image at ``path`` (header read, data not), of the version its
    header declares, never another nibabel class that claims the file by its name (a CIFTI-2
    matrix is a NIfTI-2 file too)."""
    import nibabel as nib

    version = nifti_version(_nifti_head(path) if head is None else head)
    cls = nib.Nifti2Image if version == 2 else nib.Nifti1Image
    return cls.from_filename(str(path))


def _check_pixdim(path: Path, head: bytes) -> None:
    """Refuse a NIfTI whose voxel size is unknown, from the header as written. Without an
    sform, nibabel builds the affine from ``pixdim`` and takes a zero there as 1 mm (with a log
    line); measurements in mm and mL must not rest on that."""
    import nibabel as nib

    version = nifti_version(head)
    if version is None:
        return  # not a NIfTI header after all: nibabel says why
    cls = nib.Nifti2Header if version == 2 else nib.Nifti1Header
    little = head[:4] in (b"\x5c\x01\x00\x00", b"\x1c\x02\x00\x00")
    raw: Any = cls(
        binaryblock=head[: cls.sizeof_hdr], endianness="<" if little else ">", check=False
    )
    if int(raw["sform_code"]) != 0:
        return  # the sform gives the affine; _check_affine checks it
    spatial = max(min(int(raw["dim"][0]), 3), 1)
    pixdim = [float(v) for v in raw["pixdim"][1 : 1 + spatial]]
    if not all(math.isfinite(v) and v != 0 for v in pixdim):
        shown = ", ".join(f"{v:g}" for v in pixdim)
        raise InputError(
            f"{path}: NIfTI voxel size (pixdim) is {shown}: the size of a voxel in mm is unknown"
        )


def _check_affine(path: Path, img: Any) -> None:
    """Refuse a NIfTI whose affine (sform, qform or pixdim) gives no voxel size."""
    import numpy as np

    affine = np.asarray(img.affine, dtype=np.float64)
    spatial = min(len(img.shape), 3)
    if (
        not np.isfinite(affine).all()
        or not (np.linalg.norm(affine[:3, :spatial], axis=0) > 0).all()
    ):
        raise InputError(f"{path}: NIfTI affine gives no voxel size (a zero or non-finite column)")


def _nifti_header(path: Path, s: Settings) -> tuple[int, ...]:
    import numpy as np

    head = _nifti_head(path)
    _check_pixdim(path, head)
    try:
        img: Any = _open_nifti(path, head)
        shape = tuple(int(d) for d in img.shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * img.get_data_dtype().itemsize
    except Exception as exc:  # nibabel raises many types for broken headers
        raise InputError(f"{path}: not a readable NIfTI volume ({exc})") from None
    voxels = int(np.prod(shape, dtype=np.int64)) if shape else 0
    if len(shape) < 2 or voxels < 1:
        raise InputError(f"{path}: NIfTI header claims an empty volume of shape {shape}")
    if len(shape) > 4:
        raise InputError(
            f"{path}: NIfTI header claims {len(shape)} dimensions {shape}; a volume has 2 to 4 "
            "(a CIFTI matrix or a 5D field is not one)"
        )
    _check_affine(path, img)
    if voxels > s.max_volume_voxels:
        raise InputError(
            f"{path}: NIfTI header claims {voxels:,} voxels {shape}, over the limit of "
            f"{s.max_volume_voxels:,} (VLM_MAX_VOLUME_VOXELS)"
        )
    if not str(path).endswith(".gz") and sniff_format(path) == "nifti":
        offset = int(img.header.get("vox_offset", 352))
        if path.stat().st_size < offset + nbytes:
            raise InputError(
                f"{path}: NIfTI file is truncated ({path.stat().st_size:,} bytes, header needs "
                f"{offset + nbytes:,})"
            )
    return shape


def _check_file(path: Path, accepted: list[Kind] | None, s: Settings) -> tuple[str, Kind, int]:
    """The checks every file passes before its header is read: existence, size, format, kind."""
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
        what = "an unrecognised format" if fmt == "unknown" else f"a {fmt.upper()} file"
        allowed = ", ".join(
            sorted({f for f, k in ALLOWED.items() if not accepted or k in accepted})
        )
        raise InputError(f"{path}: content is {what}, not one of the allowed formats ({allowed})")
    if accepted is not None and kind not in accepted:
        wanted = ", ".join(str(k) for k in accepted) or "no input files"
        what = str(kind) if fmt == str(kind) else f"{fmt} {kind}"  # "a text", "a png image"
        raise InputError(f"{path}: is a {what}, but this task takes {wanted}")
    return fmt, kind, size


def probe_input(
    path: Path,
    accept: Iterable[Kind] | None = None,
    s: Settings | None = None,
    *,
    readers: Readers | None = None,
) -> Probe:
    """Check ``path`` from its header only; raise :class:`InputError` naming the problem.

    ``readers`` (the registry's, by format) probe the formats the core does not decode.
    """
    s = s or settings()
    fmt, kind, size = _check_file(path, list(accept) if accept is not None else None, s)
    return _probe_checked(path, fmt, kind, size, s, readers or {})


def _probe_checked(
    path: Path, fmt: str, kind: Kind, size: int, s: Settings, readers: Readers
) -> Probe:
    """Read the header of a file that passed :func:`_check_file`."""
    reader = readers.get(fmt)
    if reader is not None:
        shape = _reader_probe(reader, path, (path,), kind, s)
    elif kind is Kind.IMAGE:
        shape = _image_header(path, fmt, s)
    elif fmt in ("nifti", "nifti-gz"):
        shape = _nifti_header(path, s)
    elif kind is Kind.TEXT:
        if size > MAX_TEXT_BYTES:
            raise InputError(f"{path}: text input is {size:,} bytes, over {MAX_TEXT_BYTES:,}")
        shape = (size,)
    else:
        shape = ()
    return Probe(path=path, format=fmt, kind=kind, shape=shape, size_bytes=size)


def _call_reader(reader: InputReader, stage: str, *args: Any) -> Any:
    """Call one of a reader's functions; anything but a :class:`VLMError` is the plugin's bug."""
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


def _load_image(probe: Probe) -> Any:
    import numpy as np
    from PIL import Image as PILImage
    from PIL import ImageOps

    from vlm_core.types import Image

    try:
        with PILImage.open(probe.path, formats=[_PIL_FORMATS[probe.format]]) as opened:
            opened.load()
            im = ImageOps.exif_transpose(opened)
            if im.mode in ("I;16", "I;16B", "I;16L"):
                pixels = np.asarray(im, dtype=np.uint16)
            elif im.mode in ("I", "F"):
                pixels = np.asarray(im, dtype=np.float32)
            elif im.mode in ("L", "RGB", "RGBA"):
                pixels = np.asarray(im)
            elif im.mode == "1":
                pixels = np.asarray(im.convert("L"))
            else:  # P, PA, LA, CMYK, YCbCr, ...
                has_alpha = "A" in im.getbands() or "transparency" in im.info
                pixels = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{probe.path}: image data is truncated or corrupt ({exc})") from None
    return Image(pixels=np.ascontiguousarray(pixels), name=probe.path.stem, source=probe.path)


def _load_nifti(probe: Probe) -> Any:
    import numpy as np

    from vlm_core.types import Volume

    try:
        img: Any = _open_nifti(probe.path)
        array = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # truncated gzip streams, bad data offsets, ...
        raise InputError(f"{probe.path}: NIfTI data is truncated or corrupt ({exc})") from None
    if array.ndim > 4:
        raise InputError(f"{probe.path}: volumes of more than 4 dimensions are not supported")
    if array.ndim == 2:
        array = array[:, :, None]
    return Volume(array=array, affine=affine, name=_stem(probe.path), source=probe.path)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".gz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _load_with_reader(probe: Probe, reader: InputReader) -> Any:
    from vlm_core.types import Image, Text, Video, Volume

    expected: dict[Kind, type] = {
        Kind.IMAGE: Image,
        Kind.VOLUME: Volume,
        Kind.VIDEO: Video,
        Kind.TEXT: Text,
    }
    loaded = _call_reader(reader, "load", probe)
    wanted = expected[probe.kind]
    if not isinstance(loaded, wanted):
        got = type(loaded).__name__
        raise ReaderError(reader, "load", f"returned {got}, not a {wanted.__name__}")
    return loaded


def load_input(probe: Probe, readers: Readers | None = None) -> Any:
    """Decode a probed input into an :class:`Image`, :class:`Volume` or :class:`Text`.

    ``readers`` (the registry's, by format) decode the formats the core does not.
    """
    reader = (readers or {}).get(probe.format)
    if reader is not None:
        return _load_with_reader(probe, reader)
    if probe.kind is Kind.IMAGE:
        return _load_image(probe)
    if probe.format in ("nifti", "nifti-gz"):
        return _load_nifti(probe)
    if probe.kind is Kind.TEXT:
        from vlm_core.types import Text

        try:
            text = probe.path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{probe.path}: text is not valid UTF-8 ({exc.reason})") from None
        return Text(text=text, name=probe.path.stem, source=probe.path)
    raise InputError(
        f"{probe.path}: {probe.format} files are read by the plugins of their domain "
        "(DICOM by the medical plugin, video by the driving plugin), not by this task"
    )


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
    readers = readers or {}
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
    for candidate in found:
        try:
            fmt, kind, size = _check_file(candidate, accept, s)
            reader = readers.get(fmt)
            if reader is not None and reader.group is not None:
                pending.setdefault(fmt, []).append(candidate)
                kinds[fmt] = kind
                slots.append(candidate)
            else:
                checked = _probe_checked(candidate, fmt, kind, size, s, readers)
                check(checked)
                slots.append(checked)
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
    return usable, reasons


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
