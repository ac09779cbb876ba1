"""Run page uploads (issue 27, item 5): every refused file is shown with its reason while the
good ones run, and the uploader never carries files over from another task.

An in-process plugin with two image tasks stands in for the installed ones, so the page loads
no entry point and each test drives the real app through Streamlit's AppTest in a second or two.
"""

from __future__ import annotations

import io
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from vlm_core import hookimpl
from vlm_core.errors import InputError
from vlm_core.kinds import Kind
from vlm_core.plugins import load_registry
from vlm_core.runstore import RunStore
from vlm_core.tasks import TaskParams, TaskSpec

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "dashboard" / "app.py")
TASKS = ("up.first", "up.second")


def _shape(inputs, params, ctx):
    from vlm_core.types import Text

    return [{"shape": Text("x".join(map(str, item.pixels.shape)))} for item in inputs]


plugin = types.ModuleType("vlm_upload_test_plugin")


@hookimpl
def _register_tasks(register):
    for task in TASKS:
        register(
            TaskSpec(
                id=task,
                title=f"Shape ({task})",
                description="The shape of each image.",
                domain="test",
                run=_shape,
                params=TaskParams,
                inputs=(Kind.IMAGE,),
                outputs=(Kind.TEXT,),
            )
        )


plugin.register_tasks = _register_tasks  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def upload_tasks(vlm_home, monkeypatch):
    """A fresh 'server' whose registry holds only the two upload tasks."""
    import streamlit as st
    from vlm_dashboard import serving

    st.cache_resource.clear()
    st.cache_data.clear()
    monkeypatch.setenv("VLM_DEBUG", "1")  # an unexpected error becomes at.exception
    monkeypatch.setattr(
        serving,
        "load_registry",
        lambda: load_registry(extra={"up": plugin}, use_entry_points=False),
    )
    yield vlm_home
    st.cache_resource.clear()


def png(side: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((side, side, 3), 200, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("inside.txt", "not an image")
    return buffer.getvalue()


def healthy(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def upload_page(task: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30).run()
    at = healthy(at.switch_page("pages/run.py").run())
    at = healthy(at.selectbox(key="run.task").set_value(task).run())
    return healthy(at.radio(key=f"run.source.{task}").set_value("upload").run())


def click_run(at: AppTest) -> AppTest:
    (button,) = [b for b in at.button if b.label == "Run"]
    return healthy(button.click().run())


def uploaded_files(at: AppTest) -> list[Path]:
    folder = Path(at.session_state["vlm.session_dir"].name) / "uploads"
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_every_bad_file_is_shown_with_its_reason_and_the_good_ones_run(monkeypatch):
    monkeypatch.setenv("VLM_MAX_INPUT_BYTES", "2000")
    big = png(8) + b"\0" * 3000
    at = upload_page("up.first")
    at.file_uploader[0].set_value(
        [
            ("good.png", png(), "image/png"),
            ("photo.png", zip_bytes(), "image/png"),
            ("notes.txt", b"just words\n", "text/plain"),
            ("big.png", big, "image/png"),
            ("also good.png", png(16), "image/png"),
        ]
    )
    at = click_run(at)
    assert [e.value for e in at.error] == [
        "photo.png: content is a ZIP file, not one of the readable formats "
        "(bmp, jpeg, png, tiff, webp)",
        "notes.txt: is a text, but this task takes image",
        f"big.png: {len(big):,} bytes, over the upload limit of 2,000 bytes "
        "(vlm dashboard --max-upload-mb, VLM_MAX_INPUT_BYTES)",
    ]
    (info,) = [i.value for i in at.info]
    assert info == (
        "Accepted 2 of 5 uploaded files (good.png, also good.png); the run uses only these."
    )
    assert "up.first: 2 result(s)" in at.success[0].value
    saved = uploaded_files(at)
    assert [p.name for p in saved] == ["also_good.png", "good.png"]  # the refused are gone
    (record,) = RunStore.default().list(limit=5)
    assert record.status == "ok" and sorted(record.inputs) == sorted(map(str, saved))


def test_when_every_file_is_refused_each_is_shown_and_nothing_runs():
    at = upload_page("up.first")
    at.file_uploader[0].set_value(
        [("a.png", zip_bytes(), "image/png"), ("b.txt", b"words\n", "text/plain")]
    )
    at = click_run(at)
    assert [e.value.split(":")[0] for e in at.error] == ["a.png", "b.txt"]
    assert [i.value for i in at.info] == ["None of the 2 uploaded files was accepted; nothing ran."]
    assert not at.success
    assert uploaded_files(at) == []  # nothing of the batch is kept
    assert RunStore.default().list(limit=5) == []

    at.file_uploader[0].set_value([("c.png", png(), "image/png")])
    at = click_run(at)  # the next batch starts clean: no stale refusals
    assert not at.error and not at.info and "1 result(s)" in at.success[0].value


def test_the_refusals_are_not_shown_under_another_task():
    at = upload_page("up.first")
    at.file_uploader[0].set_value([("a.png", zip_bytes(), "image/png")])
    at = click_run(at)
    assert [i.value for i in at.info] == ["The uploaded file was not accepted; nothing ran."]
    at = healthy(at.selectbox(key="run.task").set_value("up.second").run())
    assert not at.error and not at.info
    at = healthy(at.selectbox(key="run.task").set_value("up.first").run())
    assert [e.value.split(":")[0] for e in at.error] == ["a.png"]  # back with its task


def test_the_uploader_starts_empty_after_a_task_switch():
    at = upload_page("up.first")
    at.file_uploader[0].set_value([("first.png", png(), "image/png")])
    at = healthy(at.selectbox(key="run.task").set_value("up.second").run())
    at = healthy(at.radio(key="run.source.up.second").set_value("upload").run())
    (uploader,) = at.file_uploader
    assert not uploader.value
    at = click_run(at)  # the file given to the first task does not run under the second
    assert [e.value for e in at.error] == [
        "no file uploaded: add at least one file, or pick a bundled sample"
    ]
    at = healthy(at.selectbox(key="run.task").set_value("up.first").run())
    at = healthy(at.radio(key="run.source.up.first").set_value("upload").run())
    at = click_run(at)  # nor is it still waiting in the first task's uploader
    assert [e.value for e in at.error] == [
        "no file uploaded: add at least one file, or pick a bundled sample"
    ]
    assert RunStore.default().list(limit=5) == []


@dataclass
class FakeUpload:
    name: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def getvalue(self) -> bytes:
        return self.data


def test_save_uploads_keeps_the_good_files_and_lists_the_refused(monkeypatch, tmp_path):
    from vlm_dashboard import uploads

    monkeypatch.setattr(uploads, "session_dir", lambda: tmp_path)
    monkeypatch.setattr(uploads, "upload_limit_bytes", lambda: 1000)
    spec = load_registry(extra={"up": plugin}, use_entry_points=False).tasks["up.first"]
    batch = uploads.save_uploads(
        [
            FakeUpload("../x.png", png()),
            FakeUpload("huge.png", b"\0" * 1001),
            FakeUpload("fake.png", zip_bytes()),
        ],
        spec,
    )
    assert [p.name for p in batch.paths] == ["x.png"] and batch.accepted == ["../x.png"]
    assert [(r.name, r.reason) for r in batch.refused] == [
        ("huge.png", "1,001 bytes, over the upload limit of 1,000 bytes "
         "(vlm dashboard --max-upload-mb, VLM_MAX_INPUT_BYTES)"),
        ("fake.png", "content is a ZIP file, not one of the readable formats "
         "(bmp, jpeg, png, tiff, webp)"),
    ]  # fmt: skip
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["x.png"]
    with pytest.raises(InputError, match="no file uploaded"):
        uploads.save_uploads([], spec)


#: a task that takes scenes, and a KITTI-like sweep of 32 points for it
SCENE_TASK = TaskSpec(
    id="up.scene",
    title="Scene",
    description="d",
    domain="test",
    run=_shape,
    params=TaskParams,
    inputs=(Kind.SCENE,),
    outputs=(Kind.TEXT,),
)
SWEEP = np.tile(np.array([10.0, 1.0, -1.0, 0.5], "<f4"), (32, 1)).tobytes()


def test_a_scene_upload_keeps_the_camera_image_and_calibration_beside_the_sweep(
    monkeypatch, tmp_path
):
    """A scene task takes point clouds; the frame's image and calibration text uploaded with
    one are kept beside it (its reader reads them), not run and not refused. A reader that
    finds no image beside its sweep refuses it."""
    from vlm_dashboard import uploads

    from vlm_core.io.readers import InputReader

    def probe(files):
        if not files[0].with_suffix(".png").exists():
            raise InputError(f"{files[0]}: no camera image beside it")
        return (1, files[0].stat().st_size // 16)

    readers = {"kitti-bin": InputReader(format="kitti-bin", probe=probe, load=print)}
    monkeypatch.setattr(uploads, "session_dir", lambda: tmp_path)
    spec, sweep = SCENE_TASK, SWEEP
    batch = uploads.save_uploads(
        [
            FakeUpload("000001.bin", sweep),  # before its image: probed after every file is in
            FakeUpload("000001.png", png()),
            FakeUpload("000001.txt", b"P2: 1 0 0 0 0 1 0 0 0 0 1 0\n"),
            FakeUpload("000002.bin", sweep),  # no image
            FakeUpload("notes.zip", zip_bytes()),
        ],
        spec,
        readers=readers,
    )
    assert [p.name for p in batch.paths] == ["000001.bin"]
    assert batch.accepted == ["000001.bin", "000001.png", "000001.txt"]
    assert [r.name for r in batch.refused] == ["000002.bin", "notes.zip"]
    assert "no camera image" in batch.refused[0].reason
    kept = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert kept == ["000001.bin", "000001.png", "000001.txt"]


def test_a_scene_folder_zip_is_unpacked_and_a_zip_without_sweeps_or_unsafe_is_refused(
    monkeypatch, tmp_path
):
    """A scene task reads an uploaded ZIP as the folder it holds; one holding no sweep, or an
    unsafe one, is refused with its reason and leaves nothing; an image task still refuses
    any ZIP by its content."""
    from vlm_dashboard import uploads

    from vlm_core.io.readers import InputReader

    readers = {
        "kitti-bin": InputReader(
            format="kitti-bin", probe=lambda files: (1, files[0].stat().st_size // 16), load=print
        )
    }
    monkeypatch.setattr(uploads, "session_dir", lambda: tmp_path)
    spec, sweep = SCENE_TASK, SWEEP

    def archive(members: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        return buffer.getvalue()

    batch = uploads.save_uploads(
        [
            FakeUpload(
                "scene.zip", archive({"s/velodyne/000000.bin": sweep, "s/calib/0.txt": b"x"})
            ),
            FakeUpload("empty.zip", archive({"s/readme.txt": b"nothing here"})),
            FakeUpload("evil.zip", archive({"../escape.bin": sweep})),
        ],
        spec,
        readers=readers,
    )
    assert [p.name for p in batch.paths] == ["scene-files"] and batch.accepted == ["scene.zip"]
    assert (batch.paths[0] / "s" / "velodyne" / "000000.bin").read_bytes() == sweep
    refused = {r.name: r.reason for r in batch.refused}
    assert "no usable inputs" in refused["empty.zip"] and "escape" in refused["evil.zip"]
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert [p.split("/", 2)[-1] for p in left] == [
        "scene-files/s/calib/0.txt",
        "scene-files/s/velodyne/000000.bin",
    ]
