"""The core kinds' exporters: one function per kind and file format, named by the kinds'
registrations (:mod:`vlm_core.outputs.builtin`).

Each is ``export(item, name, output)``: ``item`` is the :class:`~vlm_core.export.writer.
ItemExport` of the result (its folder, its input, the options, the write helpers), ``name`` the
output's name made safe for a file name. Files of the whole run (one COCO document, one JSONL
per output name) are accumulated with :meth:`ItemExport.run_file` and written when the run ends.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from vlm_core.export.boxes import CocoBuilder, yolo_lines
from vlm_core.export.images import (
    GIF_MAX_FRAMES,
    MONTAGE_MAX_TILES,
    MONTAGE_TILE,
    boxes_overlay,
    encode_gif,
    mask_overlay,
    montage,
    small_video,
)
from vlm_core.export.scene_views import bird_eye_view, points_overlay
from vlm_core.export.video import as_rgb_frames, encode_mp4, frame_index, mp4_available
from vlm_core.export.volumes import write_nifti
from vlm_core.export.writer import ItemExport, RunExport, dumps, video_under
from vlm_core.outdir import safe_name
from vlm_core.outputs.summaries import box_items
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


@dataclass
class BoxesRun:
    """The boxes of every item under one output name: ``OUT/<name>.coco.json`` and the class
    list of the YOLO files, ``OUT/<name>.classes.txt``."""

    name: str
    coco: CocoBuilder = field(default_factory=CocoBuilder)
    classes: tuple[str, ...] = ()

    def finish(self, run: RunExport) -> None:
        run.write_text(dumps(self.coco.document()), run.out / f"{self.name}.coco.json")
        run.write_text("\n".join(self.classes) + "\n", run.out / f"{self.name}.classes.txt")


@dataclass
class JsonlRun:
    """One JSON line per item under one output name: ``OUT/<name>.jsonl``."""

    name: str
    lines: list[str] = field(default_factory=list)

    def finish(self, run: RunExport) -> None:
        run.write_text("\n".join(self.lines) + "\n", run.out / f"{self.name}.jsonl")


def image_file(item: ItemExport, name: str, image: Image) -> None:
    """``<name>.png`` (or ``.jpg`` with ``--image-format jpeg``)."""
    item.image(image.pixels, item.folder / name)


def volume_nifti(item: ItemExport, name: str, volume: Volume) -> None:
    """``<name>.nii.gz`` with the volume's affine."""
    item.add(write_nifti(volume.array, volume.affine, item.folder / f"{name}.nii.gz"))


def video_mp4(item: ItemExport, name: str, video: Video) -> None:
    """``<name>.mp4`` when PyAV is installed."""
    rgb = as_rgb_frames(video.frames) if len(video.frames) and mp4_available() else None
    if rgb is not None:
        item.write_bytes(encode_mp4(rgb, video.fps), item.folder / f"{name}.mp4")


def _frames_too(video: Video) -> bool:
    """Whether the frames (and a GIF) are written: a small video
    (:func:`~vlm_core.export.images.small_video`), or one no MP4 can be written of."""
    frames = video.frames
    rgb = frames.ndim == 4 and frames.shape[3] in (1, 3, 4)  # as_rgb_frames can convert them
    return not (len(frames) and rgb and mp4_available()) or small_video(frames)


def video_frames(item: ItemExport, name: str, video: Video) -> None:
    """``<name>/frame_*.png``: one image per frame (see :func:`_frames_too`)."""
    if _frames_too(video):
        for t, frame in enumerate(video.frames):
            item.image(frame, item.folder / name / f"frame_{t:06d}")


def video_gif(item: ItemExport, name: str, video: Video) -> None:
    """``<name>.gif`` for 8-bit videos of at most GIF_MAX_FRAMES frames (see
    :func:`_frames_too`)."""
    frames = video.frames
    if _frames_too(video) and len(frames) <= GIF_MAX_FRAMES and frames.dtype == np.uint8:
        item.write_bytes(encode_gif(frames, video.fps), item.folder / f"{name}.gif")


def _scene_frames(item: ItemExport, name: str, scene: Scene, frames: Iterable[np.ndarray]) -> None:
    """One image per frame: ``<name>.png`` for one frame; for a sequence ``<name>.mp4`` (when
    PyAV is installed) or ``<name>/frame_*.png``."""
    if len(scene) == 1:
        item.image(next(iter(frames)), item.folder / name)
    elif mp4_available():
        item.write_bytes(encode_mp4(np.stack(list(frames)), scene.fps), item.folder / f"{name}.mp4")
    else:
        for t, frame in enumerate(frames):
            item.image(frame, item.folder / name / f"frame_{t:06d}")


def scene_points(item: ItemExport, name: str, scene: Scene) -> None:
    """``<name>_points``: the LiDAR points on the camera image, coloured by depth."""
    views = (points_overlay(scene, t) for t in range(len(scene)))
    _scene_frames(item, f"{name}_points", scene, views)


def scene_bev(item: ItemExport, name: str, scene: Scene) -> None:
    """``<name>_bev``: the bird's-eye view of each sweep."""
    views = (bird_eye_view(scene, t) for t in range(len(scene)))
    _scene_frames(item, f"{name}_bev", scene, views)


def text_file(item: ItemExport, name: str, text: Text) -> None:
    """``<name>.txt``."""
    item.write_text(text.text, item.folder / f"{name}.txt")


def boxes_yolo(item: ItemExport, name: str, boxes: Boxes) -> None:
    """``<name>.yolo.txt``; class ids index ``OUT/<name>.classes.txt`` (every class so far)."""
    run = item.run_file(f"boxes:{name}", lambda: BoxesRun(name))
    run.classes += tuple(c for c in boxes.all_class_names if c not in run.classes)
    item.write_text(yolo_lines(boxes, run.classes), item.folder / f"{name}.yolo.txt")


def boxes_coco(item: ItemExport, name: str, boxes: Boxes) -> None:
    """The boxes as one image of ``OUT/<name>.coco.json``, named by the input's path."""
    run = item.run_file(f"boxes:{name}", lambda: BoxesRun(name))
    origin = getattr(item.source, "source", None)
    run.coco.add(str(origin) if origin else item.folder.name, boxes)


def boxes_overlay_image(item: ItemExport, name: str, boxes: Boxes) -> None:
    """``<name>_overlay.png``: the boxes drawn on the input image (when it is one of their
    size)."""
    source = item.source
    if isinstance(source, Image) and (source.height, source.width) == boxes.image_size:
        item.image(boxes_overlay(source.to_rgb_uint8(), boxes), item.folder / f"{name}_overlay")


def _tracks_classes(tracks: Tracks) -> tuple[str, ...]:
    return tracks.all_class_names


def tracks_yolo(item: ItemExport, name: str, tracks: Tracks) -> None:
    """``<name>.yolo/frame_*.txt`` with ``classes.txt``."""
    classes = _tracks_classes(tracks)
    for t, boxes in enumerate(tracks.frames):
        path = item.folder / f"{name}.yolo" / f"frame_{t:06d}.txt"
        item.write_text(yolo_lines(boxes, classes), path)
    listed = "\n".join(classes) + "\n" if classes else ""
    item.write_text(listed, item.folder / f"{name}.yolo" / "classes.txt")


def tracks_jsonl(item: ItemExport, name: str, tracks: Tracks) -> None:
    """``<name>.jsonl``: one line per frame (frame, time, boxes)."""
    lines = []
    for t, boxes in enumerate(tracks.frames):
        line = {"frame": t, "time_s": round(t / tracks.fps, 6), "boxes": box_items(boxes)}
        lines.append(json.dumps(line, ensure_ascii=False))
    item.write_text("\n".join(lines) + "\n", item.folder / f"{name}.jsonl")


def tracks_coco(item: ItemExport, name: str, tracks: Tracks) -> None:
    """``<name>.coco.json``: one COCO image per frame (with its ``frame_index``)."""
    classes = _tracks_classes(tracks)
    coco = CocoBuilder(categories={c: i + 1 for i, c in enumerate(classes)})
    for t, boxes in enumerate(tracks.frames):
        coco.add(f"frame_{t:06d}", boxes)
        coco.images[-1]["frame_index"] = t
    item.write_text(dumps(coco.document()), item.folder / f"{name}.coco.json")


def _track_overlays(tracks: Tracks, video: Video) -> Iterable[np.ndarray]:
    """Each frame's boxes drawn on the video's frame at the same time, while there is one."""
    for t, boxes in enumerate(tracks.frames):
        index = frame_index(t, tracks.fps, video.fps)
        if index >= len(video.frames):
            return
        rgb = Image(pixels=video.frames[index]).to_rgb_uint8()
        yield boxes_overlay(rgb, boxes)


def tracks_overlay_mp4(item: ItemExport, name: str, tracks: Tracks) -> None:
    """``<name>_overlay.mp4``: the boxes on the input video's frames, when the input is a
    video of the same frame size and PyAV is installed."""
    video = video_under(item.source, tracks.image_size)
    if video is not None and mp4_available():
        overlays = _track_overlays(tracks, video)
        item.write_bytes(encode_mp4(overlays, tracks.fps), item.folder / f"{name}_overlay.mp4")


def _mask_labels(mask: Mask) -> np.ndarray:
    return mask.labels.astype(np.uint8 if len(mask.class_names) <= 256 else np.uint16)


def mask_labels(item: ItemExport, name: str, mask: Mask) -> None:
    """``<name>.png`` (8 or 16 bit) for a 2D mask; ``<name>.nii.gz`` for a 3D one, with the
    mask's affine, else the input volume's."""
    labels = _mask_labels(mask)
    if labels.ndim == 2:
        item.image(labels, item.folder / name)
        return
    affine = mask.affine if mask.affine is not None else getattr(item.source, "affine", None)
    affine = np.eye(4) if affine is None else affine
    item.add(write_nifti(labels, affine, item.folder / f"{name}.nii.gz"))


def mask_overlay_images(item: ItemExport, name: str, mask: Mask) -> None:
    """``<name>_overlay`` (a preview: ``.jpg`` unless ``--preview-format png``) over an input
    image of the mask's size; over an input volume, one montage of the slices (k) that hold a
    label, each tile captioned ``k=N`` (at most :data:`MONTAGE_MAX_TILES`, evenly spread;
    tiles at most :data:`MONTAGE_TILE` pixels a side) — one file to glance at, where the
    NIfTI label map is the data."""
    labels, source = _mask_labels(mask), item.source
    opacity = item.options.overlay_opacity
    if labels.ndim == 2:
        if isinstance(source, Image) and source.pixels.shape[:2] == labels.shape:
            rgb = mask_overlay(source.to_rgb_uint8(), labels, opacity)
            item.image(rgb, item.folder / f"{name}_overlay")
        return
    if not (isinstance(source, Volume) and source.array.shape[:3] == labels.shape):
        return
    held = np.flatnonzero(labels.reshape(-1, labels.shape[2]).any(axis=0))
    if not len(held):
        return
    if len(held) > MONTAGE_MAX_TILES:
        held = held[np.linspace(0, len(held) - 1, MONTAGE_MAX_TILES).round().astype(int)]
    background = source.array if source.array.ndim == 3 else source.array[..., 0]
    step = max(1, int(np.ceil(max(labels.shape[:2]) / MONTAGE_TILE)))
    # the chosen slices stacked as one tall image: one intensity scaling for all of them (the
    # tiles compare), one blend
    slices = np.moveaxis(background[::step, ::step][:, :, held], 2, 0)
    count, height, width = slices.shape
    rgb = Image(pixels=slices.reshape(-1, width).astype(np.float32)).to_rgb_uint8()
    stacked = np.moveaxis(labels[::step, ::step][:, :, held], 2, 0).reshape(-1, width)
    tiles = list(mask_overlay(rgb, stacked, opacity).reshape(count, height, width, 3))
    captions = [f"k={int(k)}" for k in held]
    item.image(montage(tiles, captions), item.folder / f"{name}_overlay")


def jsonl_line(item: ItemExport, name: str, output: Caption | Reply) -> None:
    """One line of ``OUT/<name>.jsonl``: the item's folder name and the output's summary."""
    run = item.run_file(f"jsonl:{name}", lambda: JsonlRun(name))
    line = {"item": item.folder.name, **item.summarise(output)}
    run.lines.append(json.dumps(line, ensure_ascii=False))


def image_set_files(item: ItemExport, name: str, images: ImageSet) -> None:
    """``<name>/0000.png``, ``0001.png``, …: one image each, in order; an image that has a name
    adds it (``0000-brush-seed3-00.png``), so the files say what they are."""
    for i, img in enumerate(images.images):
        stem = f"{i:04d}-{safe_name(img.name)}" if img.name else f"{i:04d}"
        item.image(img.pixels, item.folder / name / stem)


def _npy(array: np.ndarray) -> bytes:
    """``array`` as float32 ``.npy`` bytes (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, array.astype(np.float32), allow_pickle=False)
    return buf.getvalue()


def embeddings_npy(item: ItemExport, name: str, emb: Embeddings) -> None:
    """``<name>.npy``: the vectors as float32 (no pickle)."""
    item.write_bytes(_npy(emb.vectors), item.folder / f"{name}.npy")


def metrics_json(item: ItemExport, name: str, metrics: Metrics) -> None:
    """``<name>.json``: the metrics' summary."""
    item.write_text(dumps(item.summarise(metrics)), item.folder / f"{name}.json")


def file_bytes(item: ItemExport, name: str, file: File) -> None:
    """``<name><suffix>``: the bytes as they are."""
    item.write_bytes(file.data, item.folder / f"{name}{file.suffix}")


def _salient_slice(heat: np.ndarray) -> int:
    """The k of a volume's heat (i, j, k) with the most evidence."""
    return int(heat.reshape(-1, heat.shape[2]).mean(axis=0).argmax())


def attribution_overlay(item: ItemExport, name: str, attribution: Attribution) -> None:
    """``<name>_overlay`` (a preview): the heat blended over its image, or over a volume's
    most salient slice k (the file name says which); the top 2% of the heat clipped for display
    (:func:`~vlm_core.explain.blend.display_heat`)."""
    from vlm_core.explain.blend import display_heat, overlay

    background, heat = attribution.background, attribution.heat
    if isinstance(background, Image):
        heat = display_heat(heat)
        item.image(overlay(background, heat).pixels, item.folder / f"{name}_overlay")
        return
    k = _salient_slice(heat)
    array = background.array if background.array.ndim == 3 else background.array[..., 0]
    plane = Image(pixels=array[:, :, k].astype(np.float32))
    shown = display_heat(heat)[:, :, k]
    item.image(overlay(plane, shown).pixels, item.folder / f"{name}_overlay_k{k}")


def attribution_heat(item: ItemExport, name: str, attribution: Attribution) -> None:
    """The heat as data: ``<name>.png`` (8-bit, 255 = the peak) over an image,
    ``<name>.nii.gz`` (float32, the volume's affine) over a volume."""
    background = attribution.background
    if isinstance(background, Image):
        item.image(np.round(attribution.heat * 255).astype(np.uint8), item.folder / name)
        return
    path = item.folder / f"{name}.nii.gz"
    item.add(write_nifti(attribution.heat.astype(np.float32), background.affine, path))


def attribution_npy(item: ItemExport, name: str, attribution: Attribution) -> None:
    """``<name>.npy``: the method's raw signed values on the model's input grid (float32)."""
    item.write_bytes(_npy(attribution.values), item.folder / f"{name}.npy")


def attribution_json(item: ItemExport, name: str, attribution: Attribution) -> None:
    """``<name>.json``: method, target, score, faithfulness and details."""
    item.write_text(dumps(item.summarise(attribution)), item.folder / f"{name}.json")
