"""Download buttons for a run's exported files: the whole output folder as a zip, or one file.

The bytes are produced only when the operator clicks (Streamlit calls the ``data`` callable),
so showing the buttons costs nothing on reruns.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import streamlit as st

MAX_LISTED = 50  # single-file buttons shown before the list is cut


def zip_folder(folder: Path) -> bytes:
    """The files under ``folder`` as a zip archive, with paths relative to ``folder``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def _reader(path: Path) -> Callable[[], bytes]:
    return path.read_bytes


def offer_downloads(out_dir: Path, files: Sequence[Path], *, name: str, key: str) -> None:
    """A zip button for ``out_dir`` and, in an expander, one button per file in ``files``."""
    if not out_dir.is_dir():
        st.caption("The output folder no longer exists; nothing to download.")
        return
    st.download_button(
        "Download all outputs (.zip)",
        data=lambda: zip_folder(out_dir),
        file_name=f"{name}.zip",
        mime="application/zip",
        on_click="ignore",
        icon="📦",
        key=f"{key}.zip",
    )
    existing = [f for f in files if f.is_file()]
    if not existing:
        return
    with st.expander(f"Exported files ({len(existing)})"):
        for index, path in enumerate(existing[:MAX_LISTED]):
            st.download_button(
                str(path.relative_to(out_dir)) if path.is_relative_to(out_dir) else path.name,
                data=_reader(path),
                file_name=path.name,
                on_click="ignore",
                key=f"{key}.file.{index}",
            )
        if len(existing) > MAX_LISTED:
            st.caption(f"… and {len(existing) - MAX_LISTED} more in the zip.")
