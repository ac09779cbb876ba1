"""The dashboard's dataset-ZIP upload: the core's safe extraction under a lower cap."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from vlm_dashboard import uploads

from vlm_core.errors import InputError


@dataclass
class FakeUpload:
    """What Streamlit's UploadedFile offers the upload code."""

    name: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def getvalue(self) -> bytes:
        return self.data


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _train_data(home: Path) -> list[Path]:
    folder = home / "train-data"
    return sorted(folder.rglob("*")) if folder.exists() else []


def test_a_dataset_zip_is_extracted_into_the_data_folder(vlm_home):
    upload = FakeUpload("my set.zip", _zip({"shapes/a/1.png": b"png", "shapes/b/2.png": b"png"}))
    folder = uploads.extract_dataset_zip(upload)
    assert folder.name == "shapes" and folder.is_relative_to(vlm_home / "train-data")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png")) == [
        "a/1.png",
        "b/2.png",
    ]
    assert not list((vlm_home / "train-data").glob("*.zip"))  # the upload itself is removed


def test_the_upload_cap_is_lower_than_the_cores(vlm_home, monkeypatch):
    from vlm_core.weights.archive import MAX_ARCHIVE_BYTES

    assert uploads.UPLOAD_ARCHIVE_BYTES < MAX_ARCHIVE_BYTES
    monkeypatch.setattr(uploads, "UPLOAD_ARCHIVE_BYTES", 4000)
    upload = FakeUpload("big.zip", _zip({"a.bin": b"x" * 3000, "b.bin": b"y" * 3000}))
    with pytest.raises(InputError, match=r"refusing to extract big\.zip: .*6000 bytes > 4000"):
        uploads.extract_dataset_zip(upload)
    assert _train_data(vlm_home) == []


def test_a_refused_dataset_zip_leaves_nothing(vlm_home):
    upload = FakeUpload("evil.zip", _zip({"ok.txt": b"fine", "../escape.txt": b"bad"}))
    with pytest.raises(InputError, match=r"member '\.\./escape\.txt' has a '\.\.' path component"):
        uploads.extract_dataset_zip(upload)
    assert _train_data(vlm_home) == []
    assert not (vlm_home / "escape.txt").exists()
