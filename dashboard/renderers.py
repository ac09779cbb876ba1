"""One Streamlit renderer per core output kind, so plugins write no UI code for standard types.

Pages call :func:`render_result` (every output of a result, with its provenance) or
:func:`render_output` (one output), which look the output's kind up in the registry's table of
output kinds and call the renderer it names (``render_<kind>`` here for the core's kinds, see
:mod:`vlm_core.outputs.builtin`). Widget keys derive from the caller's ``key`` and the output
name, so several results can share a page. What is shown is computed by the pure helpers in
:mod:`vlm_dashboard.render_helpers`, re-exported here.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import weakref
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from vlm_dashboard.render_helpers import (
    AXES,
    WINDOW_PRESETS,
    as_closest_ras,
    blend,
    boxes_rows,
    embedding_rows,
    faithfulness_curves,
    faithfulness_verdict,
    legend_rows,
    mask_centre,
    method_label,
    provenance_rows,
    salient_slice,
    slice_2d,
    slice_spacing,
    stretch_to_spacing,
    window_bounds,
    window_slice,
)
from vlm_dashboard.serving import registry

from vlm_core.explain import display_heat, overlay
from vlm_core.export.images import boxes_overlay, encode_gif, mask_overlay, small_video
from vlm_core.export.scene_views import bird_eye_view, points_overlay
from vlm_core.export.video import as_rgb_frames, encode_mp4, frame_index, mp4_available
from vlm_core.export.writer import video_under
from vlm_core.outputs.kind import OutputKinds
from vlm_core.types import (
    Attribution,
    Boxes,
    Caption,
    Embeddings,
    File,
    Image,
    ImageSet,
    Input,
    Mask,
    Metrics,
    Output,
    Reply,
    Result,
    Scene,
    Text,
    Tracks,
    Video,
    Volume,
)

__all__ = [
    "AXES",
    "WINDOW_PRESETS",
    "legend_rows",
    "render_attribution",
    "render_boxes",
    "render_caption",
    "render_embeddings",
    "render_file",
    "render_image",
    "render_image_set",
    "render_mask",
    "render_metrics",
    "render_output",
    "render_reply",
    "render_result",
    "render_scene",
    "render_text",
    "render_tracks",
    "render_video",
    "render_volume",
    "window_bounds",
    "window_slice",
]

log = logging.getLogger(__name__)

GALLERY_COLUMNS = 4
GALLERY_MAX = 60  # images shown in one gallery; the rest are counted in a caption

#: MP4s of the videos on screen, encoded once per video object (results stay in the session).
_MP4_CACHE: weakref.WeakKeyDictionary[Video, bytes] = weakref.WeakKeyDictionary()


def _k(key: str, name: str, part: str) -> str:
    return f"{key}:{name}:{part}"


def _opacity(key: str, name: str, default: float = 0.5) -> float:
    return st.slider("Overlay opacity", 0.0, 1.0, default, 0.05, key=_k(key, name, "opacity"))


def _image(source: Input | None, size: tuple[int, int]) -> Image | None:
    """The source if it is an image of (height, width) ``size``."""
    if isinstance(source, Image) and (source.height, source.width) == tuple(size):
        return source
    return None


def render_image(name: str, img: Image, source: Input | None, key: str, **_: Any) -> None:
    base = _image(source, (img.height, img.width))
    shape = f"{img.width}x{img.height} · {img.pixels.dtype}"
    if base is None:
        st.image(img.to_rgb_uint8(), caption=shape)
        return
    opacity = _opacity(key, name)
    left, middle, right = st.columns(3)
    left.image(base.to_rgb_uint8(), caption="input", width="stretch")
    middle.image(img.to_rgb_uint8(), caption=f"{name} · {shape}", width="stretch")
    mixed = blend(base.to_rgb_uint8(), img.to_rgb_uint8(), opacity)
    right.image(mixed, caption=f"overlay at {opacity:.0%}", width="stretch")


def render_boxes(name: str, boxes: Boxes, source: Input | None, key: str, **_: Any) -> None:
    base = _image(source, boxes.image_size)
    if base is not None:
        canvas = base.to_rgb_uint8()
    else:  # boxes without their image: draw them on a grey canvas of the image's size
        canvas = np.full((*boxes.image_size, 3), 48, dtype=np.uint8)
    st.image(boxes_overlay(canvas, boxes), caption=f"{len(boxes)} boxes")
    if len(boxes):
        st.dataframe(pd.DataFrame(boxes_rows(boxes)), hide_index=True, key=_k(key, name, "table"))
    else:
        st.info("No detections.")


def _legend(mask: Mask, key: str, name: str) -> None:
    rows = pd.DataFrame(legend_rows(mask)).rename(
        columns={"count": "voxels" if mask.labels.ndim == 3 else "pixels"}
    )

    def swatch(column: pd.Series) -> list[str]:
        return [f"background-color: {c}; color: {c}" if c else "" for c in column]

    st.dataframe(
        rows.style.apply(swatch, subset=["colour"]),
        hide_index=True,
        key=_k(key, name, "legend"),
    )


def render_mask(name: str, mask: Mask, source: Input | None, key: str, **_: Any) -> None:
    if mask.labels.ndim == 3:
        volume = source if isinstance(source, Volume) else None
        if volume is not None and volume.array.shape[:3] != mask.labels.shape:
            st.caption(f"The input volume {volume.array.shape[:3]} is not on the mask's grid.")
            volume = None
        _volume_viewer(name, volume, mask, key)
    else:
        base = _image(source, mask.labels.shape)
        opacity = _opacity(key, name, 0.5 if base is not None else 1.0)
        rgb = base.to_rgb_uint8() if base is not None else np.zeros((*mask.labels.shape, 3), "u1")
        where = "over the input" if base is not None else "(no input image of its size)"
        st.image(mask_overlay(rgb, mask.labels, opacity), caption=f"{name} {where}")
    _legend(mask, key, name)


def _volume_viewer(name: str, volume: Volume | None, mask: Mask | None, key: str) -> None:
    """Three slice sliders (axial, coronal, sagittal) over a volume, a mask, or both."""
    affine = np.eye(4)
    if mask is not None and mask.affine is not None:
        affine = mask.affine
    elif volume is not None:
        affine = volume.affine
    image = labels = None
    if volume is not None:
        data = volume.array
        if data.ndim == 4:
            top = data.shape[3] - 1
            channel = st.slider("Channel", 0, top, 0, key=_k(key, name, "channel")) if top else 0
            data = data[..., channel]
        image, spacing = as_closest_ras(data, affine)
    if mask is not None:
        labels, spacing = as_closest_ras(mask.labels, affine)
    grid = image if image is not None else labels
    assert grid is not None, "a volume viewer needs a volume or a mask"
    centre = mask_centre(labels) if labels is not None else tuple(n // 2 for n in grid.shape)

    preset, bounds = "", None
    if image is not None:
        presets = list(WINDOW_PRESETS)
        preset = st.radio(
            "Window", presets, index=len(presets) - 1, horizontal=True, key=_k(key, name, "window")
        )
        bounds = window_bounds(image, preset)
        mm = " x ".join(f"{s:g}" for s in spacing)
        st.caption(f"window {bounds[0]:g} … {bounds[1]:g} · voxels {mm} mm")
    opacity = 0.0
    if labels is not None:
        opacity = _opacity(key, name, 0.4 if image is not None else 1.0)

    for column, (plane, axis) in zip(st.columns(3), AXES.items(), strict=True):
        with column:
            n = grid.shape[axis]
            index = 0
            if n > 1:
                label = f"{plane.capitalize()} slice"
                index = st.slider(label, 0, n - 1, centre[axis], key=_k(key, name, plane))
            if image is not None:
                grey = window_slice(image, axis, index, preset, bounds=bounds)
            else:
                grey = np.zeros(slice_2d(grid, axis, index).shape, np.uint8)
            rgb = np.repeat(grey[:, :, None], 3, axis=2)
            if labels is not None:
                rgb = mask_overlay(rgb, slice_2d(labels, axis, index), opacity)
            st.image(
                stretch_to_spacing(rgb, *slice_spacing(spacing, axis)),
                caption=f"{plane} {index + 1} / {n}",
                width="stretch",
            )


def render_volume(name: str, volume: Volume, source: Input | None, key: str, **_: Any) -> None:
    _volume_viewer(name, volume, None, key)


def _mp4(video: Video) -> bytes | None:
    """The video as MP4 (cached per video), or None when it cannot be encoded."""
    if video not in _MP4_CACHE:
        rgb = as_rgb_frames(video.frames)
        if rgb is None or not len(rgb) or not mp4_available():
            return None
        _MP4_CACHE[video] = encode_mp4(rgb, video.fps)
    return _MP4_CACHE[video]


def render_video(name: str, video: Video, source: Input | None, key: str, **_: Any) -> None:
    count = int(video.frames.shape[0])
    small = small_video(video.frames)
    playable = count > 1 and small and video.frames.dtype == np.uint8
    if playable and st.toggle("Play", key=_k(key, name, "play")):
        st.image(encode_gif(video.frames, video.fps),
                 caption=f"{count} frames at {video.fps:g} fps, looping")  # fmt: skip
        return
    if count > 1 and not small:  # too long or too large for a GIF: play it as MP4
        mp4 = _mp4(video)
        if mp4 is not None:
            st.video(mp4, format="video/mp4")
    t = 0
    if count > 1:
        t = st.slider("Frame", 0, count - 1, 0, key=_k(key, name, "frame"))
    frame = Image(pixels=video.frames[t]).to_rgb_uint8()
    st.image(frame, caption=f"frame {t + 1} / {count} · {t / video.fps:.2f} s at {video.fps:g} fps")


def render_tracks(name: str, tracks: Tracks, source: Input | None, key: str, **_: Any) -> None:
    summaries = tracks.track_summaries()
    frames, found, boxes = st.columns(3)
    frames.metric("Frames", len(tracks))
    found.metric("Tracks", len(summaries))
    boxes.metric("Boxes", tracks.num_boxes)
    t = 0
    if len(tracks) > 1:
        t = st.slider("Frame", 0, len(tracks) - 1, 0, key=_k(key, name, "frame"))
    # the boxes on the input video's frame at the same time, else on a grey canvas
    canvas = np.full((*tracks.image_size, 3), 48, dtype=np.uint8)
    where = " · no input video of its size"
    video = video_under(source, tracks.image_size)
    if video is not None:
        index = frame_index(t, tracks.fps, video.fps)
        where = " · after the end of the input video"
        if index < len(video.frames):
            canvas, where = Image(pixels=video.frames[index]).to_rgb_uint8(), ""
    shown = tracks.frames[t]
    caption = f"frame {t + 1} / {len(tracks)} · {t / tracks.fps:.2f} s · {len(shown)} boxes"
    st.image(boxes_overlay(canvas, shown), caption=caption + where)
    if summaries:
        rows = pd.DataFrame([dataclasses.asdict(s) for s in summaries])
        st.dataframe(rows, hide_index=True, key=_k(key, name, "tracks"))
    else:
        st.info("No tracks.")


def scene_frame(scene: Scene, key: str, name: str) -> int:
    """The frame of a scene to show: a slider for a sequence, else frame 0."""
    if len(scene) == 1:
        return 0
    return int(st.slider("Frame", 0, len(scene) - 1, 0, key=_k(key, name, "frame")))


def render_scene(name: str, scene: Scene, source: Input | None, key: str, **_: Any) -> None:
    """The LiDAR points on the camera image, coloured by depth, beside the bird's-eye view."""
    t = scene_frame(scene, key, name)
    points, top = st.columns([3, 2])
    shown = len(scene.project(t)[0])
    points.image(
        points_overlay(scene, t),
        caption=f"frame {scene.frame_id(t)} · {shown:,} of {len(scene.clouds[t]):,} points on the "
        "image · near red, far blue",
    )
    top.image(bird_eye_view(scene, t), caption="bird's-eye view · forward is up, 10 m grid")
    for warning in scene.warnings:
        st.caption(f"⚠ {warning}")


def render_text(name: str, text: Text, source: Input | None, key: str, **_: Any) -> None:
    st.text_area(name, text.text, disabled=True, key=_k(key, name, "text"))


def render_caption(name: str, caption: Caption, source: Input | None, key: str, **_: Any) -> None:
    if isinstance(source, Image):
        left, right = st.columns([1, 2])
        left.image(source.to_rgb_uint8(), caption="input", width="stretch")
    else:
        right = st.container()
    with right:
        st.markdown(caption.text)
        if caption.score is not None:
            st.caption(f"score {caption.score:.3f}")
        if caption.tags:
            tags = sorted(caption.tags.items(), key=lambda kv: -kv[1])
            st.dataframe(
                pd.DataFrame(tags, columns=["tag", "probability"]),
                hide_index=True,
                column_config={
                    "probability": st.column_config.ProgressColumn(
                        "probability", min_value=0.0, max_value=1.0, format="%.3f"
                    )
                },
                key=_k(key, name, "tags"),
            )


def render_reply(
    name: str, reply: Reply, source: Input | None, key: str, message: str | None = None
) -> None:
    if message is None and isinstance(source, Text):
        message = source.text
    with st.chat_message("user"):
        if isinstance(source, Image):
            st.image(source.to_rgb_uint8(), width=320)
        st.markdown(message or "*(no message)*")
    with st.chat_message("assistant"):
        if reply.clarifying_question:
            st.caption("❓ Clarifying question: the task needs more information to answer.")
        st.markdown(reply.text)
        confidence = min(max(float(reply.confidence), 0.0), 1.0)
        st.progress(confidence, text=f"confidence {confidence:.0%}")
        if reply.evidence:
            evidence = pd.DataFrame(list(reply.evidence.items()), columns=["evidence", "value"])
            st.dataframe(evidence, hide_index=True, key=_k(key, name, "evidence"))


def render_image_set(name: str, images: ImageSet, source: Input | None, key: str, **_: Any) -> None:
    shown = images.images[:GALLERY_MAX]
    labels = images.labels or tuple(f"#{i}" for i in range(len(images.images)))
    for start in range(0, len(shown), GALLERY_COLUMNS):
        row = range(start, min(start + GALLERY_COLUMNS, len(shown)))
        for column, i in zip(st.columns(GALLERY_COLUMNS)[: len(row)], row, strict=True):
            column.image(shown[i].to_rgb_uint8(), caption=labels[i], width="stretch")
    if len(images.images) > GALLERY_MAX:
        st.caption(f"showing {GALLERY_MAX} of {len(images.images)} images")


def render_embeddings(name: str, emb: Embeddings, source: Input | None, key: str, **_: Any) -> None:
    n, d = emb.vectors.shape
    st.caption(f"{n} vectors x {d} dimensions" + (f" · {emb.model}" if emb.model else ""))
    rows = embedding_rows(emb)
    st.dataframe(pd.DataFrame(rows), hide_index=True, key=_k(key, name, "table"))
    if n > len(rows):
        st.caption(f"first {len(rows)} of {n} rows")


def render_metrics(name: str, metrics: Metrics, source: Input | None, key: str, **_: Any) -> None:
    if metrics.values:
        values = pd.DataFrame(list(metrics.values.items()), columns=["metric", "value"])
        st.dataframe(values, hide_index=True, key=_k(key, name, "values"))
    if metrics.per_class:
        table = pd.DataFrame.from_dict(
            {c: dict(v) for c, v in metrics.per_class.items()}, orient="index"
        )
        table.index.name = "class"
        st.dataframe(table, key=_k(key, name, "per_class"))
        metric = st.selectbox("Per-class metric", list(table.columns), key=_k(key, name, "plot"))
        st.bar_chart(table[[metric]], horizontal=True)


def render_file(name: str, file: File, source: Input | None, key: str, **_: Any) -> None:
    size = len(file.data)
    shown = f"{size / 1024:,.1f} KiB" if size >= 1024 else f"{size} bytes"
    st.caption(f"{file.description or name} · {file.media_type} · {shown}")
    st.download_button(
        f"Download {name}{file.suffix}",
        data=file.data,
        file_name=f"{name}{file.suffix}",
        mime=file.media_type,
        on_click="ignore",
        icon="📄",
        key=_k(key, name, "file"),
    )


def _npy(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(values), allow_pickle=False)
    return buffer.getvalue()


def _attribution_slice(
    name: str, attribution: Attribution, volume: Volume, opacity: float, key: str
) -> None:
    """The heat over one k slice of the volume (voxel order, as :func:`slice_2d` turns axis 2),
    with a slider over k that opens on the slice holding the most heat."""
    data = volume.array
    if data.ndim == 4:
        top = data.shape[3] - 1
        channel = st.slider("Channel", 0, top, 0, key=_k(key, name, "channel")) if top else 0
        data = data[..., channel]
    heat = attribution.heat
    count, best = heat.shape[2], salient_slice(heat)
    k = best
    if count > 1:
        k = st.slider("Slice (k)", 0, count - 1, best, key=_k(key, name, "slice"))
    grey = window_slice(data, 2, k, "MR / auto", bounds=window_bounds(data, "MR / auto"))
    shown = slice_2d(display_heat(heat), 2, k)  # the top 2% clipped, as the exported overlay
    mixed = overlay(Image(pixels=grey), shown, alpha=opacity).pixels
    st.image(
        stretch_to_spacing(mixed, *slice_spacing(volume.spacing, 2)),
        caption=f"k = {k} of 0…{count - 1} · most heat at k = {best} · red: most evidence",
        width="stretch",
    )


def _faithfulness(scores: Any) -> None:
    """Deletion and insertion areas against a random order, a verdict, and the curves."""
    deletion, deletion_random = float(scores["deletion_auc"]), float(scores["deletion_auc_random"])
    insertion = float(scores["insertion_auc"])
    insertion_random = float(scores["insertion_auc_random"])
    st.markdown("**Faithfulness**")
    st.metric(
        "Deletion AUC (lower is better)",
        f"{deletion:.3g}",
        delta=f"{deletion - deletion_random:+.3g} vs random {deletion_random:.3g}",
        delta_color="inverse",
        help="The explained number as the map's top pixels are removed first (to the "
        "baseline), averaged over the removed fraction; a random order of the pixels gives "
        "the random figure.",
    )
    st.metric(
        "Insertion AUC (higher is better)",
        f"{insertion:.3g}",
        delta=f"{insertion - insertion_random:+.3g} vs random {insertion_random:.3g}",
        delta_color="normal",
        help="The explained number as the map's top pixels are put back first onto the "
        "baseline, averaged over the inserted fraction; a random order gives the random "
        "figure.",
    )
    better, verdict = faithfulness_verdict(scores)
    (st.success if better else st.warning)(verdict.capitalize() + ".")
    curves = faithfulness_curves(scores)
    if curves:
        with st.expander("Deletion and insertion curves"):
            frame = pd.DataFrame(curves).set_index("percent of pixels")
            st.line_chart(frame, x_label="percent of pixels removed / put back",
                          y_label="explained number")  # fmt: skip
            random_orders = scores.get("random_orders")
            if random_orders:
                st.caption(f"random: the mean area of {random_orders} random orders")


def render_attribution(
    name: str, attribution: Attribution, source: Input | None, key: str, **_: Any
) -> None:
    """The heat over its background (an image, or one slice of a volume with a slider over k),
    what is explained and how, the faithfulness figures beside it when scored, and the raw
    values as .npy."""
    method = method_label(attribution.method)
    st.caption(f"{method} of {attribution.target} · score {attribution.score:.4g}")
    opacity = _opacity(key, name)
    scores = attribution.faithfulness
    scored = "deletion_auc" in scores
    picture, figures = st.columns([3, 2]) if scored else (st.container(), None)
    with picture:
        background = attribution.background
        if isinstance(background, Volume):
            _attribution_slice(name, attribution, background, opacity, key)
        else:
            mixed = overlay(background, display_heat(attribution.heat), alpha=opacity)
            st.image(mixed.pixels, caption=f"{method} over the input · red: most evidence",
                     width="stretch")  # fmt: skip
    if figures is not None:
        with figures:
            _faithfulness(scores)
    if attribution.details:
        with st.expander("Details"):
            st.json(dict(attribution.details), expanded=True)
    values = attribution.values
    shape = " x ".join(str(n) for n in values.shape)
    st.download_button(
        f"Download {name}.npy (raw values, {shape})",
        data=lambda: _npy(values),
        file_name=f"{name}.npy",
        mime="application/octet-stream",
        on_click="ignore",
        icon="🔢",
        key=_k(key, name, "npy"),
    )


def render_output(
    name: str,
    output: Output,
    source: Input | None = None,
    *,
    key: str,
    message: str | None = None,
    kinds: OutputKinds | None = None,
) -> None:
    """Show one output with the renderer of its kind, with ``source`` (the task's input) where
    it helps.

    Args:
        name: the output's name in its result; part of every widget key.
        output: an output of a registered kind; another object is reported with
            ``st.warning``, and a kind without a renderer is shown as its JSON summary.
        source: the input the output was made from: the image under boxes and masks, the
            volume under a 3D mask, the customer's image or message beside a reply.
        key: unique per call on a page; widget keys are ``f"{key}:{name}:{part}"``.
        message: the customer's message for a reply whose source is an image.
        kinds: the output kinds to look the output up in (default: the dashboard's registry's).

    A renderer that fails shows an error naming the output instead of breaking the page.
    """
    kinds = kinds if kinds is not None else registry().output_kinds
    kind = kinds.for_output(output)
    if kind is None:
        st.warning(f"No renderer for output '{name}' of type {type(output).__name__}.")
        return
    try:
        renderer = kind.resolve_render()
        if renderer is None:
            st.json(kind.summarise(output), expanded=False)
        else:
            renderer(name, output, source, key, message=message)
    except Exception as exc:  # a bad output must not take the page down
        log.exception("rendering output %r (%s) failed", name, type(output).__name__)
        st.error(f"Could not show output '{name}' ({type(output).__name__}): {exc}")


def _customer_message(result: Result) -> str | None:
    """The message a reply answers when the input is an image: a text parameter of the run."""
    for field in ("message", "question", "prompt", "text"):
        value = result.provenance.params.get(field)
        if isinstance(value, str) and value:
            return value
    return None


def render_result(result: Result, *, key: str) -> None:
    """Every output of ``result`` under its name, then the provenance in a collapsed expander."""
    message = _customer_message(result)
    for name, output in result.outputs.items():
        st.subheader(name)
        render_output(name, output, result.input, key=key, message=message)
    with st.expander("Provenance", expanded=False):
        st.dataframe(
            pd.DataFrame(provenance_rows(result.provenance)),
            hide_index=True,
            key=_k(key, "", "provenance"),
        )
