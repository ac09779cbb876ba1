"""Measurements of a label map: per label and per lesion (connected component)."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np


def dice_score(pred: np.ndarray, target: np.ndarray, label: int = 1) -> float:
    """Dice of ``label`` between two label maps: 2|P∩T| / (|P| + |T|); 1.0 when both are
    empty (MONAI's DiceMetric with ``ignore_empty=False``)."""
    p, t = pred == label, target == label
    total = int(p.sum()) + int(t.sum())
    if total == 0:
        return 1.0
    return 2.0 * float(np.logical_and(p, t).sum()) / total


def _largest_diameter_mm(mask: np.ndarray, spacing: tuple[float, ...]) -> float:
    """The largest distance between two voxel centres of ``mask``, in mm (convex-hull based)."""
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist

    points = np.argwhere(mask).astype(np.float64) * np.asarray(spacing, dtype=np.float64)
    if len(points) < 2:
        return 0.0
    # a flat or degenerate region (a single slice) has no 3D hull: keep all its points
    with contextlib.suppress(QhullError):
        points = points[ConvexHull(points).vertices] if len(points) > 64 else points
    if len(points) > 4000:  # flat regions keep many hull points: subsample the extremes
        points = points[:: len(points) // 4000 + 1]
    return float(pdist(points).max())


def region_stats(
    mask: np.ndarray, spacing: tuple[float, ...], origin: tuple[int, ...] | None = None
) -> dict[str, float]:
    """Voxels, volume, largest diameter and bounding box of one region; ``mask`` may be cut
    to the region's box, whose first voxel is at ``origin`` in the whole map."""
    voxels = int(mask.sum())
    coords = np.argwhere(mask)
    shift = np.asarray(origin if origin is not None else (0,) * mask.ndim)
    low, high = coords.min(axis=0) + shift, coords.max(axis=0) + shift
    stats: dict[str, float] = {
        "voxels": float(voxels),
        "volume_ml": voxels * float(np.prod(spacing)) / 1000.0,
        "diameter_mm": round(_largest_diameter_mm(mask, spacing), 3),
    }
    for axis, (a, b) in enumerate(zip(low, high, strict=True)):
        stats[f"bbox_min_{'ijk'[axis]}"] = float(a)
        stats[f"bbox_max_{'ijk'[axis]}"] = float(b)
    return stats


def measure(
    labels: np.ndarray, spacing: tuple[float, ...], class_names: tuple[str, ...]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """``(summary, table)``: per label its totals, and per lesion (connected component, 26
    neighbours in 3D) its voxels, volume in ml, bounding box and largest diameter in mm."""
    from scipy import ndimage

    summary: dict[str, float] = {}
    table: dict[str, dict[str, float]] = {}
    structure = np.ones((3,) * labels.ndim, dtype=bool)
    for value in range(1, len(class_names)):
        mask = labels == value
        name = class_names[value]
        components, count = ndimage.label(mask, structure=structure)
        summary[f"{name}_count"] = float(count)
        summary[f"{name}_volume_ml"] = float(mask.sum()) * float(np.prod(spacing)) / 1000.0
        if not count:
            continue
        sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]  # voxels per region
        boxes = ndimage.find_objects(components)  # each region's box: work within it only
        for rank, index in enumerate(np.argsort(-sizes, kind="stable"), start=1):
            box = boxes[index]
            assert box is not None  # every label 1..count has voxels
            origin = tuple(int(part.start) for part in box)
            table[f"{name} {rank}"] = region_stats(components[box] == index + 1, spacing, origin)
    return summary, table


def fill_label_holes(labels: np.ndarray, values: list[int]) -> np.ndarray:
    """MONAI's ``FillHoles(applied_labels=values)`` (full connectivity; holes on the edge are
    open), in one connected-component labelling per value instead of a dilation iterated
    until nothing changes: the voxels not of ``value`` that no path of such voxels joins to
    the border become ``value``. The same labels (tested), about 4 times faster on a 64³
    map, and linear in the volume's size where the iterated dilation grows with the
    distance to the border."""
    from scipy import ndimage

    out = labels.copy()
    structure = np.ones((3,) * out.ndim, dtype=bool)
    for value in values:
        outside = out != value
        components, _ = ndimage.label(outside, structure=structure)
        faces = [
            np.take(components, end, axis=a).ravel() for a in range(out.ndim) for end in (0, -1)
        ]
        open_ = np.zeros(int(components.max()) + 1, dtype=bool)
        open_[np.concatenate(faces)] = True
        open_[0] = True  # 0: voxels of ``value`` themselves
        out[~open_[components]] = value
    return out


def postprocess(
    labels: np.ndarray, *, largest_only: bool, fill_holes: bool, min_voxels: int
) -> np.ndarray:
    """Fill holes (:func:`fill_label_holes`), drop components under ``min_voxels`` and optionally
    keep only the largest component of each label (MONAI's KeepLargestConnectedComponent)."""
    import torch
    from monai.transforms import KeepLargestConnectedComponent
    from scipy import ndimage

    out = labels.copy()
    values = [int(v) for v in np.unique(out) if v]
    if fill_holes and values:
        out = fill_label_holes(out, values)
    if min_voxels > 1:
        for value in values:
            components, count = ndimage.label(out == value, structure=np.ones((3,) * out.ndim))
            sizes = np.bincount(components.ravel(), minlength=count + 1)
            small = sizes < min_voxels
            small[0] = False  # the background
            out[small[components]] = 0
    if largest_only and values:
        keep = KeepLargestConnectedComponent(applied_labels=values, independent=True)
        out = np.asarray(keep(torch.as_tensor(out[None])))[0]
    return out.astype(labels.dtype)


def as_report(summary: dict[str, float], table: dict[str, dict[str, float]]) -> dict[str, Any]:
    return {"summary": summary, "lesions": table}
