"""Fusion on hand-made camera + LiDAR frames: a wall of points at a known depth standing on a
ground plane, seen by a KITTI-like calibration (LiDAR x forward, y left, z up; camera x right,
y down, z forward)."""

from __future__ import annotations

import numpy as np
import pytest
from vlm_driving.fusion import (
    FusionSettings,
    face_distance,
    fit_ground,
    range_boxes,
    ray_points,
    shrink,
    to_lidar,
)

from vlm_core.types import Image, Scene

WIDTH, HEIGHT, FOCAL = 400, 200, 300.0
#: the LiDAR sits this high above the road
MOUNT = 1.7
#: LiDAR → camera: axes swapped, the camera 0.27 m ahead of the LiDAR and 0.08 m lower
LIDAR_TO_CAMERA = np.array(
    [[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27], [0, 0, 0, 1.0]]
)
PROJECTION = np.array(
    [[FOCAL, 0.0, WIDTH / 2, 4.5], [0.0, FOCAL, HEIGHT / 2, 0.0], [0.0, 0.0, 1.0, 0.0]]
)


def _ground(rng: np.random.Generator, count: int = 6000, tilt: float = 0.0) -> np.ndarray:
    x = rng.uniform(2.0, 60.0, count)
    y = rng.uniform(-15.0, 15.0, count)
    z = -MOUNT + tilt * x + rng.normal(0.0, 0.02, count)
    return np.c_[x, y, z]


def _wall(
    rng: np.random.Generator, x: float, y: tuple[float, float], top: float, count: int
) -> np.ndarray:
    """A vertical face of an object at forward LiDAR x, from the road up to ``top`` metres."""
    return np.c_[
        x + rng.normal(0.0, 0.02, count),
        rng.uniform(*y, count),
        rng.uniform(-MOUNT + 0.05, -MOUNT + top, count),
    ]


def _scene(*parts: np.ndarray) -> Scene:
    xyz = np.concatenate(parts)
    cloud = np.c_[xyz, np.full(len(xyz), 0.5)].astype(np.float32)
    image = Image(pixels=np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    return Scene(
        images=(image,), clouds=(cloud,), projection=PROJECTION, lidar_to_camera=LIDAR_TO_CAMERA
    )


def _box_of(scene: Scene, xyz: np.ndarray) -> np.ndarray:
    """The pixel box around the projection of LiDAR points ``xyz``."""
    cam = (np.c_[xyz, np.ones(len(xyz))] @ LIDAR_TO_CAMERA.T)[:, :3]
    uvw = np.c_[cam, np.ones(len(cam))] @ PROJECTION.T
    uv = uvw[:, :2] / uvw[:, 2:]
    return np.r_[uv.min(0), uv.max(0)]


def test_a_wall_on_the_road_gets_its_forward_distance_within_5_cm() -> None:
    rng = np.random.default_rng(8_400_000)
    wall = _wall(rng, 12.27, (-1.0, 1.0), 1.5, 400)
    behind = _wall(rng, 40.27, (-8.0, 8.0), 6.0, 3000)  # a building behind it
    scene = _scene(_ground(rng), wall, behind)
    box = _box_of(scene, np.array([[12.27, -1.0, -MOUNT], [12.27, 1.0, -MOUNT + 1.5]]))
    found = range_boxes(scene, 0, box[None])
    # the camera is 0.27 m ahead of the LiDAR: the wall is 12.0 m in front of it
    assert abs(found.distance[0] - 12.0) < 0.05, found.distance
    assert found.points[0] >= 100 and 0.5 < found.confidence[0] <= 1.0
    # the location is on the box's bottom-centre ray at that depth: on the road, in the middle
    x, y, z = found.location[0]
    assert abs(z - found.distance[0]) < 1e-9 and abs(x) < 0.1, found.location
    assert abs(y - (MOUNT - 0.08)) < 0.3  # camera y points down; the road is 1.62 m below it
    assert np.allclose(found.lidar[0], to_lidar(LIDAR_TO_CAMERA, found.location[:1])[0])
    assert abs(found.lidar[0, 0] - 12.27) < 0.05


def test_ground_points_are_not_counted() -> None:
    rng = np.random.default_rng(8_400_001)
    road = _ground(rng, 20000)
    scene = _scene(road)
    # a box over the road alone, in front of the camera: every point in it is ground
    box = _box_of(scene, np.array([[8.0, -2.0, -MOUNT], [15.0, 2.0, -MOUNT + 0.5]]))
    with_removal = range_boxes(scene, 0, box[None])
    without = range_boxes(scene, 0, box[None], ground=False)
    assert without.points[0] > 50
    assert with_removal.points[0] == 0 and np.isnan(with_removal.distance[0])


def test_a_box_with_no_points_gets_nan_and_a_count_of_zero() -> None:
    rng = np.random.default_rng(8_400_002)
    scene = _scene(_ground(rng, 2000))
    found = range_boxes(scene, 0, np.array([[10.0, 5.0, 40.0, 30.0]]))  # sky: nothing there
    assert found.points.tolist() == [0] and np.isnan(found.distance[0])
    assert found.confidence[0] == 0.0 and np.isnan(found.location[0]).all()
    assert len(range_boxes(scene, 0, np.zeros((0, 4)))) == 0


def test_under_the_minimum_of_points_the_distance_is_nan() -> None:
    settings = FusionSettings(min_points=5)
    assert np.isnan(face_distance(np.array([10.0, 10.1, 10.0, 10.05]), settings)[0])
    assert face_distance(np.full(5, 10.0), settings)[0] == pytest.approx(10.0)


def test_the_largest_depth_cluster_is_taken_not_stray_points_or_the_background() -> None:
    rng = np.random.default_rng(8_400_003)
    face = 20.0 + rng.normal(0, 0.02, 120)
    background = 45.0 + rng.normal(0, 0.3, 60)  # a wall behind it, at the box's edges
    stray = np.array([3.0, 7.5])  # rain, a sign post's edge
    distance, confidence = face_distance(np.r_[face, background, stray], FusionSettings())
    assert abs(distance - 20.0) < 0.05 and 0 < confidence < 1


def test_a_box_holding_a_nearer_objects_box_is_measured_on_its_own_points() -> None:
    rng = np.random.default_rng(8_400_005)
    truck = _wall(rng, 30.27, (-1.3, 1.3), 3.5, 400)  # tall and far
    walker = _wall(rng, 15.27, (-0.3, 0.3), 1.6, 1500)  # before the truck, its head in its box
    scene = _scene(_ground(rng), truck, walker)
    truck_box = _box_of(scene, np.array([[30.27, -1.3, -MOUNT], [30.27, 1.3, -MOUNT + 3.5]]))
    walker_box = _box_of(scene, np.array([[15.27, -0.3, -MOUNT], [15.27, 0.3, -MOUNT + 1.6]]))
    found = range_boxes(scene, 0, np.stack([truck_box, walker_box]))
    assert np.allclose(found.distance, [30.0, 15.0], atol=0.05), found.distance
    alone = range_boxes(scene, 0, truck_box[None], FusionSettings(exclusive=False))
    assert abs(alone.distance[0] - 15.0) < 0.05  # without the walker's box, the walker wins


def test_the_ground_plane_of_a_sloped_road_is_found() -> None:
    rng = np.random.default_rng(8_400_004)
    road = _ground(rng, 5000, tilt=0.05)  # a 5% climb
    clutter = _wall(rng, 20.0, (-3, 3), 3.0, 1500) + np.array([0.0, 0.0, 1.0])  # on the slope
    plane = fit_ground(np.r_[road, clutter])
    assert plane is not None
    heights = plane.height(road)
    assert np.percentile(np.abs(heights), 95) < 0.06
    assert (plane.height(clutter) > 0.2).mean() > 0.85  # its foot is ground


def test_rays_and_shrinking() -> None:
    points = np.array([[1.0, 1.5, 10.0], [-3.0, 0.2, 30.0]])
    uvw = np.c_[points, np.ones(2)] @ PROJECTION.T
    uv = uvw[:, :2] / uvw[:, 2:]
    assert np.allclose(ray_points(PROJECTION, uv, points[:, 2]), points)
    assert np.allclose(shrink(np.array([[0, 0, 10, 20]]), 0.1), [[1, 2, 9, 18]])


def test_a_thin_plate_one_scan_line_crosses_at_its_lower_edge_is_still_measured() -> None:
    """A sign plate whose only returns lie on its box's bottom row: the shrunk box holds none
    of them, so the whole box is used rather than no distance."""
    rng = np.random.default_rng(8_400_001)
    top = np.array([[19.27, -0.4, 0.9], [19.27, 0.4, 1.6]])  # the plate, 0.9 to 1.6 m up
    line = np.c_[np.full(11, 19.27), np.linspace(-0.38, 0.38, 11), np.full(11, 0.9)]
    scene = _scene(_ground(rng), line)
    box = _box_of(scene, top)
    found = range_boxes(scene, 0, box[None])
    assert found.points[0] == 11 and abs(found.distance[0] - 19.0) < 0.05, found
