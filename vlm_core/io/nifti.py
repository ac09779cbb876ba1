"""The core's reader for NIfTI-1 and NIfTI-2 volumes (plain or gzipped), through nibabel.

Registered like a plugin's reader by :mod:`vlm_core.io.core_readers`; nibabel is imported when
the first volume is read. The probe refuses, from the header alone, what would load as a wrong
measurement: no voxel size, more than 4 dimensions (a CIFTI matrix), a truncated file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlm_core.config import settings
from vlm_core.errors import InputError
from vlm_core.io.sniff import HEAD_BYTES, gzip_head, nifti_version, sniff_format

if TYPE_CHECKING:
    from vlm_core.io.probe import Probe
    from vlm_core.types import Volume


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


def probe_nifti(files: Sequence[Path]) -> tuple[int, ...]:
    """The volume's shape from its header (2 to 4 dimensions); the voxel cap
    (``VLM_MAX_VOLUME_VOXELS``), the voxel size and, for an uncompressed file, its length are
    checked."""
    import numpy as np

    path = files[0]
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
    limit = settings().max_volume_voxels
    if voxels > limit:
        raise InputError(
            f"{path}: NIfTI header claims {voxels:,} voxels {shape}, over the limit of "
            f"{limit:,} (VLM_MAX_VOLUME_VOXELS)"
        )
    if not str(path).endswith(".gz") and sniff_format(path) == "nifti":
        offset = int(img.header.get("vox_offset", 352))
        if path.stat().st_size < offset + nbytes:
            raise InputError(
                f"{path}: NIfTI file is truncated ({path.stat().st_size:,} bytes, header needs "
                f"{offset + nbytes:,})"
            )
    return shape


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".gz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def load_nifti(probe: Probe) -> Volume:
    """The volume with its affine; a 2D image becomes one slice (``X, Y, 1``)."""
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
