"""Probe and load input files safely.

:func:`probe_input` reads only a file's header: it detects the format by content, checks it
against the allow-list and the caps in :class:`~vlm_core.config.Settings`, and fails with a
one-line :class:`~vlm_core.errors.InputError` before any pixel data is decoded.
:func:`load_input` then decodes a probed file into a core type.
"""

from __future__ import annotations

import glob
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_core.config import Settings, settings
from vlm_core.errors import InputError
from vlm_core.fileio import sha256_file
from vlm_core.io.sniff import ALLOWED, sniff_format
from vlm_core.kinds import Kind

log = logging.getLogger("vlm.io")

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "bmp": "BMP", "webp": "WEBP"}
MAX_TEXT_BYTES = 1 << 20


@dataclass(frozen=True)
class Probe:
    """A file that passed the header checks: its format, kind and header-reported shape."""

    path: Path
    format: str
    kind: Kind
    shape: tuple[int, ...]
    size_bytes: int

    def sha256(self) -> str:
        return sha256_file(self.path)


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


def _nifti_header(path: Path, s: Settings) -> tuple[int, ...]:
    import nibabel as nib
    import numpy as np

    try:
        img: Any = nib.load(str(path))
        shape = tuple(int(d) for d in img.shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * img.get_data_dtype().itemsize
    except Exception as exc:  # nibabel raises many types for broken headers
        raise InputError(f"{path}: not a readable NIfTI volume ({exc})") from None
    voxels = int(np.prod(shape, dtype=np.int64)) if shape else 0
    if len(shape) < 2 or voxels < 1:
        raise InputError(f"{path}: NIfTI header claims an empty volume of shape {shape}")
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


def probe_input(
    path: Path, accept: Iterable[Kind] | None = None, s: Settings | None = None
) -> Probe:
    """Check ``path`` from its header only; raise :class:`InputError` naming the problem."""
    s = s or settings()
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
    accepted = list(accept) if accept is not None else None
    if kind is None:
        what = "an unrecognised format" if fmt == "unknown" else f"a {fmt.upper()} file"
        allowed = ", ".join(
            sorted({f for f, k in ALLOWED.items() if not accepted or k in accepted})
        )
        raise InputError(f"{path}: content is {what}, not one of the allowed formats ({allowed})")
    if accepted is not None and kind not in accepted:
        wanted = ", ".join(str(k) for k in accepted) or "no input files"
        raise InputError(f"{path}: is a {fmt} {kind}, but this task takes {wanted}")
    if kind is Kind.IMAGE:
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
    import nibabel as nib
    import numpy as np

    from vlm_core.types import Volume

    try:
        img: Any = nib.load(str(probe.path))
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


def load_input(probe: Probe) -> Any:
    """Decode a probed file into an :class:`Image`, :class:`Volume` or :class:`Text`."""
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
    args: Sequence[str], accept: Sequence[Kind], s: Settings | None = None
) -> list[Probe]:
    """Expand files, folders and globs into probed inputs.

    Files named explicitly must be usable; files found in folders or by globs that do not fit
    are skipped (logged), and a folder or glob that yields nothing usable is an error.
    """
    s = s or settings()
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
            usable, reasons = [], []
            for candidate in found:
                try:
                    usable.append(probe_input(candidate, accept, s))
                except InputError as exc:
                    reasons.append(str(exc))
                    log.info("skipping %s", exc)
            if not usable:
                kinds = ", ".join(str(k) for k in accept)
                detail = f" ({len(found)} files, none usable; first: {reasons[0]})" if found else ""
                raise InputError(
                    f"{where} has no usable inputs for this task (takes {kinds}){detail}"
                )
            probes += usable
        else:
            probes.append(probe_input(path, accept, s))
    return probes


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)
