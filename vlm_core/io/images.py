"""The core's reader for raster images (PNG, JPEG, TIFF, BMP, WebP), through Pillow.

Registered like a plugin's reader by :mod:`vlm_core.io.core_readers`; Pillow is imported when
the first image is read. Each file is opened only as the format its content was sniffed as.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vlm_core.config import settings
from vlm_core.errors import InputError
from vlm_core.io.sniff import sniff_format

if TYPE_CHECKING:
    from vlm_core.io.probe import Probe
    from vlm_core.types import Image

#: the sniffed format → Pillow's name for it
PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "bmp": "BMP", "webp": "WEBP"}


def probe_image(files: Sequence[Path]) -> tuple[int, ...]:
    """``(height, width, bands)`` from the image's header; the pixel cap
    (``VLM_MAX_IMAGE_PIXELS``) and Pillow's decompression-bomb guard are checked."""
    from PIL import Image as PILImage

    path = files[0]
    fmt = sniff_format(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(path, formats=[PIL_FORMATS[fmt]]) as im:
                width, height = im.size
                bands = len(im.getbands())
    except PILImage.DecompressionBombError as exc:
        raise InputError(f"{path}: refused by Pillow's decompression-bomb guard: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: not a readable {fmt.upper()} image ({exc})") from None
    if width < 1 or height < 1:
        raise InputError(f"{path}: image header claims an empty {width}x{height} image")
    limit = settings().max_image_pixels
    if width * height > limit:
        raise InputError(
            f"{path}: image header claims {width}x{height} = {width * height:,} pixels, over the "
            f"limit of {limit:,} (VLM_MAX_IMAGE_PIXELS)"
        )
    return (height, width, bands)


def load_image(probe: Probe) -> Image:
    """The decoded image, EXIF orientation applied; 16-bit and float modes keep their depth,
    palette and other modes become RGB (RGBA when they have transparency)."""
    import numpy as np
    from PIL import Image as PILImage
    from PIL import ImageOps

    from vlm_core.types import Image

    try:
        with PILImage.open(probe.path, formats=[PIL_FORMATS[probe.format]]) as opened:
            opened.load()
            im = ImageOps.exif_transpose(opened)
            if im.mode in ("I;16", "I;16B", "I;16L"):
                pixels = np.asarray(im, dtype=np.uint16)
            elif im.mode in ("I", "F"):
                pixels = np.asarray(im, dtype=np.float32)
            elif im.mode in ("L", "RGB", "RGBA"):
                pixels = np.asarray(im)
            elif im.mode == "1":
                pixels = np.asarray(im.convert("L"))
            else:  # P, PA, LA, CMYK, YCbCr, ...
                has_alpha = "A" in im.getbands() or "transparency" in im.info
                pixels = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{probe.path}: image data is truncated or corrupt ({exc})") from None
    return Image(pixels=np.ascontiguousarray(pixels), name=probe.path.stem, source=probe.path)
