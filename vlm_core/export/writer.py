"""Write results to an output folder: per-item files, run-level files and JSON summaries."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vlm_core.export.boxes import CocoBuilder, yolo_lines
from vlm_core.export.images import (
    GIF_MAX_FRAMES,
    boxes_overlay,
    encode_gif,
    mask_overlay,
    small_video,
    write_image,
)
from vlm_core.export.video import as_rgb_frames, encode_mp4, frame_index, mp4_available
from vlm_core.export.volumes import write_nifti
from vlm_core.fileio import atomic_write_bytes, atomic_write_text
from vlm_core.outdir import safe_name
from vlm_core.types import (
    Boxes,
    Caption,
    Embeddings,
    File,
    Image,
    ImageSet,
    Mask,
    Metrics,
    Output,
    Reply,
    Result,
    Text,
    Tracks,
    Video,
    Volume,
)


@dataclass(frozen=True)
class ExportOptions:
    """How images are written."""

    image_format: Literal["png", "jpeg"] = "png"
    jpeg_quality: int = 95  # 1..100, JPEG only
    overlay_opacity: float = 0.5  # 0..1, weight of the label colour in overlays


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, indent=2, ensure_ascii=False)


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


def tracks_summary(tracks: Tracks) -> dict[str, Any]:
    """Frames, fps, image size, counts of tracks and boxes, boxes per class, and per track its
    id, label, first and last frame, frames seen and mean score."""
    per_class = dict.fromkeys(tracks.all_class_names, 0)
    for boxes in tracks.frames:
        for label in boxes.labels:
            per_class[label] += 1
    per_track = tracks.track_summaries()
    return {
        "kind": str(tracks.kind),
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


def output_summary(output: Output) -> dict[str, Any]:
    """A JSON-friendly summary of one output (full data for small outputs)."""
    kind = str(output.kind)
    if isinstance(output, Boxes):
        return {"kind": kind, "image_size": list(output.image_size), "boxes": box_items(output)}
    if isinstance(output, Tracks):
        return tracks_summary(output)
    if isinstance(output, Mask):
        values, counts = np.unique(output.labels, return_counts=True)
        pixels = {output.class_names[int(v)]: int(c) for v, c in zip(values, counts, strict=True)}
        return {
            "kind": kind,
            "shape": list(output.labels.shape),
            "class_names": list(output.class_names),
            "counts": pixels,
        }
    if isinstance(output, Image):
        return {"kind": kind, "shape": list(output.pixels.shape), "dtype": str(output.pixels.dtype)}
    if isinstance(output, Volume):
        return {
            "kind": kind,
            "shape": list(output.array.shape),
            "spacing_mm": list(output.spacing),
            "affine": output.affine.tolist(),
        }
    if isinstance(output, Video):
        return {"kind": kind, "frames": int(output.frames.shape[0]), "fps": output.fps}
    if isinstance(output, Text):
        return {"kind": kind, "text": output.text}
    if isinstance(output, Caption):
        return {"kind": kind, "text": output.text, "score": output.score, "tags": dict(output.tags)}
    if isinstance(output, Reply):
        return {
            "kind": kind,
            "text": output.text,
            "confidence": output.confidence,
            "clarifying_question": output.clarifying_question,
            "evidence": dict(output.evidence),
        }
    if isinstance(output, ImageSet):
        return {"kind": kind, "count": len(output.images), "labels": list(output.labels)}
    if isinstance(output, Embeddings):
        return {
            "kind": kind,
            "shape": list(output.vectors.shape),
            "ids": list(output.ids),
            "model": output.model,
        }
    if isinstance(output, Metrics):
        return {
            "kind": kind,
            "values": dict(output.values),
            "per_class": {k: dict(v) for k, v in output.per_class.items()},
        }
    if isinstance(output, File):
        return {
            "kind": kind,
            "suffix": output.suffix,
            "media_type": output.media_type,
            "bytes": len(output.data),
            "sha256": hashlib.sha256(output.data).hexdigest(),
            "description": output.description,
        }
    raise TypeError(f"no exporter for output type {type(output).__name__}")


def result_summary(result: Result) -> dict[str, Any]:
    """What ``result.json`` holds: task, input, output summaries, provenance, and the warnings
    the input came with (what its reader had to assume, e.g. a volume's slice spacing)."""
    return {
        "task": result.task,
        "input": result.provenance.inputs[0].path if result.provenance.inputs else None,
        "outputs": {name: output_summary(out) for name, out in result.outputs.items()},
        "warnings": list(getattr(result.input, "warnings", ())),
        "provenance": dataclasses.asdict(result.provenance),
    }


def video_under(source: object, size: tuple[int, int]) -> Video | None:
    """``source`` if it is a displayable video (1, 3 or 4 channels) of (height, width) ``size``
    with at least one frame: the video tracked boxes can be drawn on."""
    if not isinstance(source, Video) or not len(source.frames):
        return None
    _, height, width, channels = source.frames.shape
    return source if (height, width) == tuple(size) and channels in (1, 3, 4) else None


class _RunExport:
    def __init__(self, out_dir: Path, options: ExportOptions) -> None:
        self.out = out_dir
        self.options = options
        self.coco: dict[str, CocoBuilder] = {}
        self.classes: dict[str, tuple[str, ...]] = {}
        self.jsonl: dict[str, list[str]] = {}
        self.used: set[str] = set()
        self.files: list[Path] = []

    def item_dir(self, result: Result) -> Path:
        """A folder of its own for each result, named after its input (made safe: no control
        characters, separators or dot names), ``-2``, ``-3``, … for repeated names."""
        base = safe_name(getattr(result.input, "name", "") or "result")
        name, n = base, 1
        while name in self.used:
            n += 1
            name = f"{base}-{n}"
        self.used.add(name)
        return self.out / name

    def image(self, pixels: np.ndarray, path: Path) -> None:
        fmt = self.options.image_format
        if fmt == "jpeg" and pixels.dtype != np.uint8:
            fmt = "png"  # keep the bit depth: JPEG cannot hold 16-bit data
        suffix = ".jpg" if fmt == "jpeg" else ".png"
        self.files.append(
            write_image(pixels, path.with_suffix(suffix), fmt, self.options.jpeg_quality)
        )

    def write_output(self, name: str, output: Output, result: Result, folder: Path) -> None:
        source = result.input
        if isinstance(output, Image):
            self.image(output.pixels, folder / name)
        elif isinstance(output, Volume):
            self.files.append(write_nifti(output.array, output.affine, folder / f"{name}.nii.gz"))
        elif isinstance(output, Video):
            self.write_video(name, output, folder)
        elif isinstance(output, Tracks):
            self.write_tracks(name, output, source, folder)
        elif isinstance(output, Text):
            atomic_write_text(folder / f"{name}.txt", output.text)
            self.files.append(folder / f"{name}.txt")
        elif isinstance(output, Boxes):
            classes = self.classes.setdefault(name, ())
            self.classes[name] = classes + tuple(
                c for c in output.all_class_names if c not in classes
            )
            atomic_write_text(folder / f"{name}.yolo.txt", yolo_lines(output, self.classes[name]))
            self.files.append(folder / f"{name}.yolo.txt")
            origin = getattr(source, "source", None)
            file_name = str(origin) if origin else folder.name
            self.coco.setdefault(name, CocoBuilder()).add(file_name, output)
            if isinstance(source, Image) and (source.height, source.width) == output.image_size:
                self.image(boxes_overlay(source.to_rgb_uint8(), output), folder / f"{name}_overlay")
        elif isinstance(output, Mask):
            self.write_mask(name, output, source, folder)
        elif isinstance(output, Caption | Reply):
            line = {"item": folder.name, **output_summary(output)}
            self.jsonl.setdefault(name, []).append(json.dumps(line, ensure_ascii=False))
        elif isinstance(output, ImageSet):
            for i, img in enumerate(output.images):
                self.image(img.pixels, folder / name / f"{i:04d}")
        elif isinstance(output, Embeddings):
            import io

            buf = io.BytesIO()
            np.save(buf, output.vectors.astype(np.float32), allow_pickle=False)
            atomic_write_bytes(folder / f"{name}.npy", buf.getvalue())
            self.files.append(folder / f"{name}.npy")
        elif isinstance(output, Metrics):
            atomic_write_text(folder / f"{name}.json", dumps(output_summary(output)))
            self.files.append(folder / f"{name}.json")
        elif isinstance(output, File):
            self.write_bytes(output.data, folder / f"{name}{output.suffix}")
        else:
            raise TypeError(f"no exporter for output type {type(output).__name__}")

    def write_bytes(self, data: bytes, path: Path) -> None:
        atomic_write_bytes(path, data)
        self.files.append(path)

    def write_text(self, text: str, path: Path) -> None:
        atomic_write_text(path, text)
        self.files.append(path)

    def write_video(self, name: str, video: Video, folder: Path) -> None:
        """``{name}.mp4`` when PyAV is installed; one image per frame in ``{name}/`` and a GIF
        only for a small video (:func:`~vlm_core.export.images.small_video`) or without MP4."""
        frames = video.frames
        rgb = as_rgb_frames(frames) if len(frames) and mp4_available() else None
        if rgb is not None:
            self.write_bytes(encode_mp4(rgb, video.fps), folder / f"{name}.mp4")
            if not small_video(frames):
                return
        for t, frame in enumerate(frames):
            self.image(frame, folder / name / f"frame_{t:06d}")
        if len(frames) <= GIF_MAX_FRAMES and frames.dtype == np.uint8:
            self.write_bytes(encode_gif(frames, video.fps), folder / f"{name}.gif")

    def write_tracks(self, name: str, tracks: Tracks, source: object, folder: Path) -> None:
        """Per video: ``{name}.jsonl`` (one line per frame), ``{name}.coco.json``,
        ``{name}.yolo/frame_*.txt`` with ``classes.txt``, and ``{name}_overlay.mp4`` (the boxes
        on the input video's frames) when the input is a video of the same frame size."""
        classes = tracks.all_class_names
        coco = CocoBuilder(categories={c: i + 1 for i, c in enumerate(classes)})
        lines = []
        for t, boxes in enumerate(tracks.frames):
            frame = f"frame_{t:06d}"
            time_s = round(t / tracks.fps, 6)
            line = {"frame": t, "time_s": time_s, "boxes": box_items(boxes)}
            lines.append(json.dumps(line, ensure_ascii=False))
            coco.add(frame, boxes)
            coco.images[-1]["frame_index"] = t
            self.write_text(yolo_lines(boxes, classes), folder / f"{name}.yolo" / f"{frame}.txt")
        self.write_text(
            "\n".join(classes) + "\n" if classes else "", folder / f"{name}.yolo" / "classes.txt"
        )
        self.write_text("\n".join(lines) + "\n", folder / f"{name}.jsonl")
        self.write_text(dumps(coco.document()), folder / f"{name}.coco.json")
        video = video_under(source, tracks.image_size)
        if video is not None and mp4_available():
            overlays = self._track_overlays(tracks, video)
            self.write_bytes(encode_mp4(overlays, tracks.fps), folder / f"{name}_overlay.mp4")

    @staticmethod
    def _track_overlays(tracks: Tracks, video: Video) -> Iterable[np.ndarray]:
        """Each frame's boxes drawn on the video's frame at the same time, while there is one."""
        for t, boxes in enumerate(tracks.frames):
            index = frame_index(t, tracks.fps, video.fps)
            if index >= len(video.frames):
                return
            rgb = Image(pixels=video.frames[index]).to_rgb_uint8()
            yield boxes_overlay(rgb, boxes)

    def write_mask(self, name: str, mask: Mask, source: object, folder: Path) -> None:
        labels = mask.labels.astype(np.uint8 if len(mask.class_names) <= 256 else np.uint16)
        if labels.ndim == 2:
            self.image(labels, folder / name)
            if isinstance(source, Image) and source.pixels.shape[:2] == labels.shape:
                rgb = mask_overlay(source.to_rgb_uint8(), labels, self.options.overlay_opacity)
                self.image(rgb, folder / f"{name}_overlay")
            return
        affine = mask.affine if mask.affine is not None else getattr(source, "affine", np.eye(4))
        self.files.append(write_nifti(labels, affine, folder / f"{name}.nii.gz"))
        if isinstance(source, Volume) and source.array.shape[:3] == labels.shape:
            background = source.array if source.array.ndim == 3 else source.array[..., 0]
            for k in np.flatnonzero(labels.reshape(-1, labels.shape[2]).any(axis=0)):
                rgb = Image(pixels=background[:, :, k].astype(np.float32)).to_rgb_uint8()
                blended = mask_overlay(rgb, labels[:, :, k], self.options.overlay_opacity)
                self.image(blended, folder / f"{name}_overlay" / f"slice_{int(k):04d}")

    def finish(self, run: dict[str, Any]) -> None:
        for name, builder in self.coco.items():
            atomic_write_text(self.out / f"{name}.coco.json", dumps(builder.document()))
            atomic_write_text(
                self.out / f"{name}.classes.txt", "\n".join(self.classes[name]) + "\n"
            )
            self.files += [self.out / f"{name}.coco.json", self.out / f"{name}.classes.txt"]
        for name, lines in self.jsonl.items():
            atomic_write_text(self.out / f"{name}.jsonl", "\n".join(lines) + "\n")
            self.files.append(self.out / f"{name}.jsonl")
        atomic_write_text(self.out / "run.json", dumps(run))
        self.files.append(self.out / "run.json")


def export_results(
    results: Iterable[Result], out_dir: Path, options: ExportOptions | None = None
) -> list[Path]:
    """Write every result's outputs and its ``result.json``, then the run-level files.

    Returns the written paths. Each file is written atomically (temporary file, then rename).
    """
    export = _RunExport(out_dir, options or ExportOptions())
    items = []
    head: Result | None = None  # the first result, for the run-level record
    for result in results:  # any iterable: results are written as they come
        head = head or result
        folder = export.item_dir(result)
        first = len(export.files)
        for name, output in result.outputs.items():
            export.write_output(safe_name(name, "output"), output, result, folder)
        summary = result_summary(result)
        summary["files"] = [str(p.relative_to(out_dir)) for p in export.files[first:]]
        atomic_write_text(folder / "result.json", dumps(summary))
        export.files.append(folder / "result.json")
        items.append({"item": folder.name, "input": summary["input"], "files": summary["files"]})
    run: dict[str, Any] = {"task": head.task if head else None, "items": items}
    if head is not None:
        prov = head.provenance
        run.update(run_id=prov.run_id, params=dict(prov.params), core_version=prov.core_version)
    export.finish(run)
    return export.files
