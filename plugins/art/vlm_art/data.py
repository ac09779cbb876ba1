"""Reading an image folder for training: one sub-folder per style (labelled) or images directly
in the folder (unlabelled)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlm_core.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass(frozen=True)
class ImageFolder:
    """Images (N, 3, S, S) float32 in [-1, 1], labels (N,) int64 (zeros when unlabelled) and
    the class names (sub-folder names, sorted; empty when unlabelled)."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _load(path: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from exc
    if rgb.size != (size, size):
        side = min(rgb.size)  # centre crop to a square, then resize
        left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
        rgb = rgb.crop((left, top, left + side, top + side)).resize(
            (size, size), Image.Resampling.LANCZOS
        )
    return np.asarray(rgb, np.float32).transpose(2, 0, 1) / 127.5 - 1.0


def read_folder(root: Path, size: int, *, labelled: bool = True) -> ImageFolder:
    """Read ``root``: sub-folders holding images are classes (when ``labelled``); otherwise
    the images in ``root`` and its sub-folders form one unlabelled set."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--data {root} is not a folder of images")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and _images_in(d))
    files: list[tuple[Path, int]] = []
    names: tuple[str, ...] = ()
    if subdirs and labelled:
        names = tuple(d.name for d in subdirs)
        files = [(p, i) for i, d in enumerate(subdirs) for p in _images_in(d)]
    else:
        files = [(p, 0) for p in _images_in(root)]
        files += [(p, 0) for d in subdirs for p in _images_in(d)]
    if not files:
        raise InputError(
            f"no images in {root} (expected PNG/JPEG files, or one sub-folder of them per style)"
        )
    images = np.stack([_load(p, size) for p, _ in files])
    labels = np.asarray([label for _, label in files], np.int64)
    return ImageFolder(images, labels, names)
