"""NIfTI writing for volumes and volume masks."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from vlm_core.fileio import atomic_write_bytes


def write_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """Write ``array`` with ``affine`` (voxel → mm) as gzipped NIfTI-1, atomically."""
    import nibabel as nib

    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype == np.int64:
        array = array.astype(np.int32)
    img = nib.Nifti1Image(array, affine)
    img.header.set_sform(affine, code=1)
    img.header.set_qform(affine, code=1)
    raw = img.to_bytes()
    atomic_write_bytes(path, gzip.compress(raw, compresslevel=6, mtime=0))
    return path
