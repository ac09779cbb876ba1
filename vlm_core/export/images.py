"""PNG/JPEG writing and overlays of masks and boxes on images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from vlm_core.fileio import atomic_write_bytes
from vlm_core.types import Boxes, Image

#: A palette of distinct colours for labels 1..N (label 0, background, stays transparent).
PALETTE = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (250, 190, 212),
        (0, 128, 128),
        (220, 190, 255),
        (170, 110, 40),
        (255, 250, 200),
        (128, 0, 0),
        (170, 255, 195),
        (128, 128, 0),
        (255, 215, 180),
        (0, 0, 128),
        (128, 128, 128),
    ],
    dtype=np.uint8,
)


def colour(index: int) -> tuple[int, int, int]:
    r, g, b = PALETTE[index % len(PALETTE)]
    return int(r), int(g), int(b)


#: zlib level of exported PNGs: 1 encodes several times faster than PIL's default 6 for files
#: about a third larger, and PNG stays lossless at every level (`vlm bench --pipeline`).
PNG_LEVEL = 1


def encode_image(pixels: np.ndarray, fmt: str = "png", quality: int = 95) -> bytes:
    """Encode (H, W[, C]) pixels as PNG (lossless, 8 or 16 bit; zlib level :data:`PNG_LEVEL`)
    or JPEG (8-bit RGB)."""
    from PIL import Image as PILImage

    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if fmt == "jpeg":
        if pixels.dtype != np.uint8:
            raise ValueError("JPEG export needs 8-bit pixels")
        im = PILImage.fromarray(pixels).convert("RGB")
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality)
        return buf.getvalue()
    if pixels.dtype == np.uint16 and pixels.ndim == 2:
        im = PILImage.fromarray(pixels)
    elif pixels.dtype != np.uint8:
        im = PILImage.fromarray(Image(pixels=pixels).to_rgb_uint8())
    else:
        im = PILImage.fromarray(pixels)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def write_image(pixels: np.ndarray, path: Path, fmt: str = "png", quality: int = 95) -> Path:
    atomic_write_bytes(path, encode_image(pixels, fmt, quality))
    return path


#: Videos up to this many frames are also written as an animated GIF (longer ones only as frames:
#: GIF has a 256-colour palette per frame and grows fast).
GIF_MAX_FRAMES = 256
#: A video of at most GIF_MAX_FRAMES frames and this many pixels in all its frames together is
#: small: exported as an MP4, a GIF and one image per frame. A larger one is exported as an MP4
#: only, when an MP4 can be written (10 s of 720p at 25 fps is 230 M pixels).
SMALL_VIDEO_MAX_PIXELS = 64_000_000


def small_video(frames: np.ndarray) -> bool:
    """Whether (T, H, W[, C]) ``frames`` are within :data:`GIF_MAX_FRAMES` and
    :data:`SMALL_VIDEO_MAX_PIXELS`."""
    count, height, width = frames.shape[:3]
    return count <= GIF_MAX_FRAMES and count * height * width <= SMALL_VIDEO_MAX_PIXELS


def encode_gif(frames: np.ndarray, fps: float) -> bytes:
    """(T, H, W[, C]) uint8 frames as an animated GIF that loops forever at ``fps``."""
    from PIL import Image as PILImage

    if frames.dtype != np.uint8:
        raise ValueError("GIF export needs 8-bit frames")
    images = [PILImage.fromarray(f[:, :, 0] if f.ndim == 3 and f.shape[2] == 1 else f)
              for f in frames]  # fmt: skip
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(20, round(1000 / fps)), optimize=False)  # fmt: skip
    return buf.getvalue()


def mask_overlay(rgb: np.ndarray, labels: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """Blend a colour per label over ``rgb`` (H, W, 3) uint8; background is left untouched."""
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"mask {labels.shape} does not match image {rgb.shape[:2]}")
    out = rgb.astype(np.float32)
    top = max(int(labels.max(initial=0)), 1)
    lut = np.vstack([np.zeros((1, 3), np.uint8), np.resize(PALETTE, (top, 3))])
    colours = lut[labels.astype(np.int64)].astype(np.float32)
    on = labels > 0
    out[on] = (1 - opacity) * out[on] + opacity * colours[on]
    return out.astype(np.uint8)


def boxes_overlay(rgb: np.ndarray, boxes: Boxes) -> np.ndarray:
    """Draw boxes with their label, score and track id on a copy of ``rgb``."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    im = PILImage.fromarray(rgb).convert("RGB")
    draw = ImageDraw.Draw(im)
    names = boxes.all_class_names
    width = max(1, round(min(im.size) / 300))
    for i, (x1, y1, x2, y2) in enumerate(boxes.xyxy.tolist()):
        label = boxes.labels[i]
        c = colour(names.index(label))
        draw.rectangle((x1, y1, x2, y2), outline=c, width=width)
        text = f"{label} {float(boxes.scores[i]):.2f}"
        if boxes.track_ids is not None:
            text = f"#{int(boxes.track_ids[i])} {text}"
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        ty = max(0.0, y1 - (bottom - top) - 2)
        draw.rectangle((x1, ty, x1 + (right - left) + 4, ty + (bottom - top) + 2), fill=c)
        draw.text((x1 + 2, ty), text, fill=(0, 0, 0))
    return np.asarray(im)


#: A volume mask's preview holds at most this many slices (evenly spread over those that
#: hold a label), each at most :data:`MONTAGE_TILE` pixels a side.
MONTAGE_MAX_TILES = 64
MONTAGE_TILE = 256


def montage(tiles: list[np.ndarray], captions: list[str]) -> np.ndarray:
    """(H, W, 3) uint8 tiles of one size side by side in a near-square grid, each with its
    caption in its top-left corner, on a dark background with a 2-pixel gutter; one image to
    encode and to look at instead of one file per slice."""
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    count = len(tiles)
    height, width = tiles[0].shape[:2]
    columns = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    gap = 2
    sheet = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 24, np.uint8)
    for i, tile in enumerate(tiles):
        y, x = (i // columns) * (height + gap), (i % columns) * (width + gap)
        sheet[y : y + height, x : x + width] = tile
    im = PILImage.fromarray(sheet)
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default_imagefont()  # a bitmap font: cheap, and legible at any size
    for i, caption in enumerate(captions):
        y, x = (i // columns) * (height + gap), (i % columns) * (width + gap)
        left, top, right, bottom = draw.textbbox((x + 1, y + 1), caption, font=font)
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=(0, 0, 0))
        draw.text((x + 1, y + 1), caption, fill=(255, 255, 255), font=font)
    return np.asarray(im)
