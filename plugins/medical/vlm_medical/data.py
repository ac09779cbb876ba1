"""Segmentation data sets on disk: a Medical Segmentation Decathlon ``dataset.json``, or
``images/`` and ``labels/`` folders whose files pair up by name (NIfTI volumes or 2D images;
2D images may also be PNG, whose label values are the class indices)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlm_core.errors import InputError

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".png")


@dataclass(frozen=True)
class SegmentationData:
    """Image/label pairs for training and validation, and the label names."""

    train: list[dict[str, str]]
    val: list[dict[str, str]]
    class_names: tuple[str, ...]


def _volumes(folder: Path) -> dict[str, Path]:
    return {
        p.name: p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name.endswith(VOLUME_SUFFIXES) and not p.name.startswith(".")
    }


def _from_manifest(
    root: Path,
) -> tuple[list[dict[str, str]], list[dict[str, str]], tuple[str, ...]]:
    path = root / "dataset.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        labels = manifest.get("labels") or {"0": "background", "1": "foreground"}
        names = tuple(str(labels[k]) for k in sorted(labels, key=int))

        def pairs(key: str) -> list[dict[str, str]]:
            out = []
            for entry in manifest.get(key) or []:
                image, label = root / entry["image"], root / entry["label"]
                for file in (image, label):
                    if not file.is_file():
                        raise InputError(
                            f"{path}: lists {file.relative_to(root)}, which is missing"
                        )
                out.append({"image": str(image), "label": str(label)})
            return out

        return pairs("training"), pairs("validation"), names
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{path}: not a usable dataset.json ({type(exc).__name__}: {exc})"
        ) from None


def read_dataset(root: Path, *, val_fraction: float, seed: int) -> SegmentationData:
    """The pairs under ``root``. Without an explicit validation list, ``val_fraction`` of the
    training pairs (at least one) are held out, chosen with ``seed``."""
    if (root / "dataset.json").is_file():
        train, val, names = _from_manifest(root)
    elif (root / "images").is_dir() and (root / "labels").is_dir():
        images, labels = _volumes(root / "images"), _volumes(root / "labels")
        missing = sorted(set(images) ^ set(labels))
        if missing:
            raise InputError(f"{root}: images and labels do not pair up ({', '.join(missing[:3])})")
        train = [{"image": str(images[k]), "label": str(labels[k])} for k in sorted(images)]
        val, names = [], ("background", "lesion")
    else:
        raise InputError(
            f"{root}: expected a dataset.json (Medical Segmentation Decathlon layout) or "
            "images/ and labels/ folders of NIfTI (or, for 2D, PNG) files"
        )
    if not val and train:
        order = np.random.RandomState(seed).permutation(len(train))
        n_val = max(1, round(len(train) * val_fraction))
        val = [train[i] for i in order[:n_val]]
        train = [train[i] for i in sorted(order[n_val:])]
    if not train and not val:
        raise InputError(f"{root}: the data set lists no image/label pairs")
    return SegmentationData(train=train, val=val, class_names=names)


def spatial_dims_of(path: Path) -> int:
    """2 or 3: the spatial dimensions of an image file, from its header (a trailing axis of
    length 1 does not count: a (W, H, 1) NIfTI is 2D)."""
    if path.name.lower().endswith(".png"):
        return 2
    import nibabel as nib

    try:
        shape = tuple(nib.load(str(path)).shape)
    except Exception as exc:  # nibabel raises several types for a bad header
        raise InputError(f"{path}: not a readable NIfTI header ({type(exc).__name__})") from None
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return len(shape)
