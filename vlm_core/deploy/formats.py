"""The exported formats and how a file's is told (standard library only: the weights path reads
it for every file it loads)."""

from __future__ import annotations

from pathlib import Path

#: the exported formats, by file suffix
FORMATS = {"onnx": ".onnx", "pt2": ".pt2"}


def format_of(path: Path | str) -> str:
    """The export format of a file by its suffix ("" for a torch weights file)."""
    suffix = Path(path).suffix.lower()
    return next((name for name, ext in FORMATS.items() if ext == suffix), "")
