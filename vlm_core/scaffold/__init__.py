"""`vlm plugins new NAME`: write an installable plugin from the template beside this module."""

from __future__ import annotations

import re
from pathlib import Path

from vlm_core.errors import UsageError

TEMPLATE = Path(__file__).parent / "plugin-template"
TOKEN = "{{name}}"
NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def sample_image(size: int = 96, seed: int = 0) -> bytes:
    """A noisy bright disk on a dark background as PNG bytes: the scaffold's bundled sample."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disk = (yy - size * 0.45) ** 2 + (xx - size * 0.55) ** 2 < (size * 0.28) ** 2
    pixels = np.where(disk, 190.0, 50.0) + rng.normal(0, 12, (size, size))
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def render(name: str) -> dict[str, str]:
    """The template's files for plugin ``name``: relative path → text."""
    files = {}
    for path in sorted(TEMPLATE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            rel = str(path.relative_to(TEMPLATE)).replace(TOKEN, name)
            files[rel] = path.read_text(encoding="utf-8").replace(TOKEN, name)
    return files


def scaffold_plugin(name: str, directory: Path) -> Path:
    """Create ``directory/vlm-NAME`` with a complete, installable plugin; return its path."""
    if not NAME.match(name):
        raise UsageError(
            f"plugin name '{name}' must be lowercase letters, digits and underscores, "
            "starting with a letter (at most 40 characters)"
        )
    root = directory / f"vlm-{name}"
    if root.exists():
        raise UsageError(f"{root} already exists; choose another name or folder")
    for rel, text in render(name).items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    samples = root / f"vlm_{name}" / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    (samples / "disk.png").write_bytes(sample_image())
    return root
