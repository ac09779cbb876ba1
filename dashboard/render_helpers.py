"""What the output renderers show, computed with numpy only so it can be tested without Streamlit.

Volumes are shown in the closest RAS orientation of their affine: axis 0 runs to the patient's
right (sagittal slices), axis 1 to anterior (coronal), axis 2 to superior (axial). Slices are
rotated for display so that anterior (axial) or superior (coronal, sagittal) points up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vlm_core.export.images import colour
from vlm_core.outputs.summaries import box_items
from vlm_core.types import Boxes, Embeddings, Mask, Provenance

#: Window presets: name → (level, width) in the volume's units (Hounsfield units for CT), or
#: None for an automatic window from the volume's 1st to 99th percentile (MR, anything else).
WINDOW_PRESETS: dict[str, tuple[float, float] | None] = {
    "CT soft tissue": (40.0, 400.0),
    "CT lung": (-600.0, 1500.0),
    "CT bone": (400.0, 1800.0),
    "Brain": (40.0, 80.0),
    "MR / auto": None,
}

#: Slice planes and the RAS array axis each one cuts across, in the order they are shown.
AXES: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}

_AUTO_SAMPLE_VOXELS = 1 << 20  # the auto window reads at most about this many voxels


def as_closest_ras(
    array: np.ndarray, affine: np.ndarray
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Permute and flip the first three axes of ``array`` to the RAS order closest to ``affine``.

    Returns a view of ``array`` and the voxel spacing in millimetres along the new axes. An
    affine whose axes do not map one-to-one onto world axes leaves the array as it is.
    """
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    direction = m / np.where(spacing > 0, spacing, 1.0)
    world = np.argmax(np.abs(direction), axis=0)  # the world axis each voxel axis follows
    if sorted(world.tolist()) != [0, 1, 2]:
        return array, (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    out = array
    for axis in range(3):
        if direction[world[axis], axis] < 0:
            out = np.flip(out, axis=axis)
    order = np.argsort(world)  # order[w] is the voxel axis that follows world axis w
    out = np.transpose(out, (*order.tolist(), *range(3, out.ndim)))
    return out, (float(spacing[order[0]]), float(spacing[order[1]]), float(spacing[order[2]]))


def _axis(axis: int | str) -> int:
    if isinstance(axis, str):
        if axis not in AXES:
            raise ValueError(f"unknown slice plane {axis!r}; expected one of {sorted(AXES)}")
        return AXES[axis]
    if axis not in (0, 1, 2):
        raise ValueError(f"slice axis must be 0, 1 or 2, got {axis}")
    return axis


def slice_2d(array: np.ndarray, axis: int | str, index: int) -> np.ndarray:
    """The display-oriented 2D slice at ``index`` across ``axis`` of a 3D array.

    ``axis`` is a plane name from :data:`AXES` or an array axis. Shapes for an (X, Y, Z) array:
    axial (Y, X), coronal (Z, X), sagittal (Z, Y).
    """
    a = _axis(axis)
    if not 0 <= index < array.shape[a]:
        raise IndexError(f"slice {index} is outside 0..{array.shape[a] - 1} on axis {a}")
    return np.rot90(np.take(array, index, axis=a))


def slice_spacing(spacing: tuple[float, float, float], axis: int | str) -> tuple[float, float]:
    """(row, column) pixel size in millimetres of the slice :func:`slice_2d` returns."""
    a = _axis(axis)
    rest = [spacing[i] for i in range(3) if i != a]
    return rest[1], rest[0]  # rot90 turns the last in-plane axis into rows


def window_bounds(volume_array: np.ndarray, preset: str) -> tuple[float, float]:
    """(low, high) values that map to black and white for a preset of :data:`WINDOW_PRESETS`."""
    if preset not in WINDOW_PRESETS:
        raise ValueError(
            f"unknown window preset {preset!r}; expected one of {list(WINDOW_PRESETS)}"
        )
    window = WINDOW_PRESETS[preset]
    if window is not None:
        level, width = window
        return level - width / 2, level + width / 2
    step = max(1, int(np.ceil((volume_array.size / _AUTO_SAMPLE_VOXELS) ** (1 / 3))))
    sample = np.asarray(volume_array[::step, ::step, ::step], dtype=np.float32).ravel()
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(sample, [1.0, 99.0]))
    return low, high if high > low else low + 1.0


def window_slice(
    volume_array: np.ndarray,
    axis: int | str,
    index: int,
    preset: str,
    bounds: tuple[float, float] | None = None,
) -> np.ndarray:
    """A uint8 slice of a 3D volume, windowed by ``preset`` (or by precomputed ``bounds``).

    Values at or below the window's low end are 0, at or above its high end 255; NaN is 0.
    """
    low, high = bounds if bounds is not None else window_bounds(volume_array, preset)
    plane = slice_2d(volume_array, axis, index).astype(np.float32)
    scaled = np.nan_to_num((plane - low) / max(high - low, 1e-12) * 255.0, nan=0.0)
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def stretch_to_spacing(pixels: np.ndarray, row_mm: float, col_mm: float) -> np.ndarray:
    """Repeat rows or columns (nearest neighbour, at most 8x) so pixels look square in mm."""
    if row_mm <= 0 or col_mm <= 0:
        return pixels
    ratio = row_mm / col_mm
    if ratio >= 1.5:
        return np.repeat(pixels, min(round(ratio), 8), axis=0)
    if ratio <= 1 / 1.5:
        return np.repeat(pixels, min(round(1 / ratio), 8), axis=1)
    return pixels


def mask_centre(labels: np.ndarray) -> tuple[int, ...]:
    """Voxel index of the centre of the labelled region's bounding box (the array centre if empty).

    Slice viewers open here so the segmented structure is in view.
    """
    centre = []
    for axis, n in enumerate(labels.shape):
        others = tuple(a for a in range(labels.ndim) if a != axis)
        hit = np.flatnonzero(np.any(labels, axis=others))
        if hit.size == 0:
            return tuple(n // 2 for n in labels.shape)
        centre.append(int(hit[0] + hit[-1]) // 2)
    return tuple(centre)


def legend_rows(mask: Mask) -> list[dict[str, Any]]:
    """One row per class: label value, name, overlay colour (``#rrggbb``, None for background)
    and how many pixels (voxels for 3D masks) carry it, with that count as a percentage."""
    flat = mask.labels.ravel()
    flat = flat[flat >= 0] if np.issubdtype(flat.dtype, np.signedinteger) else flat
    counts = np.bincount(flat.astype(np.intp, copy=False), minlength=len(mask.class_names))
    total = max(int(mask.labels.size), 1)
    rows = []
    for value, name in enumerate(mask.class_names):
        # mask_overlay paints label v with PALETTE[v - 1]; label 0 stays transparent
        hex_colour = "#{:02x}{:02x}{:02x}".format(*colour(value - 1)) if value else None
        count = int(counts[value])
        rows.append(
            {
                "value": value,
                "class": name,
                "colour": hex_colour,
                "count": count,
                "percent": round(100.0 * count / total, 3),
            }
        )
    return rows


def blend(base: np.ndarray, top: np.ndarray, opacity: float) -> np.ndarray:
    """(1 - opacity) · base + opacity · top for two (H, W, 3) uint8 images."""
    if base.shape != top.shape:
        raise ValueError(f"cannot blend images of shapes {base.shape} and {top.shape}")
    mixed = (1.0 - opacity) * base.astype(np.float32) + opacity * top.astype(np.float32)
    return np.rint(mixed).astype(np.uint8)


def boxes_rows(boxes: Boxes) -> list[dict[str, Any]]:
    """One row per box: label, score, pixel corners x1, y1, x2, y2 and the track id if any."""
    rows = []
    for item in box_items(boxes):
        x1, y1, x2, y2 = item.pop("xyxy")
        rows.append({**item, "x1": x1, "y1": y1, "x2": x2, "y2": y2})
    return rows


def embedding_rows(embeddings: Embeddings, rows: int = 20, dims: int = 8) -> list[dict[str, Any]]:
    """The first ``rows`` vectors: id, L2 norm and the first ``dims`` components."""
    head = np.asarray(embeddings.vectors[:rows], dtype=np.float64)
    norms = np.linalg.norm(head, axis=1)
    out = []
    for i in range(head.shape[0]):
        row: dict[str, Any] = {"id": embeddings.ids[i], "norm": round(float(norms[i]), 6)}
        row.update({f"d{j}": round(float(v), 6) for j, v in enumerate(head[i, :dims])})
        out.append(row)
    return out


def provenance_rows(provenance: Provenance) -> list[dict[str, str]]:
    """How a result was made as (field, value) rows of text, for a two-column table."""
    p = provenance

    def pairs(mapping: Any, unit: str = "") -> str:
        return ", ".join(f"{k}={v}{unit}" for k, v in mapping.items()) or "—"

    fields = {
        "run id": p.run_id,
        "task": p.task,
        "plugin": f"{p.plugin} {p.plugin_version or '(in-process)'}",
        "core": p.core_version,
        "device": p.device,
        "dtype": p.dtype,
        "seed": str(p.seed),
        "params": pairs(p.params),
        "weights sha256": pairs(p.weights_sha256),
        "started at": p.started_at,
        "timings": pairs({k: round(float(v), 1) for k, v in p.timings_ms.items()}, " ms"),
    }
    rows = [{"field": k, "value": v} for k, v in fields.items()]
    rows += [
        {"field": f"input sha256 ({r.kind})", "value": f"{r.sha256}  {r.path}"} for r in p.inputs
    ]
    return rows


#: How the attribution methods are named on screen (the CLI's names are the keys).
METHOD_LABELS: dict[str, str] = {
    "gradcam": "Grad-CAM",
    "rollout": "Attention rollout",
    "integrated_gradients": "Integrated Gradients",
    "occlusion": "Occlusion",
    "kernel_shap": "KernelSHAP",
    "lime": "LIME",
}


def method_label(method: str) -> str:
    """``integrated_gradients`` → ``Integrated Gradients``; an unknown method keeps its name."""
    return METHOD_LABELS.get(method, method)


def salient_slice(heat: np.ndarray, axis: int = 2) -> int:
    """The index along ``axis`` of the slice holding the most heat (a volume's attribution
    viewer opens there); the first slice when the map is empty."""
    others = tuple(a for a in range(heat.ndim) if a != axis)
    totals = np.nan_to_num(np.asarray(heat, dtype=np.float64)).sum(axis=others)
    return int(np.argmax(totals)) if totals.size else 0


def faithfulness_verdict(scores: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether a scored map beats a random order of its pixels on both curves, in plain words.

    Deletion: removing the map's top pixels first should drop the explained number faster
    than removing them in a random order (a lower area); insertion: putting them back first
    should raise it faster (a higher area).
    """
    deletion = bool(scores.get("deletion_better_than_random"))
    insertion = bool(scores.get("insertion_better_than_random"))
    if deletion and insertion:
        return True, "the map ranks pixels better than a random order"
    if deletion or insertion:
        better, worse = ("deletion", "insertion") if deletion else ("insertion", "deletion")
        return False, (
            f"mixed: the map ranks pixels better than a random order on {better} but not on {worse}"
        )
    return False, "the map ranks pixels not better than a random order"


def faithfulness_curves(scores: Mapping[str, Any]) -> dict[str, list[float]]:
    """The deletion and insertion curves by the percentage of pixels removed (deletion) or
    put back (insertion), for a line chart; empty when the score has no curves."""
    deletion = list(scores.get("deletion_curve") or [])
    insertion = list(scores.get("insertion_curve") or [])
    if not deletion or len(deletion) != len(insertion):
        return {}
    steps = max(len(deletion) - 1, 1)
    return {
        "percent of pixels": [round(100.0 * i / steps, 3) for i in range(len(deletion))],
        "deletion": [float(v) for v in deletion],
        "insertion": [float(v) for v in insertion],
    }
