"""The core kinds' JSON summaries (``result.json``, ``vlm run --json``) and ``vlm run`` lines.

A summary holds the full data of small outputs (boxes, captions, metrics) and the shape of
large ones (images, volumes); :class:`~vlm_core.outputs.kind.OutputKind` adds ``"kind"``. A line
is made from the summary, since ``vlm run`` keeps only summaries (memory stays flat).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from vlm_core.types import (
    Attribution,
    Boxes,
    Caption,
    Embeddings,
    File,
    Image,
    ImageSet,
    Mask,
    Metrics,
    Reply,
    Scene,
    Text,
    Tracks,
    Video,
    Volume,
)


def box_items(boxes: Boxes) -> list[dict[str, Any]]:
    """One JSON object per box: ``track_id`` (tracked boxes only), ``label``, ``score`` and
    ``xyxy`` (pixel corners)."""
    items = []
    for i in range(len(boxes)):
        item: dict[str, Any] = {}
        if boxes.track_ids is not None:
            item["track_id"] = int(boxes.track_ids[i])
        item["label"] = boxes.labels[i]
        item["score"] = round(float(boxes.scores[i]), 6)
        item["xyxy"] = [round(v, 3) for v in boxes.xyxy[i].tolist()]
        items.append(item)
    return items


def image_summary(image: Image) -> dict[str, Any]:
    """Shape and dtype, and the image's name when it has one (what made it: a generated
    image's style and seed)."""
    named = {"name": image.name} if image.name else {}
    return {"shape": list(image.pixels.shape), "dtype": str(image.pixels.dtype), **named}


def volume_summary(volume: Volume) -> dict[str, Any]:
    return {
        "shape": list(volume.array.shape),
        "spacing_mm": list(volume.spacing),
        "affine": volume.affine.tolist(),
    }


def video_summary(video: Video) -> dict[str, Any]:
    return {"frames": int(video.frames.shape[0]), "fps": video.fps}


def scene_summary(scene: Scene) -> dict[str, Any]:
    """Frames, points per sweep, the camera's image size, the calibration, and the reader's
    warnings."""
    first = scene.images[0]
    return {
        "name": scene.name,
        "frames": len(scene),
        "frame_ids": [scene.frame_id(t) for t in range(len(scene))],
        "points": [len(cloud) for cloud in scene.clouds],
        "image_size": [first.height, first.width],
        "fps": scene.fps,
        "projection": scene.projection.tolist(),
        "lidar_to_camera": scene.lidar_to_camera.tolist(),
        "warnings": list(scene.warnings),
    }


def text_summary(text: Text) -> dict[str, Any]:
    return {"text": text.text}


def boxes_summary(boxes: Boxes) -> dict[str, Any]:
    return {"image_size": list(boxes.image_size), "boxes": box_items(boxes)}


def tracks_summary(tracks: Tracks) -> dict[str, Any]:
    """Frames, fps, image size, counts of tracks and boxes, boxes per class, and per track its
    id, label, first and last frame, frames seen and mean score."""
    per_class = dict.fromkeys(tracks.all_class_names, 0)
    for boxes in tracks.frames:
        for label in boxes.labels:
            per_class[label] += 1
    per_track = tracks.track_summaries()
    return {
        "frames": len(tracks),
        "fps": tracks.fps,
        "image_size": list(tracks.image_size),
        "num_tracks": len(per_track),
        "num_boxes": tracks.num_boxes,
        "boxes_per_class": per_class,
        "tracks": [
            {**dataclasses.asdict(track), "mean_score": round(track.mean_score, 6)}
            for track in per_track
        ],
    }


def mask_summary(mask: Mask) -> dict[str, Any]:
    """Shape, class names and the pixels (voxels) of each class present."""
    labels = mask.labels.reshape(-1)
    if labels.size and np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0:
        counted = np.bincount(labels)  # linear, where np.unique sorts (10x the CPU at 64³)
        values = np.flatnonzero(counted)
        counts = counted[values]
    else:
        values, counts = np.unique(labels, return_counts=True)
    pixels = {mask.class_names[int(v)]: int(c) for v, c in zip(values, counts, strict=True)}
    return {"shape": list(mask.labels.shape), "class_names": list(mask.class_names),
            "counts": pixels}  # fmt: skip


def caption_summary(caption: Caption) -> dict[str, Any]:
    return {"text": caption.text, "score": caption.score, "tags": dict(caption.tags)}


def reply_summary(reply: Reply) -> dict[str, Any]:
    return {
        "text": reply.text,
        "confidence": reply.confidence,
        "clarifying_question": reply.clarifying_question,
        "evidence": dict(reply.evidence),
    }


def image_set_summary(images: ImageSet) -> dict[str, Any]:
    """The count, the labels, and the images' names when they have them."""
    names = [image.name for image in images.images]
    named = {"names": names} if any(names) else {}
    return {"count": len(images.images), "labels": list(images.labels), **named}


def embeddings_summary(emb: Embeddings) -> dict[str, Any]:
    return {"shape": list(emb.vectors.shape), "ids": list(emb.ids), "model": emb.model}


def metrics_summary(metrics: Metrics) -> dict[str, Any]:
    return {
        "values": dict(metrics.values),
        "per_class": {k: dict(v) for k, v in metrics.per_class.items()},
    }


def attribution_summary(attribution: Attribution) -> dict[str, Any]:
    """What was explained, how, the map's peak on its background's grid and the raw values'
    shape; the faithfulness areas (curves included) and the method's details."""
    heat = attribution.heat
    peak = [int(i) for i in np.unravel_index(int(heat.argmax()), heat.shape)] if heat.size else []
    return {
        "method": attribution.method,
        "target": attribution.target,
        "score": float(attribution.score),
        "grid": list(heat.shape),
        "values_shape": list(attribution.values.shape),
        "peak": peak,
        "faithfulness": dict(attribution.faithfulness),
        "details": dict(attribution.details),
    }


def file_summary(file: File) -> dict[str, Any]:
    return {
        "suffix": file.suffix,
        "media_type": file.media_type,
        "bytes": len(file.data),
        "sha256": hashlib.sha256(file.data).hexdigest(),
        "description": file.description,
    }


# ------------------------------------------------------------------ `vlm run` lines


def image_line(summary: Mapping[str, Any]) -> str:
    """``128x96 'astronaut-in-style-seed0'``: width x height, and the name when it has one."""
    height, width = summary["shape"][:2]
    name = summary.get("name")
    return f"{width}x{height}" + (f" {name!r}" if name else "")


#: How many labels of an image set `vlm run` prints before "and N more".
SHOWN_LABELS = 4


def image_set_line(summary: Mapping[str, Any]) -> str:
    """``8 images: brush, seed 3 #0; circles, seed 3 #1; ... and 4 more``."""
    count, labels = summary["count"], list(summary.get("labels") or [])
    text = f"{count} image{'s' if count != 1 else ''}"
    if labels:
        text += ": " + "; ".join(labels[:SHOWN_LABELS])
        if len(labels) > SHOWN_LABELS:
            text += f" and {len(labels) - SHOWN_LABELS} more"
    return text


def scene_line(summary: Mapping[str, Any]) -> str:
    """``1 frame, 41,233 points, camera 640x360`` (a sequence: the mean points per sweep)."""
    frames, points = summary["frames"], summary["points"]
    height, width = summary["image_size"]
    per = (
        f"{round(sum(points) / len(points)):,} points per sweep"
        if frames > 1
        else f"{points[0]:,} points"
    )
    return f"{frames} frame{'s' if frames != 1 else ''}, {per}, camera {width}x{height}"


def text_line(summary: Mapping[str, Any]) -> str:
    """Text, captions and replies: the text, quoted."""
    return repr(summary["text"])


def boxes_line(summary: Mapping[str, Any]) -> str:
    return f"{len(summary['boxes'])} boxes"


def tracks_line(summary: Mapping[str, Any]) -> str:
    return (
        f"{summary['num_tracks']} tracks, {summary['num_boxes']} boxes "
        f"in {summary['frames']} frames"
    )


def mask_line(summary: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in summary["counts"].items())


def metrics_line(summary: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in summary["values"].items())


def attribution_line(summary: Mapping[str, Any]) -> str:
    """``integrated_gradients of logit of class 'lesion'; deletion AUC 0.12 (random 0.45)``."""
    line = f"{summary['method']} of {summary['target']}"
    scores = summary.get("faithfulness") or {}
    if "deletion_auc" in scores:
        line += (
            f"; deletion AUC {scores['deletion_auc']:.3g} (random "
            f"{scores['deletion_auc_random']:.3g}), insertion AUC {scores['insertion_auc']:.3g} "
            f"(random {scores['insertion_auc_random']:.3g})"
        )
    return line


def file_line(summary: Mapping[str, Any]) -> str:
    return f"{summary['bytes']:,} bytes ({summary['media_type']})"
