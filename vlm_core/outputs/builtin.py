"""The core's output kinds, registered through the ``register_output_kinds`` hook as a plugin
registers its own: the plugin loader registers this module with the plugin manager before any
entry point loads. Everything is named by ``"module:function"`` strings, so registering imports
nothing (no numpy, no Streamlit); docs/output-kinds.md describes each kind.
"""

from __future__ import annotations

from collections.abc import Callable

from vlm_core.hookspecs import hookimpl
from vlm_core.outputs.kind import OutputKind, OutputKinds

_TYPES = "vlm_core.types"
_SUMMARIES = "vlm_core.outputs.summaries"
_EXPORTERS = "vlm_core.export.exporters"
_RENDERERS = "vlm_dashboard.renderers"
_HISTORY = "vlm_dashboard.history_views"


def _kind(
    name: str,
    cls: str,
    description: str,
    exporters: dict[str, str],
    line: str | None = None,
    history: str = "json_history",
) -> OutputKind:
    """A core kind whose functions follow the naming of the modules above."""
    return OutputKind(
        name=name,
        type=f"{_TYPES}:{cls}",
        summary=f"{_SUMMARIES}:{name}_summary",
        exporters={fmt: f"{_EXPORTERS}:{func}" for fmt, func in exporters.items()},
        cli_line=f"{_SUMMARIES}:{line}" if line else None,
        render=f"{_RENDERERS}:render_{name}",
        history=f"{_HISTORY}:{history}",
        description=description,
    )


CORE_KINDS: tuple[OutputKind, ...] = (
    _kind("image", "Image", "a 2D image", {"png": "image_file"}, "image_line"),
    _kind("volume", "Volume", "a 3D volume with its affine", {"nifti": "volume_nifti"}),
    _kind(
        "video",
        "Video",
        "frames at a frame rate",
        {"mp4": "video_mp4", "frames": "video_frames", "gif": "video_gif"},
    ),
    _kind("text", "Text", "a piece of text", {"txt": "text_file"}, "text_line", "text_history"),
    _kind(
        "scene",
        "Scene",
        "camera and LiDAR frames with their calibration",
        {"overlay": "scene_points", "bev": "scene_bev"},
        "scene_line",
    ),
    _kind(
        "boxes",
        "Boxes",
        "detections on one image",
        {"yolo": "boxes_yolo", "coco": "boxes_coco", "overlay": "boxes_overlay_image"},
        "boxes_line",
        "boxes_history",
    ),
    _kind(
        "tracks",
        "Tracks",
        "tracked detections on a video",
        {
            "yolo": "tracks_yolo",
            "jsonl": "tracks_jsonl",
            "coco": "tracks_coco",
            "overlay": "tracks_overlay_mp4",
        },
        "tracks_line",
    ),
    _kind(
        "mask",
        "Mask",
        "a label map of an image or a volume",
        {"labels": "mask_labels", "overlay": "mask_overlay_images"},
        "mask_line",
        "mask_history",
    ),
    _kind(
        "caption",
        "Caption",
        "a caption with tags",
        {"jsonl": "jsonl_line"},
        "text_line",
        "text_history",
    ),
    _kind(
        "reply",
        "Reply",
        "a reply to a customer",
        {"jsonl": "jsonl_line"},
        "text_line",
        "text_history",
    ),
    _kind(
        "image_set", "ImageSet", "a gallery of images", {"png": "image_set_files"}, "image_set_line"
    ),
    _kind("embeddings", "Embeddings", "vectors with their ids", {"npy": "embeddings_npy"}),
    _kind(
        "metrics",
        "Metrics",
        "named scalar metrics, per class too",
        {"json": "metrics_json"},
        "metrics_line",
        "metrics_history",
    ),
    _kind(
        "attribution",
        "Attribution",
        "an attribution map over an image or a volume, with its faithfulness",
        {
            "overlay": "attribution_overlay",
            "heat": "attribution_heat",
            "npy": "attribution_npy",
            "json": "attribution_json",
        },
        "attribution_line",
    ),
    _kind(
        "file",
        "File",
        "a file in a format the core does not model",
        {"bytes": "file_bytes"},
        "file_line",
    ),
)


@hookimpl
def register_output_kinds(register: Callable[[OutputKind], None]) -> None:
    """The core's kinds, one registration each."""
    for kind in CORE_KINDS:
        register(kind)


_builtin: OutputKinds | None = None


def builtin_output_kinds() -> OutputKinds:
    """The core's kinds alone, as :func:`register_output_kinds` registers them (for callers
    without a plugin registry, e.g. :func:`vlm_core.export.export_results` called directly)."""
    global _builtin
    if _builtin is None:
        table = OutputKinds()
        register_output_kinds(table.add)
        _builtin = table
    return _builtin
