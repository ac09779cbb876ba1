"""The scene kind: camera + LiDAR frames. Sniffing point clouds by content, the Scene type's
checks and projection, its views, summary and exporters, and the cap on points per sweep."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from vlm_core.errors import InputError
from vlm_core.export.scene_views import BevMark, bird_eye_view, depth_colours, points_overlay
from vlm_core.io import probe_input
from vlm_core.io.readers import InputReader
from vlm_core.io.sniff import sniff_format
from vlm_core.kinds import INPUT_KINDS, Kind
from vlm_core.outputs.builtin import builtin_output_kinds
from vlm_core.types import Image, Scene

#: the KITTI convention: camera x right, y down, z forward; LiDAR x forward, y left, z up
VELO_TO_CAM = np.array(
    [[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
P2 = np.array([[200.0, 0.0, 160.0, 0.0], [0.0, 200.0, 90.0, 0.0], [0.0, 0.0, 1.0, 0.0]])


def _scene(cloud: np.ndarray, frames: int = 1) -> Scene:
    image = Image(np.full((180, 320, 3), 40, np.uint8))
    return Scene(
        images=(image,) * frames,
        clouds=(cloud.astype(np.float32),) * frames,
        projection=P2,
        lidar_to_camera=VELO_TO_CAM,
    )


def _wall(depth: float, lateral: float = 0.0) -> np.ndarray:
    """A 1 m square of points ``depth`` metres ahead, centred ``lateral`` metres left."""
    ys, zs = np.meshgrid(np.linspace(-0.5, 0.5, 11), np.linspace(-0.5, 0.5, 11))
    n = ys.size
    return np.c_[np.full(n, depth), ys.ravel() + lateral, zs.ravel(), np.full(n, 0.5)]


def test_scene_is_an_input_kind_with_a_core_output_kind():
    assert Kind.SCENE in INPUT_KINDS
    kind = builtin_output_kinds()["scene"]
    assert kind.resolve_type() is Scene
    assert set(kind.exporters) == {"overlay", "bev"}


def test_projection_puts_a_point_ahead_on_the_principal_point_and_drops_the_rest():
    cloud = np.array([[10, 0, 0, 1], [10, 1, 0, 1], [-10, 0, 0, 1], [10, 100, 0, 1]])
    index, uvz = _scene(cloud).project(0)
    assert index.tolist() == [0, 1]  # behind the camera and far outside the image: dropped
    assert uvz[0].tolist() == pytest.approx([160.0, 90.0, 10.0])
    assert uvz[1, 0] == pytest.approx(160.0 - 200.0 * 1 / 10)  # left in LiDAR = left on image


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"clouds": (np.zeros((3, 3), np.float32),) * 3}, "must be (N, 4) float32"),
        ({"clouds": (np.zeros((3, 4)),) * 3}, "must be (N, 4) float32"),
        ({"projection": np.eye(3)}, "projection must be 3x4"),
        ({"lidar_to_camera": np.eye(3)}, "lidar_to_camera must be 4x4"),
        ({"clouds": ()}, "3 images but 0 point clouds"),
        ({"frame_ids": ("a",)}, "frame_ids must match"),
    ],
)
def test_a_malformed_scene_is_refused_naming_the_field(change, message):
    base = {
        "images": (Image(np.zeros((4, 4, 3), np.uint8)),) * 3,
        "clouds": (np.zeros((2, 4), np.float32),) * 3,
        "projection": P2,
        "lidar_to_camera": VELO_TO_CAM,
    }
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Scene(**{**base, **change})


def test_depth_colours_run_from_red_near_to_blue_far():
    near, far = depth_colours(np.array([1.0, 100.0]))
    assert near[0] > near[2] and far[2] > far[0]


def test_points_overlay_paints_the_points_where_they_project():
    scene = _scene(_wall(10.0))
    before = scene.images[0].to_rgb_uint8()
    after = points_overlay(scene)
    changed = np.argwhere((after != before).any(axis=2))
    rows, cols = changed[:, 0], changed[:, 1]
    # a 1 m square at 10 m is 20 px a side around the principal point (160, 90)
    assert rows.min() >= 78 and rows.max() <= 102 and cols.min() >= 148 and cols.max() <= 172


def test_bird_eye_view_puts_points_ahead_up_and_left_left():
    scene = _scene(np.r_[_wall(20.0, lateral=10.0), _wall(60.0, lateral=-10.0)])
    view = bird_eye_view(scene, ahead=(0.0, 80.0), side=30.0, px_per_m=4.0)
    assert view.shape == (320, 240, 3)
    rgb = view.astype(int)
    bright = rgb.max(axis=2) - rgb.min(axis=2) > 60  # coloured points, not the grey grid
    # the 20 m wall: row (80 - 20) * 4 = 240, col (30 - 10) * 4 = 80; the 60 m one: 80, 160
    assert bright[236:244, 76:84].any() and bright[76:84, 156:164].any()
    assert not bright[236:244, 156:164].any()


def test_bird_eye_view_draws_a_mark_with_its_label():
    scene = _scene(_wall(20.0))
    plain = bird_eye_view(scene)
    marked = bird_eye_view(scene, marks=[BevMark(x=40.0, y=0.0, length=4, width=2, label="car")])
    differs = np.argwhere((plain != marked).any(axis=2))
    assert len(differs)
    row = (80.0 - 40.0) * 6.0  # the default view: 80 m ahead, 6 px per metre
    assert differs[:, 0].min() < row < differs[:, 0].max()


def test_scene_summary_and_line():
    kinds = builtin_output_kinds()
    summary = kinds.summarise(_scene(_wall(10.0), frames=2))
    assert summary["frames"] == 2 and summary["points"] == [121, 121]
    assert summary["image_size"] == [180, 320]
    json.dumps(summary)  # JSON-ready
    assert kinds.line(summary) == "2 frames, 121 points per sweep, camera 320x180"


def test_scene_exporters_write_the_views(tmp_path):
    from vlm_core.export.writer import ExportOptions, RunExport
    from vlm_core.types import Provenance, Result

    scene = _scene(_wall(10.0))
    provenance = Provenance("r", "t", "p", None, "0", {}, "cpu", "float32", 0, {}, (), {}, "")
    result = Result(task="t", outputs={"scene": scene}, provenance=provenance, input=scene)
    run = RunExport(tmp_path, ExportOptions(), builtin_output_kinds())
    run.write_output("scene", scene, result, tmp_path / "item")
    names = sorted(p.name for p in (tmp_path / "item").iterdir())
    assert names == ["scene_bev.png", "scene_points.jpg"]


def _kitti_like(path: Path, points: np.ndarray) -> Path:
    points.astype("<f4").tofile(path)
    return path


def test_point_clouds_are_sniffed_by_content(tmp_path):
    rng = np.random.default_rng(0)
    cloud = np.c_[rng.uniform(-60, 60, (500, 3)), rng.uniform(0, 1, 500)]
    assert sniff_format(_kitti_like(tmp_path / "scan.dat", cloud)) == "kitti-bin"
    cloud[3, 1] = np.nan  # a scan with a NaN point is still one: its reader names the NaN
    assert sniff_format(_kitti_like(tmp_path / "nan.dat", cloud)) == "kitti-bin"
    header = "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z\n"
    (tmp_path / "a").write_text(header + "SIZE 4 4 4\nDATA ascii\n")
    assert sniff_format(tmp_path / "a") == "pcd"
    las = bytearray(b"LASF" + bytes(300))
    (tmp_path / "b").write_bytes(bytes(las))
    assert sniff_format(tmp_path / "b") == "las"
    las[104] = 0x83  # point data format 3 with the LAZ compression bit
    (tmp_path / "c").write_bytes(bytes(las))
    assert sniff_format(tmp_path / "c") == "laz"


@pytest.mark.parametrize(
    "content",
    [
        b"hello world, this is a plain text file with no points in it at all.\n" * 4,
        bytes(range(256)) * 4,  # arbitrary binary
        struct.pack("<64f", *([float("nan")] * 64)),  # not finite
        struct.pack("<64f", *([5000.0] * 64)),  # kilometres away
        struct.pack("<64f", *([1.0, 2.0, 3.0, 900.0] * 16)),  # reflectance out of range
        bytes(64),  # all zero
    ],
)
def test_other_content_is_not_taken_for_a_kitti_scan(tmp_path, content):
    path = tmp_path / "x.bin"
    path.write_bytes(content)
    assert sniff_format(path) != "kitti-bin"


def test_a_sweep_over_the_point_cap_is_refused_from_its_header(tmp_path, monkeypatch):
    monkeypatch.setenv("VLM_MAX_CLOUD_POINTS", "1000")
    path = _kitti_like(tmp_path / "big.bin", np.ones((2000, 4)) * 0.5)
    reader = InputReader(
        format="kitti-bin", probe=lambda files: (1, files[0].stat().st_size // 16), load=print
    )
    with pytest.raises(
        InputError, match=r"claims 2,000 points in a sweep, over the limit of 1,000"
    ):
        probe_input(path, [Kind.SCENE], readers={"kitti-bin": reader})


def test_a_folder_with_no_usable_sweep_names_the_sweeps_problem_not_a_skipped_text(tmp_path):
    """In a KITTI folder the calibration texts are skipped (a scene task does not take text):
    when no sweep is usable, the error names why the sweep was refused."""
    from vlm_core.io.load import collect_inputs

    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "000000.txt").write_text("P2: 1 0 0 0 0 1 0 0 0 0 1 0\n")
    (tmp_path / "velodyne").mkdir()
    _kitti_like(tmp_path / "velodyne" / "000000.bin", np.full((8, 4), 0.5))

    def probe(files):
        raise InputError(f"{files[0]}: no camera image beside it")

    reader = InputReader(format="kitti-bin", probe=probe, load=print)
    with pytest.raises(InputError, match=r"first: .*000000.bin: no camera image"):
        collect_inputs([str(tmp_path)], [Kind.SCENE], readers={"kitti-bin": reader})
