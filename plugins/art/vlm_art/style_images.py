"""The style a request names and its pixels: a built-in style (``painting``, the bundled sample,
or one of the five procedural styles of :mod:`vlm_art.styles`) or the path of a style image,
checked like an input file (the core's format allow-list, pixel cap and the task's accepted
sizes). Light: numpy and PIL, no torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlm_art.params import BUILTIN_STYLES, TRANSFER_IMAGE_LIMITS
from vlm_core.errors import InputError, did_you_mean
from vlm_core.tasks import package_file

TASK = "art.style_transfer"
#: The seed the procedural styles are rendered with for their networks and for method=optimize.
RENDER_SEED = 0


def painting_file() -> Path:
    """The bundled sample painting (a painting the default GAN generated), style ``painting``."""
    return package_file("vlm_art", "samples", "style.png")


@dataclass(frozen=True)
class Style:
    """A named style: ``builtin`` with its name, or a style image ``path`` (its stem names it)."""

    name: str
    path: Path | None = None

    @property
    def builtin(self) -> bool:
        return self.path is None


def _looks_like_a_name(value: str) -> bool:
    return not Path(value).suffix and "/" not in value and "\\" not in value


def choose(value: str) -> Style:
    """The style ``value`` names: a built-in style's name, or the path of a style image.

    Raises:
        InputError: a word that is no built-in style (the built-in ones listed), or a path
            that does not exist.
    """
    if value in BUILTIN_STYLES:
        return Style(value)
    file = Path(value).expanduser()
    if _looks_like_a_name(value) and not file.is_file():
        raise InputError(
            f"unknown style '{value}' (built-in styles: {', '.join(BUILTIN_STYLES)}; or the path "
            f"of a style image){did_you_mean(value, BUILTIN_STYLES)}"
        )
    if not file.is_file():
        raise InputError(f"style image {file} does not exist")
    return Style(file.stem, file)


def load_image(file: Path) -> np.ndarray:
    """A style image as (H, W, 3) uint8, through the core's safe loader and the task's accepted
    sizes, as an input file would be; a one-line ``InputError`` naming it otherwise."""
    from vlm_core.io import load_input, probe_input
    from vlm_core.io.limits import check_image_size
    from vlm_core.kinds import Kind

    try:
        probe = probe_input(file, [Kind.IMAGE])
        check_image_size(probe, TRANSFER_IMAGE_LIMITS, TASK)
        image = load_input(probe)
    except InputError as exc:
        raise InputError(f"style image {exc}") from None
    return np.asarray(image.to_rgb_uint8())


def pixels(style: Style, longer: int) -> np.ndarray:
    """The style image, (H, W, 3) uint8, with its longer edge ``longer`` pixels: a procedural
    style rendered at that size (seed :data:`RENDER_SEED`), an image file resized (Lanczos)."""
    from vlm_art.styles import STYLES, render

    if style.builtin and style.name in STYLES:
        return render(style.name, longer, RENDER_SEED)
    rgb = load_image(painting_file() if style.path is None else style.path)
    return resized(rgb, longer)


def resized(rgb: np.ndarray, longer: int) -> np.ndarray:
    """(H, W, 3) uint8 resized (Lanczos) so that its longer edge is ``longer`` (each side at
    least a pixel)."""
    from PIL import Image as PILImage

    pil = PILImage.fromarray(rgb)
    scale = longer / max(pil.size)
    size = (max(1, round(pil.width * scale)), max(1, round(pil.height * scale)))
    if size == pil.size:
        return rgb
    return np.asarray(pil.resize(size, PILImage.Resampling.LANCZOS))
