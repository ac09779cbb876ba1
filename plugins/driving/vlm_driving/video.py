"""MP4 input: the driving plugin's reader for the core's ``mp4`` format (PyAV).

The core sniffs MP4 by content (an ``ftyp`` box) but does not decode it. :func:`probe` reads
the container header only and checks the caps of :func:`vlm_core.config.settings` before any
frame is decoded; :func:`load` decodes every frame of the first video stream into a
:class:`vlm_core.types.Video` of RGB uint8 frames. Both raise
:class:`~vlm_core.errors.InputError` with a one-line message naming the file.

Importing this module imports neither PyAV nor numpy; they load on first use.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlm_core.config import Settings, settings
from vlm_core.errors import InputError

if TYPE_CHECKING:
    from vlm_core.io.load import Probe
    from vlm_core.types import Video


def probe(files: Sequence[Path]) -> tuple[int, ...]:
    """The shape (frames, height, width, 3) of one MP4 file, from its header only.

    A header without a frame count gives an estimate from the stream's duration and frame rate.
    Refuses a frame over ``VLM_MAX_IMAGE_PIXELS`` pixels and a video over
    ``VLM_MAX_VOLUME_VOXELS`` pixels in all (frames x height x width).
    """
    if len(files) != 1:
        raise InputError(f"an MP4 input is one file, got {len(files)}")
    path = Path(files[0])
    with _open(path) as container:
        shape = _header_shape(path, _video_stream(path, container), container)
    _check_caps(path, shape)
    return shape


def load(probe: Probe) -> Video:
    """Decode every frame of ``probe.path``'s first video stream as RGB uint8 (T, H, W, 3) at
    the stream's average frame rate (25 fps when the file gives none)."""
    import av
    import numpy as np

    from vlm_core.types import Video

    path = probe.path
    s = settings()
    with _open(path) as container:
        stream = _video_stream(path, container)
        listed = int(stream.frames or 0)  # 0: the header has no frame count
        expected, height, width, _ = shape = _header_shape(path, stream, container)
        _check_caps(path, shape, s)
        fps = _frame_rate(stream) or 25.0
        out = np.empty(shape, np.uint8)
        extra: list[np.ndarray] = []  # frames beyond the header's count or estimate
        count = 0
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames, None)
            except av.FFmpegError as exc:
                raise InputError(
                    f"{path}: MP4 data is corrupt or truncated at frame {count} ({_reason(exc)})"
                ) from None
            if frame is None:
                break
            rgb = frame.to_ndarray(format="rgb24", width=width, height=height)
            if count < expected:
                out[count] = rgb
            else:
                _check_caps(path, (count + 1, height, width, 3), s)
                extra.append(rgb)
            count += 1
    if count == 0:
        raise InputError(f"{path}: MP4 video stream has no decodable frames")
    if count < listed:
        raise InputError(
            f"{path}: MP4 is truncated: {count} of the {listed} frames its header lists"
        )
    frames_rgb = np.concatenate([out, np.stack(extra)]) if extra else out[:count]
    return Video(frames=frames_rgb, fps=fps, name=path.stem, source=path)


# ---------------------------------------------------------------------------------------------
# Header


@contextmanager
def _open(path: Path) -> Iterator[Any]:
    """The PyAV input container of ``path``; an unreadable file is an :class:`InputError`."""
    import av

    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError) as exc:  # InvalidDataError for broken or foreign files
        raise InputError(f"{path}: not a readable MP4 file ({_reason(exc)})") from None
    try:
        yield container
    finally:
        container.close()


def _video_stream(path: Path, container: Any) -> Any:
    """The first video stream that is not a cover picture."""
    from av.stream import Disposition

    if not container.streams:  # the index (moov) is missing: cut off, or never finished
        raise InputError(f"{path}: not a readable MP4 file (no stream index: truncated?)")
    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    raise InputError(f"{path}: MP4 file has no video stream")


def _frame_rate(stream: Any) -> float | None:
    """Frames per second: the stream's average rate, else FFmpeg's guess; None if unknown."""
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return None


def _header_shape(path: Path, stream: Any, container: Any) -> tuple[int, int, int, int]:
    width, height = int(stream.codec_context.width), int(stream.codec_context.height)
    if width < 1 or height < 1:
        raise InputError(f"{path}: MP4 video stream claims an empty {width}x{height} frame")
    frames = int(stream.frames or 0)
    if frames < 1:  # not in the header: duration x frame rate
        rate = _frame_rate(stream)
        seconds = None
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000  # microseconds (AV_TIME_BASE)
        if rate is None or seconds is None or seconds <= 0:
            raise InputError(f"{path}: MP4 header gives neither a frame count nor a duration")
        frames = max(1, math.ceil(seconds * rate))
    return (frames, height, width, 3)


def _check_caps(path: Path, shape: tuple[int, ...], s: Settings | None = None) -> None:
    """Refuse frames over ``max_image_pixels`` and videos over ``max_volume_voxels`` pixels."""
    s = s or settings()
    frames, height, width = shape[:3]
    if height * width > s.max_image_pixels:
        raise InputError(
            f"{path}: MP4 frames are {width}x{height} = {width * height:,} pixels, over the limit "
            f"of {s.max_image_pixels:,} (raise it with VLM_MAX_IMAGE_PIXELS)"
        )
    total = frames * height * width
    if total > s.max_volume_voxels:
        raise InputError(
            f"{path}: MP4 video is {frames:,} frames of {width}x{height} = {total:,} pixels, over "
            f"the limit of {s.max_volume_voxels:,} (raise it with VLM_MAX_VOLUME_VOXELS, or cut "
            "the video shorter)"
        )


def _reason(exc: BaseException) -> str:
    """A short reason from a PyAV error (its FFmpeg message, without the file name)."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(reason).strip()
