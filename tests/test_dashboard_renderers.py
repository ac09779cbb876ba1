"""The dashboard's output renderers: the pure helpers that compute what is shown, and one
AppTest page per output type (tiny arrays) checking the widgets and text a user would see."""

from __future__ import annotations

import io
import sys
from typing import Any

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from vlm_dashboard.render_helpers import (
    WINDOW_PRESETS,
    as_closest_ras,
    blend,
    boxes_rows,
    embedding_rows,
    legend_rows,
    mask_centre,
    provenance_rows,
    slice_2d,
    slice_spacing,
    stretch_to_spacing,
    window_bounds,
    window_slice,
)

from vlm_core.export.images import mask_overlay
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
    Tracks,
    Video,
    Volume,
)

# ---------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("preset", "low", "high"),
    [
        ("CT soft tissue", -160.0, 240.0),
        ("CT lung", -1350.0, 150.0),
        ("CT bone", -500.0, 1300.0),
        ("Brain", 0.0, 80.0),
    ],
)
def test_window_presets_map_level_and_width_to_black_and_white(preset, low, high):
    assert window_bounds(np.zeros((2, 2, 2)), preset) == (low, high)
    mid = (low + high) / 2
    volume = np.array([low - 500, low, mid, high, high + 500], np.float32).reshape(5, 1, 1)
    values = window_slice(volume, "axial", 0, preset)  # (1, 5): rot90 of the (5, 1) slice
    assert values.dtype == np.uint8
    assert values[0].tolist() == [0, 0, 128, 255, 255]


def test_auto_window_spans_the_1st_to_99th_percentile():
    volume = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    low, high = window_bounds(volume, "MR / auto")
    assert low == pytest.approx(np.percentile(volume, 1)) and high == pytest.approx(
        np.percentile(volume, 99)
    )
    assert WINDOW_PRESETS["MR / auto"] is None
    sl = window_slice(volume, "axial", 0, "MR / auto")
    assert sl.min() == 0 and sl.max() > 0  # values below the 1st percentile clip to black


def test_auto_window_of_a_constant_volume_does_not_divide_by_zero():
    low, high = window_bounds(np.full((3, 3, 3), 7.0), "MR / auto")
    assert high > low
    assert window_slice(np.full((3, 3, 3), 7.0), 0, 1, "MR / auto").max() == 0


def test_slices_on_each_axis_have_the_display_shape_and_orientation():
    volume = np.random.default_rng(0).normal(size=(5, 6, 7))
    assert window_slice(volume, "axial", 3, "CT bone").shape == (6, 5)
    assert window_slice(volume, "coronal", 2, "CT bone").shape == (7, 5)
    assert window_slice(volume, "sagittal", 4, "CT bone").shape == (7, 6)
    assert window_slice(volume, 2, 3, "CT bone").shape == (6, 5)
    # anterior (high j) is the top row of an axial slice, superior (high k) of a coronal one
    assert slice_2d(volume, "axial", 3)[0, 1] == volume[1, 5, 3]
    assert slice_2d(volume, "coronal", 2)[0, 4] == volume[4, 2, 6]
    with pytest.raises(IndexError, match=r"outside 0\.\.6"):
        slice_2d(volume, "axial", 7)
    with pytest.raises(ValueError, match="unknown slice plane"):
        slice_2d(volume, "oblique", 0)
    with pytest.raises(ValueError, match="unknown window preset 'CT liver'"):
        window_bounds(volume, "CT liver")


def test_volumes_are_shown_in_the_closest_ras_orientation():
    volume = np.arange(24).reshape(2, 3, 4)
    lps = np.diag([-1.0, -1.0, 2.0, 1.0])
    ras, spacing = as_closest_ras(volume, lps)
    assert np.array_equal(ras, volume[::-1, ::-1, :]) and spacing == (1.0, 1.0, 2.0)
    swapped = np.array([[0, 0, 3, 0], [2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], float)
    ras, spacing = as_closest_ras(volume, swapped)  # voxel axes follow world (A, S, R)
    assert ras.shape == (4, 2, 3) and spacing == (3.0, 2.0, 1.0)
    assert ras[3, 1, 2] == volume[1, 2, 3]


def test_anisotropic_slices_are_stretched_to_square_millimetres():
    assert slice_spacing((0.5, 0.7, 3.0), "axial") == (0.7, 0.5)
    assert slice_spacing((0.5, 0.7, 3.0), "coronal") == (3.0, 0.5)
    assert slice_spacing((0.5, 0.7, 3.0), "sagittal") == (3.0, 0.7)
    assert stretch_to_spacing(np.zeros((4, 4, 3)), 3.0, 0.5).shape == (24, 4, 3)
    assert stretch_to_spacing(np.zeros((4, 4, 3)), 0.5, 1.0).shape == (4, 8, 3)
    assert stretch_to_spacing(np.zeros((4, 4, 3)), 1.0, 1.2).shape == (4, 4, 3)


def test_legend_counts_match_the_mask_and_colours_match_the_overlay():
    labels = np.zeros((6, 8), np.uint8)
    labels[1:3, 1:4] = 1
    labels[4:6, :] = 3
    mask = Mask(labels=labels, class_names=("background", "liver", "spleen", "kidney"))
    rows = legend_rows(mask)
    assert [r["class"] for r in rows] == ["background", "liver", "spleen", "kidney"]
    assert [r["count"] for r in rows] == [26, 6, 0, 16]
    assert rows[3]["percent"] == pytest.approx(100 * 16 / 48, abs=1e-3)
    assert rows[0]["colour"] is None
    painted = mask_overlay(np.zeros((6, 8, 3), np.uint8), labels, opacity=1.0)
    for row, (y, x) in ((rows[1], (1, 1)), (rows[3], (5, 0))):
        assert row["colour"] == "#{:02x}{:02x}{:02x}".format(*painted[y, x])


def test_legend_of_a_boolean_volume_mask_and_its_centre():
    labels = np.zeros((4, 5, 6), bool)
    labels[1:3, 2:5, 4] = True
    rows = legend_rows(Mask(labels=labels))
    assert [r["count"] for r in rows] == [120 - 6, 6]
    assert mask_centre(labels) == (1, 3, 4)
    assert mask_centre(np.zeros((4, 5, 6), bool)) == (2, 2, 3)


def test_table_rows_for_boxes_embeddings_blend_and_provenance():
    boxes = Boxes(
        xyxy=np.array([[1, 2, 5, 6]], np.float32),
        labels=("car",),
        scores=np.array([0.875]),
        image_size=(10, 10),
        track_ids=np.array([7]),
    )
    assert boxes_rows(boxes) == [
        {"label": "car", "score": 0.875, "track_id": 7, "x1": 1, "y1": 2, "x2": 5, "y2": 6}
    ]
    emb = Embeddings(vectors=np.array([[3, 4, 0], [0, 0, 2]], np.float32), ids=("a", "b"))
    rows = embedding_rows(emb, rows=1, dims=2)
    assert rows == [{"id": "a", "norm": 5.0, "d0": 3.0, "d1": 4.0}]
    mixed = blend(np.zeros((1, 1, 3), np.uint8), np.full((1, 1, 3), 200, np.uint8), 0.25)
    assert mixed.tolist() == [[[50, 50, 50]]]
    table = {r["field"]: r["value"] for r in provenance_rows(_provenance("run-1"))}
    assert table["run id"] == "run-1" and table["seed"] == "3"
    assert table["params"] == "threshold=0.5" and "12.5 ms" in table["timings"]
    assert "abc123" in table["input sha256 (image)"]


# ---------------------------------------------------------------- Streamlit pages


def _provenance(run_id: str) -> Provenance:
    return Provenance(
        run_id=run_id,
        task="demo.segment",
        plugin="demo",
        plugin_version="1.2.0",
        core_version="0.1.0",
        weights_sha256={},
        device="cpu",
        dtype="float32",
        seed=3,
        params={"threshold": 0.5},
        inputs=(InputRecord("scan.png", "abc123", "png", "image"),),
        timings_ms={"run": 12.5},
        started_at="2025-01-01T00:00:00Z",
    )


def _show(outputs: dict, source: object = None, message: str | None = None) -> None:
    """The script under test: every output on one page (runs in AppTest's own namespace)."""
    from vlm_dashboard.renderers import render_output

    for name, output in outputs.items():
        render_output(name, output, source, key="page", message=message)


def _show_results(results: list) -> None:
    from vlm_dashboard.renderers import render_result

    for i, result in enumerate(results):
        render_result(result, key=f"result-{i}")


def page(outputs: dict[str, Any], source: Any = None, message: str | None = None) -> AppTest:
    at = AppTest.from_function(_show, args=(outputs, source, message), default_timeout=30).run()
    assert not at.exception, at.exception
    return at


def rgb(h: int = 8, w: int = 10) -> Image:
    return Image(pixels=np.random.default_rng(1).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_image_beside_its_source_with_an_opacity_slider():
    at = page({"inverted": Image(pixels=255 - rgb().pixels)}, rgb())
    assert len(at.image) == 3 and at.slider[0].label == "Overlay opacity"
    at.slider[0].set_value(1.0).run()
    assert not at.exception
    assert "overlay at 100%" in str(at.image[2].proto)


def test_boxes_drawn_on_the_image_with_a_table():
    boxes = Boxes(
        xyxy=np.array([[1, 1, 6, 5], [2, 2, 9, 7]], np.float32),
        labels=("car", "person"),
        scores=np.array([0.9, 0.4]),
        image_size=(8, 10),
    )
    at = page({"detections": boxes}, rgb())
    assert len(at.image) == 1
    assert list(at.dataframe[0].value["label"]) == ["car", "person"]


def test_mask_overlay_with_a_legend_naming_each_class():
    labels = np.zeros((8, 10), np.uint8)
    labels[2:5, 2:5] = 2
    mask = Mask(labels=labels, class_names=("background", "crack", "dent"))
    at = page({"defects": mask}, rgb())
    legend = at.dataframe[0].value
    assert list(legend["class"]) == ["background", "crack", "dent"]
    assert list(legend["pixels"]) == [71, 0, 9]
    assert at.slider[0].value == 0.5


def test_volume_has_three_slice_sliders_and_window_presets():
    volume = Volume(array=np.random.default_rng(2).normal(40, 100, (6, 7, 8)).astype(np.float32))
    at = page({"ct": volume})
    assert [s.label for s in at.slider] == ["Axial slice", "Coronal slice", "Sagittal slice"]
    assert [s.max for s in at.slider] == [7, 6, 5] and at.slider[0].value == 4
    assert list(at.radio[0].options) == list(WINDOW_PRESETS)
    at.radio[0].set_value("CT lung").run()
    at.slider[0].set_value(0).run()
    assert not at.exception and len(at.image) == 3


def test_volume_mask_is_overlaid_on_the_same_slices():
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[1:3, 1:3, 6] = 1
    mask = Mask(labels=labels, class_names=("background", "tumour"))
    volume = Volume(array=np.zeros((6, 7, 8), np.int16))
    at = page({"segmentation": mask}, volume)
    assert len(at.slider) == 4  # opacity and three slices
    assert [s.value for s in at.slider if s.label == "Axial slice"] == [6]  # opens on the mask
    assert list(at.dataframe[0].value["voxels"]) == [332, 4]
    assert len(at.radio) == 1 and len(at.image) == 3


def test_video_frame_slider():
    frames = np.zeros((5, 4, 6, 3), np.uint8)
    at = page({"clip": Video(frames=frames, fps=10)})
    assert at.slider[0].label == "Frame" and at.slider[0].max == 4
    at.slider[0].set_value(3).run()
    assert "frame 4 / 5" in str(at.image[0].proto)
    at.toggle[0].set_value(True).run()  # Play: the frames as a looping animated GIF
    assert not at.slider and "5 frames at 10 fps, looping" in str(at.image[0].proto)


def test_a_long_video_plays_as_mp4_above_its_frame_slider():
    pytest.importorskip("av")
    frames = np.zeros((300, 4, 6, 3), np.uint8)  # over GIF_MAX_FRAMES: no GIF toggle
    at = page({"clip": Video(frames=frames, fps=25)})
    assert not at.toggle
    (video,) = at.get("video")
    assert video.proto.url.endswith(".mp4")
    assert at.slider[0].label == "Frame" and at.slider[0].max == 299
    at.slider[0].set_value(250).run()
    assert not at.exception and "frame 251 / 300 · 10.00 s" in str(at.image[0].proto)


def test_the_mp4_of_a_video_is_encoded_once():
    av = pytest.importorskip("av")
    from vlm_dashboard.renderers import _mp4

    video = Video(frames=np.zeros((300, 4, 6, 3), np.uint8), fps=25)
    data = _mp4(video)
    assert data is not None and _mp4(video) is data
    with av.open(io.BytesIO(data)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 300
    assert _mp4(Video(frames=np.zeros((300, 4, 6, 2), np.uint8))) is None


def test_a_long_video_without_pyav_has_the_frame_slider_only(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    at = page({"clip": Video(frames=np.zeros((300, 4, 6, 3), np.uint8), fps=25)})
    assert not at.get("video") and not at.toggle and at.slider[0].max == 299


def _tracks(size: tuple[int, int] = (8, 10)) -> Tracks:
    def frame(rows: list[tuple[int, str, float]]) -> Boxes:
        return Boxes(
            xyxy=np.array([[1, 1, 6, 5]] * len(rows), np.float32).reshape(-1, 4),
            labels=tuple(r[1] for r in rows),
            scores=np.array([r[2] for r in rows]),
            image_size=size,
            track_ids=np.array([r[0] for r in rows], np.int64),
        )

    return Tracks(
        frames=(frame([(4, "car", 0.9)]), frame([(4, "car", 0.7), (9, "bus", 0.5)]), frame([])),
        fps=2.0,
    )


def test_tracks_have_counts_a_frame_slider_over_the_video_and_a_track_table():
    frames = np.zeros((3, 8, 10, 3), np.uint8)
    frames[1] = 255  # frame 1 is white: the overlay of frame 1 shows it
    at = page({"tracks": _tracks()}, Video(frames=frames, fps=2.0))
    assert [(m.label, m.value) for m in at.metric] == [("Frames", "3"), ("Tracks", "2"),
                                                       ("Boxes", "3")]  # fmt: skip
    table = at.dataframe[0].value
    assert list(table["track_id"]) == [4, 9] and list(table["frames"]) == [2, 1]
    assert list(table["label"]) == ["car", "bus"] and table["mean_score"][0] == pytest.approx(0.8)
    assert at.slider[0].label == "Frame" and at.slider[0].max == 2
    at.slider[0].set_value(1).run()
    assert not at.exception
    assert "frame 2 / 3 · 0.50 s · 2 boxes" in str(at.image[0].proto)
    assert "no input video" not in str(at.image[0].proto)
    at = page({"tracks": _tracks()}, Video(frames=frames[:2], fps=2.0))
    at.slider[0].set_value(2).run()
    assert "after the end of the input video" in str(at.image[0].proto)


def test_tracks_without_their_video_are_drawn_on_a_blank_canvas():
    at = page({"tracks": _tracks()}, rgb())
    assert "frame 1 / 3 · 0.00 s · 1 boxes · no input video of its size" in str(at.image[0].proto)
    empty = Tracks(frames=(_tracks().frames[2],), fps=5.0)
    at = page({"tracks": empty})
    assert not at.slider and "No tracks." in at.info[0].value


def test_text_caption_embeddings_and_metrics():
    outputs = {
        "notes": Text("ten cars"),
        "caption": Caption("a red car on a road", score=0.8, tags={"car": 0.9, "tree": 0.1}),
        "vectors": Embeddings(vectors=np.ones((3, 4), np.float32), ids=("a", "b", "c")),
        "scores": Metrics(
            values={"dice": 0.81},
            per_class={"liver": {"dice": 0.9, "iou": 0.8}, "spleen": {"dice": 0.7, "iou": 0.6}},
        ),
    }
    at = page(outputs, rgb())
    assert at.text_area[0].value == "ten cars" and at.text_area[0].disabled
    assert "a red car on a road" in [m.value for m in at.markdown]
    tables = [df.value for df in at.dataframe]
    assert list(tables[0]["tag"]) == ["car", "tree"]
    assert list(tables[1]["id"]) == ["a", "b", "c"] and tables[1]["norm"][0] == 2.0
    assert list(tables[2]["metric"]) == ["dice"]
    assert list(tables[3].index) == ["liver", "spleen"]
    assert at.selectbox[0].options == ["dice", "iou"]


def test_reply_is_a_chat_beside_the_customers_image():
    reply = Reply(
        "Sorry about the crack — a replacement is on its way.", 0.92, False, {"defect": "crack"}
    )
    at = page({"answer": reply}, rgb(), message="My mug arrived broken")
    user, assistant = at.chat_message
    assert (user.name, assistant.name) == ("user", "assistant")
    assert user.markdown[0].value == "My mug arrived broken"
    assert len(user.image) == 1
    assert assistant.markdown[0].value.startswith("Sorry about the crack")
    assert "confidence 92%" in str(assistant.get("progress")[0].proto)
    assert list(assistant.dataframe[0].value["evidence"]) == ["defect"]


def test_clarifying_question_is_marked_and_a_text_source_is_the_message():
    reply = Reply("Which part is broken?", 0.3, clarifying_question=True)
    at = page({"answer": reply}, Text("it is broken"))
    user, assistant = at.chat_message
    assert user.markdown[0].value == "it is broken"
    assert "Clarifying question" in assistant.caption[0].value


def test_image_set_gallery_with_labels():
    images = ImageSet(images=tuple(rgb(4, 4) for _ in range(5)), labels=tuple("abcde"))
    at = page({"gallery": images})
    assert len(at.image) == 5
    assert "e" in str(at.image[4].proto.imgs[0].caption)


def test_a_file_is_described_and_offered_as_a_download():
    seg = File(b"DICM" * 300, ".seg.dcm", "application/dicom", "DICOM SEG of the mask")
    at = page({"dicom_seg": seg})
    assert "DICOM SEG of the mask · application/dicom · 1.2 KiB" in [c.value for c in at.caption]
    buttons = at.get("download_button")
    assert len(buttons) == 1 and "Download dicom_seg.seg.dcm" in str(buttons[0].proto)


def test_unknown_type_warns_and_a_failing_renderer_reports_its_output():
    bad_video = Video(frames=np.zeros((2, 4, 4, 2), np.uint8))  # two channels: not displayable
    at = page({"odd": {"not": "an output"}, "clip": bad_video})
    assert "output 'odd' of type dict" in at.warning[0].value
    assert "Could not show output 'clip' (Video)" in at.error[0].value


def test_results_share_a_page_with_provenance_in_a_collapsed_expander():
    def result(run_id: str) -> Result:
        outputs = {"mask": Mask(labels=np.eye(8, 10, dtype=np.uint8)), "notes": Text("ok")}
        return Result("demo.segment", outputs, _provenance(run_id), rgb())

    at = AppTest.from_function(
        _show_results, args=([result("run-a"), result("run-b")],), default_timeout=30
    ).run()
    assert not at.exception
    assert [s.value for s in at.subheader] == ["mask", "notes", "mask", "notes"]
    assert [e.label for e in at.expander] == ["Provenance", "Provenance"]
    assert not at.expander[0].proto.expanded
    provenance = at.expander[1].dataframe[0].value
    assert "run-b" in list(provenance["value"])
    assert len(at.slider) == 2 and at.slider[0].key != at.slider[1].key
