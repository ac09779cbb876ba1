"""The core's reader for UTF-8 text files (a question, a prompt), up to 1 MiB."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vlm_core.errors import InputError

if TYPE_CHECKING:
    from vlm_core.io.probe import Probe
    from vlm_core.types import Text

#: the largest text input, in bytes
MAX_TEXT_BYTES = 1 << 20


def probe_text(files: Sequence[Path]) -> tuple[int, ...]:
    """``(size in bytes,)``; a file over :data:`MAX_TEXT_BYTES` is refused."""
    path = files[0]
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise InputError(f"{path}: text input is {size:,} bytes, over {MAX_TEXT_BYTES:,}")
    return (size,)


def load_text(probe: Probe) -> Text:
    """The file's text; content that is not valid UTF-8 is refused."""
    from vlm_core.types import Text

    try:
        text = probe.path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{probe.path}: text is not valid UTF-8 ({exc.reason})") from None
    return Text(text=text, name=probe.path.stem, source=probe.path)
