"""Write results to an output folder: per-item files, run-level files and JSON summaries."""

from __future__ import annotations

import dataclasses
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
    write_image,
)
from vlm_core.export.volumes import write_nifti
from vlm_core.fileio import atomic_write_bytes, atomic_write_text
from vlm_core.types import (
    Boxes,
    Caption,
    Embeddings,
    Image,
    ImageSet,
    Mask,
    Metrics,
    Output,
    Reply,
    Result,
    Text,
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


def output_summary(output: Output) -> dict[str, Any]:
    """A JSON-friendly summary of one output (full data for small outputs)."""
    kind = str(output.kind)
    if isinstance(output, Boxes):
        items = []
        for i in range(len(output)):
            item: dict[str, Any] = {
                "label": output.labels[i],
                "score": round(float(output.scores[i]), 6),
                "xyxy": [round(v, 3) for v in output.xyxy[i].tolist()],
            }
            if output.track_ids is not None:
                item["track_id"] = int(output.track_ids[i])
            items.append(item)
        return {"kind": kind, "image_size": list(output.image_size), "boxes": items}
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
    raise TypeError(f"no exporter for output type {type(output).__name__}")


def result_summary(result: Result) -> dict[str, Any]:
    return {
        "task": result.task,
        "input": result.provenance.inputs[0].path if result.provenance.inputs else None,
        "outputs": {name: output_summary(out) for name, out in result.outputs.items()},
        "provenance": dataclasses.asdict(result.provenance),
    }


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
        base = getattr(result.input, "name", "") or "result"
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
            for t, frame in enumerate(output.frames):
                self.image(frame, folder / name / f"frame_{t:06d}")
            if len(output.frames) <= GIF_MAX_FRAMES and output.frames.dtype == np.uint8:
                atomic_write_bytes(folder / f"{name}.gif", encode_gif(output.frames, output.fps))
                self.files.append(folder / f"{name}.gif")
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
        else:
            raise TypeError(f"no exporter for output type {type(output).__name__}")

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
            export.write_output(name, output, result, folder)
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
