"""The data `vlm eval art.generate --shift` and `vlm eval art.style_transfer --shift` measure:
written into a ``val/`` folder, so the tasks' builders evaluate every item (no split), from
held-out seeds (:mod:`vlm_art.shifts`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vlm_art.shifts import GENERATE_SHIFTS, SAMPLING_FILE, TRANSFER_SHIFTS, TRUNCATION
from vlm_art.styles import STYLES, render


def _check(shift: str, known: dict[str, str]) -> None:
    if shift not in known:
        raise ValueError(f"unknown shift '{shift}' (shifts: {', '.join(known)})")


def per_style_counts(count: int, styles: int) -> list[int]:
    """``count`` items shared between ``styles`` as evenly as they go (the first get one more)."""
    return [count // styles + (1 if k < count % styles else 0) for k in range(styles)]


def write_generate_set(
    folder: Path, *, shift: str, count: int, seed: int, params: Any, card: Any = None
) -> Path:
    """``count`` real images of the procedural styles in ``folder/val/<style>/`` (image ``i``
    of a style is ``render(style, size, seed * 1_000_003 + i)``, as :mod:`vlm_art.styles`
    writes data sets), and ``folder/sampling.json`` saying how `art.generate`'s builder draws
    the generated images it compares with them: from ``seed`` (style ``k`` of the weights from
    ``seed + k``, as `vlm run art.generate -p styles=STYLE -p seed=SEED+k` does) with the
    shift's truncation. The styles are the ones the weights' ``card`` names (a conditional
    generator's classes; all the procedural styles for an unconditional one)."""
    from PIL import Image

    _check(shift, GENERATE_SHIFTS)
    size = int(getattr(params, "image_size", 32))
    named = [str(s) for s in (card or {}).get("class_names") or () if s in STYLES]
    styles = named or list(STYLES)
    folder = Path(folder)
    for style, n in zip(styles, per_style_counts(count, len(styles)), strict=True):
        target = folder / "val" / style
        target.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(render(style, size, seed * 1_000_003 + i)).save(target / f"{i:04d}.png")
    sampling = {"seed": seed, "truncation": TRUNCATION[shift], "shift": shift}
    (folder / SAMPLING_FILE).write_text(json.dumps(sampling, indent=2))
    return folder


# --- art.style_transfer: content crops of the held-out photographs under a camera shift


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def shifted(rgb: np.ndarray, shift: str, rng: np.random.Generator) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 as :data:`vlm_art.shifts.TRANSFER_SHIFTS` names ``shift``."""
    from PIL import Image, ImageFilter

    _check(shift, TRANSFER_SHIFTS)
    if shift == "none":
        return rgb
    if shift == "blur":
        return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(2.0)))
    if shift == "lowres":
        height, width = rgb.shape[:2]
        small = Image.fromarray(rgb).resize((max(1, width // 4), max(1, height // 4)),
                                            Image.Resampling.BOX)  # fmt: skip
        return np.asarray(small.resize((width, height), Image.Resampling.BILINEAR))
    x = rgb.astype(np.float64) / 255
    if shift == "dark":
        x = _linear_to_srgb(_srgb_to_linear(x) * 2.0**-1.5)
    else:  # noise
        x = x + rng.normal(0.0, 0.08, x.shape)
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def content_crop(index: int, seed: int, size: int, photos: dict[str, np.ndarray]) -> np.ndarray:
    """Item ``index`` of the held-out content drawn from ``seed``: a square crop of a held-out
    photograph (chosen at random), its side uniform between half the shorter side and all of
    it, resized to ``size`` and flipped half of the time."""
    from PIL import Image

    rng = np.random.default_rng([seed, index])
    names = sorted(photos)
    rgb = photos[names[int(rng.integers(len(names)))]]
    height, width = rgb.shape[:2]
    shorter = min(height, width)
    side = int(rng.integers(shorter // 2, shorter + 1))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = Image.fromarray(rgb[top : top + side, left : left + side])
    crop = crop.resize((size, size), Image.Resampling.LANCZOS)
    out = np.asarray(crop)
    return np.ascontiguousarray(out[:, ::-1]) if rng.random() < 0.5 else out


def held_out_photographs(longer: int = 512) -> dict[str, np.ndarray]:
    """The five held-out photographs of :data:`vlm_art.content.HELD_OUT`, longer edge at most
    ``longer`` (as `python -m vlm_art.content` writes them)."""
    from vlm_art.content import HELD_OUT, photograph
    from vlm_art.style_images import resized

    photos = {}
    for name in HELD_OUT:
        rgb = photograph(name)
        photos[name] = resized(rgb, min(longer, max(rgb.shape[:2])))
    return photos


def write_transfer_set(
    folder: Path, *, shift: str, count: int, seed: int, params: Any, card: Any = None
) -> Path:
    """``count`` content images in ``folder/val/`` at the network's validation size
    (``params.val_size``, square, so the builder's centre square is the whole image): crops of
    the held-out photographs (:func:`content_crop`) under ``shift``; the noise of item ``i``
    is drawn from ``(seed, i)`` too, so every shift starts from the same crops."""
    from PIL import Image

    _check(shift, TRANSFER_SHIFTS)
    size = int(getattr(params, "val_size", 256))
    target = Path(folder) / "val"
    target.mkdir(parents=True, exist_ok=True)
    photos = held_out_photographs()
    for i in range(count):
        crop = content_crop(i, seed, size, photos)
        noise_rng = np.random.default_rng([seed, i, 1])
        Image.fromarray(shifted(crop, shift, noise_rng)).save(target / f"{i:04d}.png")
    return Path(folder)
