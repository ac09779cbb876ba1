"""`driving.fuse` and its output kind `driving.ranges`: the task on a camera + LiDAR frame, the
summary, the `vlm run` line and the files (KITTI results that read back, JSON, overlays, the
bird's-eye view)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image as PILImage
from vlm_driving import fuse_outputs
from vlm_driving.fuse import run
from vlm_driving.fuse_outputs import RangedFrame, Ranges
from vlm_driving.kitti import read_labels
from vlm_driving.params import FuseParams

from vlm_core.export.writer import ExportOptions, ItemExport, RunExport
from vlm_core.outputs.kind import OutputKinds
from vlm_core.tasks import RunContext
from vlm_core.types import Boxes, Image, Scene

SAMPLES = Path(__file__).resolve().parents[1] / "vlm_driving" / "samples"
#: LiDAR (x forward, y left, z up) → camera (x right, y down, z forward), the LiDAR 1.7 m up
LIDAR_TO_CAMERA = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
MOUNT = 1.7


def _kinds() -> OutputKinds:
    """The core's kinds and `driving.ranges`, as the installed plugin registers it."""
    from vlm_core.plugins import load_registry

    return load_registry().output_kinds


def _street() -> np.ndarray:
    return np.asarray(PILImage.open(SAMPLES / "street.png").convert("RGB"))


def _projection(width: int, height: int) -> np.ndarray:
    f = 0.8 * width
    return np.array([[f, 0, width / 2, 0], [0, f, height / 2, 0], [0, 0, 1, 0.0]])


def _scene(frames: int = 1, cloud: np.ndarray | None = None) -> Scene:
    rgb = _street()
    height, width = rgb.shape[:2]
    if cloud is None:
        rng = np.random.default_rng(8_400_010)
        xyz = np.c_[rng.uniform(2, 60, 8000), rng.uniform(-15, 15, 8000), np.full(8000, -MOUNT)]
        cloud = np.c_[xyz, np.zeros(len(xyz))].astype(np.float32)
    return Scene(
        images=(Image(pixels=rgb),) * frames,
        clouds=(cloud,) * frames,
        projection=_projection(width, height),
        lidar_to_camera=LIDAR_TO_CAMERA,
        frame_ids=tuple(f"{t:06d}" for t in range(frames)),
        name="street",
    )


def _ranges(track: bool = False) -> Ranges:
    boxes = Boxes(
        xyxy=np.array([[10, 20, 110, 90], [200, 40, 240, 120], [300, 50, 320, 60]], np.float32),
        labels=("car", "pedestrian", "traffic sign"),
        scores=np.array([0.9, 0.7, 0.5], np.float32),
        image_size=(360, 640),
        track_ids=np.array([3, 4, 5]) if track else None,
        class_names=("car", "pedestrian", "traffic sign"),
    )
    frame = RangedFrame(
        boxes=boxes,
        distance=np.array([8.43, 21.0, np.nan]),
        points=np.array([120, 14, 2]),
        confidence=np.array([0.95, 0.6, 0.0]),
        location=np.array([[-1.0, 1.6, 8.43], [2.0, 1.6, 21.0], [np.nan] * 3]),
        lidar=np.array([[8.43, 1.0, -1.7], [21.0, -2.0, -1.7], [np.nan] * 3]),
        frame_id="000042",
    )
    return Ranges(frames=(frame,), fps=10.0)


def _export(tmp_path: Path, output: Ranges, scene: Scene | None) -> RunExport:
    run_export = RunExport(tmp_path, ExportOptions(preview_format="png"), _kinds())
    result = SimpleNamespace(input=scene)
    for fmt, export in _kinds()["driving.ranges"].resolve_exporters():
        export(
            ItemExport(run_export, tmp_path / "item", result, fmt == "overlay"), "objects", output
        )
    return run_export


def test_the_summary_and_the_line_name_every_object_and_the_nearest() -> None:
    found = _kinds().summarise(_ranges())
    assert found["kind"] == "driving.ranges"
    assert found["objects"] == 3 and found["measured"] == 2 and found["min_points"] == 5
    objects = found["per_frame"][0]["objects"]
    assert [o["class"] for o in objects] == ["car", "pedestrian", "traffic sign"]
    assert objects[0]["distance_m"] == 8.43 and objects[2]["distance_m"] is None
    assert objects[2]["location"] is None and objects[1]["points"] == 14
    json.dumps(found)  # JSON values only (no NaN)
    line = _kinds().line(found)
    assert line == "3 objects, 2 with distances, nearest car at 8.4 m"


def test_the_files_kitti_results_that_read_back_json_overlay_and_bev(tmp_path: Path) -> None:
    scene = Scene(
        images=(Image(pixels=np.zeros((360, 640, 3), np.uint8)),),
        clouds=(np.zeros((10, 4), np.float32),),
        projection=_projection(640, 360),
        lidar_to_camera=LIDAR_TO_CAMERA,
        frame_ids=("000042",),
    )
    written = {str(p.relative_to(tmp_path)) for p in _export(tmp_path, _ranges(), scene).files}
    assert written == {
        "item/objects.kitti/000042.txt",
        "item/objects.json",
        "item/objects_overlay.png",
        "item/objects_points.png",
        "item/objects_bev.png",
    }
    labels = read_labels(tmp_path / "item" / "objects.kitti" / "000042.txt")
    assert [o.type for o in labels] == ["Car", "Pedestrian", "Traffic_sign"]
    assert labels[0].location == (-1.0, 1.6, 8.43) and labels[0].score == pytest.approx(0.9)
    assert labels[0].dimensions == (-1.0, -1.0, -1.0)  # unknown, as KITTI writes it
    assert labels[2].location == (-1000.0, -1000.0, -1000.0)  # no distance
    assert json.loads((tmp_path / "item" / "objects.json").read_text())["measured"] == 2
    overlay = np.asarray(PILImage.open(tmp_path / "item" / "objects_overlay.png"))
    assert overlay.shape == (360, 640, 3) and overlay.any()


def test_a_sequence_gets_an_mp4_of_its_tracks_and_a_view_per_frame(tmp_path: Path) -> None:
    frame = _ranges(track=True).frames[0]
    frames = tuple(RangedFrame(**{**frame.__dict__, "frame_id": f"{t:06d}"}) for t in range(3))
    scene = _scene(3)
    written = {
        str(p.relative_to(tmp_path))
        for p in _export(tmp_path, Ranges(frames=frames, fps=10.0), scene).files
    }
    assert "item/objects_overlay.mp4" in written
    assert {f"item/objects_bev/{t:06d}.png" for t in range(3)} <= written
    assert {f"item/objects.kitti/{t:06d}.txt" for t in range(3)} <= written
    line = fuse_outputs.cli_line(fuse_outputs.summary(Ranges(frames=frames, fps=10.0)))
    assert line.startswith("9 objects in 3 frames (3 tracks), 6 with distances")


def test_the_task_ranges_a_detected_car_on_a_wall_of_points(tmp_path: Path) -> None:
    ctx = RunContext(task="driving.fuse", plugin="driving", requested_device="cpu")
    [first] = run([_scene()], FuseParams(), ctx)
    boxes = first["objects"].frames[0].boxes
    assert "car" in boxes.labels and list(first) == ["objects"]
    # put a wall of points 15 m ahead exactly behind the first car's box
    x1, y1, x2, y2 = boxes.xyxy[boxes.labels.index("car")]
    u, v = np.meshgrid(np.linspace(x1, x2, 30), np.linspace(y1, y2, 30))
    scene = _scene()
    rays = np.linalg.solve(scene.projection[:, :3], np.c_[u.ravel(), v.ravel(), np.ones(900)].T).T
    camera = rays / rays[:, 2:3] * 15.0
    lidar = np.c_[camera[:, 2], -camera[:, 0], -camera[:, 1]]
    cloud = np.r_[scene.clouds[0], np.c_[lidar, np.zeros(900)].astype(np.float32)]
    [second] = run([_scene(cloud=cloud)], FuseParams(), ctx)
    ranges = second["objects"]
    i = ranges.frames[0].boxes.labels.index("car")
    assert abs(ranges.frames[0].distance[i] - 15.0) < 0.05
    assert ranges.frames[0].points[i] > 100


def test_the_task_refuses_what_is_not_a_scene() -> None:
    from vlm_core.errors import InputError

    ctx = RunContext(task="driving.fuse", plugin="driving", requested_device="cpu")
    with pytest.raises(InputError, match="camera \\+ LiDAR scenes"):
        run([Image(pixels=_street())], FuseParams(), ctx)
