"""Content photographs for training style networks, all available offline: the photographs
bundled with scikit-image (``skimage.data``) and matplotlib's sample photograph, written as
``OUT/train/NAME.png`` and ``OUT/val/NAME.png`` (the held-out ones, never trained on: the
README's quality figures are measured on them).

    python -m vlm_art.content OUT [LONGER=512]

Grey photographs are written as RGB. Each image is resized (Lanczos) so that its longer edge
is at most ``LONGER`` pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Held out for validation and the quality figures: four colour photographs (a portrait, food,
#: an animal, a scene) and a grey one.
HELD_OUT: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket", "camera")
#: Trained on (``motorcycle_right`` is the other view of ``motorcycle_left``: both are in
#: training, neither held out). ``grace_hopper`` is matplotlib's.
TRAINING: tuple[str, ...] = (
    "hubble_deep_field",
    "immunohistochemistry",
    "motorcycle_left",
    "motorcycle_right",
    "retina",
    "colorwheel",
    "shepp_logan_phantom",
    "grace_hopper",
    "moon",
    "grass",
    "gravel",
    "brick",
    "coins",
    "cell",
    "clock",
    "page",
    "text",
)


def photograph(name: str) -> np.ndarray:
    """One photograph as (H, W, 3) uint8 (a grey one repeated on three channels)."""
    if name == "grace_hopper":
        from matplotlib import cbook
        from PIL import Image

        with cbook.get_sample_data("grace_hopper.jpg") as f, Image.open(f) as im:
            rgb = np.asarray(im.convert("RGB"))
    else:
        from skimage import data, img_as_ubyte

        if name == "motorcycle_left" or name == "motorcycle_right":
            left, right, _ = data.stereo_motorcycle()
            rgb = left if name == "motorcycle_left" else right
        else:
            rgb = getattr(data, name)()
        rgb = img_as_ubyte(rgb)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    return np.ascontiguousarray(rgb[..., :3])


def write_content(folder: Path, *, longer: int = 512) -> Path:
    """Write :data:`TRAINING` into ``folder/train`` and :data:`HELD_OUT` into ``folder/val``."""
    from PIL import Image

    from vlm_art.style_images import resized

    for split, names in (("train", TRAINING), ("val", HELD_OUT)):
        target = Path(folder) / split
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            rgb = photograph(name)
            rgb = resized(rgb, min(longer, max(rgb.shape[:2])))
            Image.fromarray(rgb).save(target / f"{name}.png")
    return Path(folder)


def write_tiny(folder: Path, *, count: int = 4, size: int = 40) -> Path:
    """A tiny content set for checks and tests, without scikit-image: ``count`` crops of the
    bundled sample photograph (``samples/content.png``) in ``train/`` and two in ``val/``."""
    from PIL import Image

    from vlm_core.tasks import package_file

    with Image.open(package_file("vlm_art", "samples", "content.png")) as im:
        rgb = np.asarray(im.convert("RGB"))
    height, width = rgb.shape[:2]
    step = max(1, (min(height, width) - size) // max(1, count + 1))
    for split, n, offset in (("train", count, 0), ("val", 2, step // 2)):
        target = Path(folder) / split
        target.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            at = min(offset + i * step, min(height, width) - size)
            Image.fromarray(rgb[at : at + size, at : at + size]).save(target / f"{i:02d}.png")
    return Path(folder)


def main() -> None:
    """``python -m vlm_art.content OUT [LONGER]``."""
    import sys

    args = sys.argv[1:]
    if not args:
        raise SystemExit("usage: python -m vlm_art.content OUT [LONGER=512]")
    write_content(Path(args[0]), longer=int(args[1]) if len(args) > 1 else 512)


if __name__ == "__main__":
    main()
