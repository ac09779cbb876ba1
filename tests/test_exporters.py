"""Exporters: every output type to its standard files, provenance beside every result."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

from vlm_core.export import ExportOptions, export_results
from vlm_core.types import (
    Boxes,
    Caption,
    Embeddings,
    File,
    Image,
    ImageSet,
    InputRecord,
    Mask,
    Metrics,
    Provenance,
    Reply,
    Result,
    Text,
    Video,
    Volume,
)


def provenance(path: str = "in.png") -> Provenance:
    return Provenance(
        run_id="r1",
        task="t.x",
        plugin="t",
        plugin_version="1",
        core_version="0",
        weights_sha256={},
        device="cpu",
        dtype="float32",
        seed=0,
        params={"a": 1},
        inputs=(InputRecord(path, "0" * 64, "png", "image"),),
        timings_ms={"run": 1.0},
        started_at="2026-01-01T00:00:00+00:00",
    )


def result(outputs, source=None) -> Result:
    return Result("t.x", outputs, provenance(), source)


@pytest.fixture
def photo() -> Image:
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[10:30, 20:40] = 200
    return Image(pixels=pixels, name="photo", source=Path("/data/photo.png"))


def boxes(n: int = 2, size=(40, 60)) -> Boxes:
    xyxy = np.array([[20, 10, 40, 30], [0, 0, 6, 4]], np.float32)[:n]
    return Boxes(
        xyxy=xyxy,
        labels=("car", "pedestrian")[:n],
        scores=np.array([0.9, 0.4])[:n],
        image_size=size,
        class_names=("car", "truck", "pedestrian"),
    )


def test_every_result_gets_result_json_with_provenance(tmp_path, photo):
    files = export_results([result({"stats": Metrics({"f1": 0.5})}, photo)], tmp_path)
    summary = json.loads((tmp_path / "photo" / "result.json").read_text())
    assert summary["provenance"]["run_id"] == "r1" and summary["provenance"]["params"] == {"a": 1}
    assert summary["outputs"]["stats"]["values"] == {"f1": 0.5}
    assert tmp_path / "photo" / "result.json" in files and (tmp_path / "run.json").is_file()


def test_images_png_and_jpeg(tmp_path, photo):
    export_results([result({"out": photo}, photo)], tmp_path / "png")
    back = np.asarray(PILImage.open(tmp_path / "png" / "photo" / "out.png"))
    np.testing.assert_array_equal(back, photo.pixels)
    export_results(
        [result({"out": photo}, photo)], tmp_path / "jpg", ExportOptions(image_format="jpeg")
    )
    assert PILImage.open(tmp_path / "jpg" / "photo" / "out.jpg").format == "JPEG"
    deep = Image(pixels=np.full((4, 4), 40000, np.uint16))
    export_results(
        [result({"deep": deep}, photo)], tmp_path / "16", ExportOptions(image_format="jpeg")
    )
    assert np.asarray(PILImage.open(tmp_path / "16" / "photo" / "deep.png")).max() == 40000


def test_boxes_coco_yolo_and_overlay(tmp_path, photo):
    other = Image(pixels=np.zeros((40, 60, 3), np.uint8), name="second")
    export_results([result({"det": boxes()}, photo), result({"det": boxes(1)}, other)], tmp_path)
    coco = json.loads((tmp_path / "det.coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["car", "truck", "pedestrian"]
    assert len(coco["images"]) == 2 and coco["images"][0]["width"] == 60
    first = coco["annotations"][0]
    assert first["bbox"] == [20.0, 10.0, 20.0, 20.0] and first["category_id"] == 1
    assert first["score"] == pytest.approx(0.9) and first["area"] == 400.0
    yolo = (tmp_path / "photo" / "det.yolo.txt").read_text().splitlines()
    cls, cx, _cy, _w, h, _score = yolo[1].split()
    assert cls == "2" and float(cx) == pytest.approx(3 / 60) and float(h) == pytest.approx(4 / 40)
    assert (tmp_path / "det.classes.txt").read_text().split() == ["car", "truck", "pedestrian"]
    overlay = np.asarray(PILImage.open(tmp_path / "photo" / "det_overlay.jpg"))  # a preview
    assert overlay.shape == (40, 60, 3) and (overlay != photo.pixels).any()


def test_track_ids_are_exported(tmp_path, photo):
    b = boxes()
    tracked = Boxes(b.xyxy, b.labels, b.scores, b.image_size, track_ids=np.array([7, 9]))
    export_results([result({"det": tracked}, photo)], tmp_path)
    anns = json.loads((tmp_path / "det.coco.json").read_text())["annotations"]
    assert [a["track_id"] for a in anns] == [7, 9]


def test_2d_mask_png_and_overlay(tmp_path, photo):
    labels = np.zeros((40, 60), np.uint8)
    labels[10:30, 20:40] = 2
    mask = Mask(labels, class_names=("background", "road", "car"))
    lossless = ExportOptions(preview_format="png")
    export_results([result({"seg": mask}, photo)], tmp_path, lossless)
    np.testing.assert_array_equal(np.asarray(PILImage.open(tmp_path / "photo" / "seg.png")), labels)
    overlay = np.asarray(PILImage.open(tmp_path / "photo" / "seg_overlay.png"))
    assert (overlay[0, 0] == photo.pixels[0, 0]).all() and (
        overlay[20, 30] != photo.pixels[20, 30]
    ).any()
    summary = json.loads((tmp_path / "photo" / "result.json").read_text())
    assert summary["outputs"]["seg"]["counts"] == {"background": 2000, "car": 400}


def test_volume_mask_nifti_keeps_the_input_affine(tmp_path):
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = (-100, 50, 12)
    volume = Volume(
        np.random.default_rng(0).random((8, 9, 5)).astype(np.float32), affine, name="ct"
    )
    labels = np.zeros((8, 9, 5), np.uint8)
    labels[2:5, 3:6, 1:3] = 1
    export_results([result({"lesion": Mask(labels), "vol": volume}, volume)], tmp_path)
    saved = nib.load(tmp_path / "ct" / "lesion.nii.gz")
    np.testing.assert_allclose(saved.affine, affine)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), labels)
    np.testing.assert_allclose(nib.load(tmp_path / "ct" / "vol.nii.gz").affine, affine)
    # the preview: one montage of the two slices that hold the label, side by side
    sheet = np.asarray(PILImage.open(tmp_path / "ct" / "lesion_overlay.jpg"))
    assert sheet.shape == (8, 2 * 9 + 2, 3) and not (tmp_path / "ct" / "lesion_overlay").exists()


def test_a_volume_preview_is_one_montage_of_at_most_64_slices_holding_a_label(tmp_path):
    from vlm_core.export.images import MONTAGE_MAX_TILES

    labels = np.zeros((40, 30, 100), np.uint8)
    labels[10:20, 5:15, 10:90] = 1  # 80 slices hold a label
    volume = Volume(np.random.default_rng(1).random((40, 30, 100)).astype(np.float32), np.eye(4))
    export_results([result({"m": Mask(labels)}, volume)], tmp_path,
                   ExportOptions(preview_format="png"))  # fmt: skip
    item = next(p for p in tmp_path.iterdir() if p.is_dir())
    sheet = np.asarray(PILImage.open(item / "m_overlay.png"))
    columns = rows = int(np.ceil(np.sqrt(MONTAGE_MAX_TILES)))
    assert sheet.shape == (rows * 42 - 2, columns * 32 - 2, 3)
    # all 64 tiles show the label (red-tinted where it is, grey elsewhere): none is a slice
    # without one
    for i in range(MONTAGE_MAX_TILES):
        y, x = (i // columns) * 42, (i % columns) * 32
        tile = sheet[y : y + 40, x : x + 30].astype(int)
        inside, outside = tile[12:20, 6:14], tile[25:38, 18:28]
        assert (inside[..., 0] - inside[..., 1]).mean() > 60
        assert abs((outside[..., 0] - outside[..., 1]).mean()) < 10


def test_previews_are_jpeg_by_default_png_when_asked_and_left_out_on_request(tmp_path, photo):
    """Previews (a kind's `overlay` exporter) are JPEG by default while the data files keep
    their format; `preview_format="png"` writes them lossless; `previews=False` leaves them
    out and keeps every data file."""
    labels = np.zeros((40, 60), np.uint8)
    labels[10:30, 20:40] = 1
    outputs = {"seg": Mask(labels), "det": boxes()}
    runs = {
        "default": ExportOptions(),
        "png": ExportOptions(preview_format="png"),
        "none": ExportOptions(previews=False),
    }
    names = {}
    for name, options in runs.items():
        export_results([result(outputs, photo)], tmp_path / name, options)
        names[name] = sorted(p.name for p in (tmp_path / name / "photo").iterdir())
    assert "seg_overlay.jpg" in names["default"] and "det_overlay.jpg" in names["default"]
    assert "seg.png" in names["default"]  # the label map stays lossless
    assert "seg_overlay.png" in names["png"] and "det_overlay.png" in names["png"]
    assert not [n for n in names["none"] if "overlay" in n]
    assert set(names["default"]) - set(names["none"]) == {"seg_overlay.jpg", "det_overlay.jpg"}


def test_captions_and_replies_jsonl(tmp_path, photo):
    other = Image(pixels=photo.pixels, name="other")
    export_results(
        [
            result(
                {
                    "caption": Caption("a red mug", 0.8, {"mug": 0.9}),
                    "reply": Reply("Sorry about the crack.", 0.7, evidence={"problem": "crack"}),
                },
                photo,
            ),
            result({"caption": Caption("a blue shoe")}, other),
        ],
        tmp_path,
    )
    lines = [json.loads(x) for x in (tmp_path / "caption.jsonl").read_text().splitlines()]
    assert [x["text"] for x in lines] == ["a red mug", "a blue shoe"]
    assert lines[0]["item"] == "photo" and lines[0]["tags"] == {"mug": 0.9}
    reply = json.loads((tmp_path / "reply.jsonl").read_text())
    assert reply["evidence"] == {"problem": "crack"} and reply["confidence"] == 0.7


def test_image_set_video_text_embeddings(tmp_path):
    tiles = ImageSet(
        tuple(Image(np.full((4, 4, 3), i * 50, np.uint8)) for i in range(3)), ("a", "b", "c")
    )
    video = Video(np.zeros((2, 4, 4, 3), np.uint8), fps=10)
    emb = Embeddings(np.eye(2, 5, dtype=np.float32), ("x", "y"), model="m")
    export_results(
        [result({"gallery": tiles, "clip": video, "note": Text("hi"), "emb": emb})], tmp_path
    )
    folder = tmp_path / "result"
    assert sorted(p.name for p in (folder / "gallery").iterdir()) == [
        "0000.png",
        "0001.png",
        "0002.png",
    ]
    assert len(list((folder / "clip").iterdir())) == 2
    assert (folder / "note.txt").read_text() == "hi"
    np.testing.assert_array_equal(np.load(folder / "emb.npy"), np.eye(2, 5))


def test_a_short_video_is_also_an_animated_gif(tmp_path):
    from PIL import Image as PILImage

    frames = np.zeros((5, 6, 8, 3), np.uint8)
    for t in range(5):
        frames[t, :, :, t % 3] = 50 * (t + 1)
    export_results([result({"clip": Video(frames, fps=4)})], tmp_path)
    with PILImage.open(tmp_path / "result" / "clip.gif") as gif:
        assert gif.is_animated and gif.n_frames == 5 and gif.size == (8, 6)
        assert gif.info["duration"] == 250 and gif.info["loop"] == 0
        for t in range(5):
            gif.seek(t)
            np.testing.assert_array_equal(np.asarray(gif.convert("RGB")), frames[t])
    assert (tmp_path / "result" / "clip.mp4").read_bytes()[4:8] == b"ftyp"


def test_a_long_video_is_frames_only_without_pyav(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    long = Video(np.zeros((300, 2, 2, 3), np.uint8), fps=25)  # over GIF_MAX_FRAMES: no GIF
    export_results([result({"clip": long})], tmp_path)
    assert sorted(p.name for p in (tmp_path / "result").iterdir()) == ["clip", "result.json"]
    assert len(list((tmp_path / "result" / "clip").iterdir())) == 300


def test_a_file_output_is_written_as_is_and_summarised(tmp_path):
    data = bytes(range(256)) * 4
    files = export_results(
        [result({"seg": File(data, ".seg.dcm", "application/dicom", "a DICOM SEG")})], tmp_path
    )
    written = tmp_path / "result" / "seg.seg.dcm"
    assert written in files and written.read_bytes() == data
    summary = json.loads((tmp_path / "result" / "result.json").read_text())["outputs"]["seg"]
    assert summary["kind"] == "file" and summary["bytes"] == 1024
    assert summary["media_type"] == "application/dicom" and summary["description"] == "a DICOM SEG"
    assert summary["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("suffix", ["dcm", "../x.dcm", ".a/b", "", ".", ".a.b.c.d"])
def test_a_file_output_refuses_a_suffix_that_is_not_one(suffix):
    with pytest.raises(ValueError, match="file suffix"):
        File(b"x", suffix)


def test_item_names_are_unique(tmp_path, photo):
    export_results(
        [result({"m": Metrics({"a": 1})}, photo), result({"m": Metrics({"a": 2})}, photo)], tmp_path
    )
    assert (tmp_path / "photo").is_dir() and (tmp_path / "photo-2").is_dir()


def test_names_from_inputs_and_outputs_stay_inside_the_folder_without_controls(tmp_path, photo):
    out = tmp_path / "out"
    sources = [Image(photo.pixels, name=name) for name in ("a\x1b[31mb", "..", "c\nd")]
    export_results([result({"../up\x07": Metrics({"a": 1})}, s) for s in sources], out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["__", "a_[31mb", "c_d", "run.json"]
    assert (out / "__" / ".._up_.json").is_file()
    assert not any(c in str(p) for p in out.rglob("*") for c in "\x1b\x07\n")


def test_types_reject_inconsistent_data():
    with pytest.raises(ValueError, match="xyxy"):
        Boxes(np.zeros((2, 3)), ("a", "b"), np.zeros(2), (4, 4))
    with pytest.raises(ValueError, match="class names"):
        Mask(np.full((2, 2), 3, np.uint8), ("bg", "a"))
    with pytest.raises(ValueError, match="channels"):
        Image(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="affine"):
        Volume(np.zeros((2, 2, 2)), np.eye(3))
