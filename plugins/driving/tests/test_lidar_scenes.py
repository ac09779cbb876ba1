"""The synthetic LiDAR and its KITTI-layout frames. The sweep must be reproducible, and it must
agree with the image rendered from the same world: hits on an object project into its rendered
box through the calibration, the ground lies at the mount height, and the truth distance is
the depth of the face the camera sees. It must also read back through the KITTI readers.
Seeds 8_400_000+ (the LiDAR seed plan's test range)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from street_worlds import car, street
from vlm_driving import kitti
from vlm_driving.lidar import (
    GROUND,
    OBJECT,
    LidarSpec,
    _rays,
    calibration,
    cast,
    cuboid,
    origin,
    solids,
    sweep,
    world_to_camera,
    world_to_lidar,
)
from vlm_driving.lidar_scenes import (
    TruthObject,
    generate,
    generate_frame,
    generate_sequence,
    main,
    spec_from_record,
    truth,
    write_kitti,
    write_kitti_sequence,
)
from vlm_driving.scenes import (
    CAMERA_HEIGHT,
    Look,
    random_world,
    render,
    scene,
)

SEED = 8_400_000
SAMPLE = Path(__file__).resolve().parents[1] / "vlm_driving" / "samples" / "kitti"
#: The camera's side only, to keep the tests quick.
FORWARD = LidarSpec(azimuth_range=(-60.0, 60.0))


def _camera(cloud: np.ndarray, calib: kitti.Calibration) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame points (N, 3) and their pixels (N, 2)."""
    xyz1 = np.c_[cloud[:, :3].astype(np.float64), np.ones(len(cloud))]
    cam = (xyz1 @ calib.lidar_to_camera.T)[:, :3]
    uvw = np.c_[cam, np.ones(len(cam))] @ calib.P2.T
    return cam, uvw[:, :2] / uvw[:, 2:3]


def test_a_seed_gives_the_same_frame_and_another_seed_another() -> None:
    a, truth_a = generate(SEED, 320, 180, FORWARD)
    b, truth_b = generate(SEED, 320, 180, FORWARD)
    c, _ = generate(SEED + 1, 320, 180, FORWARD)
    assert np.array_equal(a.clouds[0], b.clouds[0]) and truth_a == truth_b
    assert np.array_equal(a.images[0].pixels, b.images[0].pixels)
    assert not np.array_equal(a.clouds[0][:1000], c.clouds[0][:1000])
    # the image is the scene generator's own for the seed
    assert np.array_equal(a.images[0].pixels, scene(SEED, 320, 180).image)


def test_points_are_finite_within_range_and_about_as_many_as_a_sweep_returns() -> None:
    spec = LidarSpec()
    for seed in range(SEED, SEED + 3):
        world, _, cloud, _ = generate_frame(seed, 160, 90, spec)
        p = cloud.points
        assert p.dtype == np.float32 and p.shape[1] == 4 and np.isfinite(p).all()
        r = np.linalg.norm(p[:, :3], axis=1)
        assert r.max() <= spec.max_range + 0.2 and r.min() >= spec.min_range - 0.2
        assert (p[:, 3] >= 0).all() and (p[:, 3] <= 1).all()
        # 64 x 1800 rays; the sky, far asphalt and 7% dropout take 10-25% of them
        assert 0.7 * spec.rays < len(p) < 0.93 * spec.rays, len(p)
        ids = {t.id for t in world.things}
        assert set(np.unique(cloud.hit).tolist()) <= ids | {0}
        assert ((cloud.hit > 0) == (cloud.surface == OBJECT)).all()
        assert cloud.ring.max() == 63 and len(cloud.ring) == len(p)


def test_hits_on_an_object_land_in_its_rendered_box() -> None:
    inside = seen = outside_hull = 0
    for seed in range(SEED, SEED + 8):
        world, frame, cloud, calib = generate_frame(seed, 320, 180, FORWARD)
        cam, uv = _camera(cloud.points, calib)
        on_image = (cam[:, 2] > 0.5) & (uv[:, 0] >= 0) & (uv[:, 0] < 320)
        on_image &= (uv[:, 1] >= 0) & (uv[:, 1] < 180)
        things = {t.id: t for t in world.things}
        for obj in truth(world, frame, cloud, calib):
            hits = (cloud.hit == obj.id) & on_image
            # the face the camera sees: its depth is the truth distance
            face = hits & (np.abs(cam[:, 2] - obj.distance) < 0.1)
            x1, y1, x2, y2 = obj.box
            u, v = uv[face, 0], uv[face, 1]
            inside += int(((u >= x1 - 1) & (u <= x2 + 1) & (v >= y1 - 1) & (v <= y2 + 1)).sum())
            seen += int(face.sum())
            # every hit, sides included, lies in the projection of the object's solid
            c = cuboid(things[obj.id])
            corners = np.array(np.meshgrid(*zip(c.lo, c.hi, strict=True))).reshape(3, -1).T
            pc = world_to_camera(world, corners)
            puv = (np.c_[pc, np.ones(8)] @ calib.P2.T)[:, :2] / pc[:, 2:3]
            lo, hi = puv.min(axis=0) - 1, puv.max(axis=0) + 1
            outside_hull += int(((uv[hits] < lo) | (uv[hits] > hi)).any(axis=1).sum())
    assert seen > 2000
    assert inside / seen > 0.95, (inside, seen)
    assert outside_hull == 0


def test_ground_returns_lie_at_the_mount_height_below_the_lidar() -> None:
    cloud = generate_frame(SEED + 3, 160, 90, FORWARD)[2]
    z = cloud.points[cloud.surface == GROUND, 2]
    mount = FORWARD.mount[2] + CAMERA_HEIGHT
    assert len(z) > 10_000
    assert abs(float(np.median(z)) + mount) < 0.005
    assert np.abs(z + mount).max() < 0.1  # 2 cm of range noise, mostly along the ground
    assert (cloud.points[cloud.surface != GROUND, 2] > -mount + 0.01).mean() > 0.98


def test_the_truth_distance_is_the_depth_of_the_face_the_camera_sees() -> None:
    world = street([car(1, 1.75, 15.0)])
    frame = render(world, 320, 180, np.random.default_rng(0))
    cloud = sweep(world, FORWARD, np.random.default_rng(1))
    calib = calibration(world, 320, 180, FORWARD)
    (obj,) = truth(world, frame, cloud, calib)
    assert obj.cls == "car" and obj.distance == 15.0 and obj.points == (cloud.hit == 1).sum()
    assert obj.points_in_box > 0.95 * obj.points  # straight ahead: no side is seen
    cam, _ = _camera(cloud.points[cloud.hit == 1], calib)
    face = cam[:, 2] < obj.distance + 0.5  # straight ahead: the back face only
    assert face.mean() > 0.95 and face.sum() > 100
    sem = FORWARD.range_noise / np.sqrt(face.sum())
    assert abs(cam[face, 2].mean() - obj.distance) < 4 * sem + 1e-3
    # the KITTI box: bottom centre half a length beyond the face, heading away
    h, w, length = obj.dimensions
    assert obj.location[2] == pytest.approx(15.0 + length / 2)
    assert obj.location[1] == pytest.approx(CAMERA_HEIGHT) and abs(obj.location[0]) < 1e-9
    assert 3.8 <= length <= 4.8 and w == pytest.approx(1.8) and h == pytest.approx(1.5)
    assert obj.rotation_y == pytest.approx(-np.pi / 2) and obj.range > obj.distance


def test_dropout_and_noise_act_as_specified() -> None:
    world = street([car(1, 1.75, 12.0)])
    exact = LidarSpec(azimuth_range=(-60.0, 60.0), dropout=0.0, range_noise=0.0)
    clean = sweep(world, exact, np.random.default_rng(0))
    lossy = sweep(
        world,
        LidarSpec(azimuth_range=(-60.0, 60.0), dropout=0.3, range_noise=0.0),
        np.random.default_rng(0),
    )
    assert abs(len(lossy) / len(clean) - 0.7) < 0.02
    ground = clean.points[clean.surface == GROUND, 2]
    assert np.abs(ground + exact.mount[2] + CAMERA_HEIGHT).max() < 1e-4
    noisy = sweep(
        world,
        LidarSpec(azimuth_range=(-60.0, 60.0), dropout=0.0, range_noise=0.1),
        np.random.default_rng(0),
    )
    assert len(noisy) == len(clean)  # the same returns, ordered alike
    error = np.linalg.norm(noisy.points[:, :3], axis=1) - np.linalg.norm(
        clean.points[:, :3], axis=1
    )
    assert abs(error.std() - 0.1) < 0.01 and abs(error.mean()) < 0.005
    # a weak-signal threshold takes the far, grazing asphalt first
    strict = sweep(
        world,
        LidarSpec(azimuth_range=(-60.0, 60.0), dropout=0.0, min_signal=1e-3),
        np.random.default_rng(0),
    )
    far = np.linalg.norm(clean.points[:, :2], axis=1).max()
    assert len(strict) < len(clean) and np.linalg.norm(strict.points[:, :2], axis=1).max() < far
    # fog shortens the reach
    foggy = street([car(1, 1.75, 12.0)], Look(weather="fog", visibility=30.0, noise=0.0))
    fogged = sweep(foggy, exact, np.random.default_rng(0))
    assert np.linalg.norm(fogged.points[:, :3], axis=1).max() < 40 < far


def test_a_bad_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="azimuth_range"):
        LidarSpec(azimuth_range=(10.0, -10.0))
    with pytest.raises(ValueError, match="dropout"):
        LidarSpec(dropout=1.0)
    with pytest.raises(ValueError, match="elevations"):
        LidarSpec(elevations=())


def test_the_object_layout_reads_back_through_the_kitti_readers(tmp_path: Path) -> None:
    spec = LidarSpec(azimuth_range=(-45.0, 45.0), azimuth_step=0.4)
    write_kitti(tmp_path, 2, SEED + 10, 320, 180, spec)
    document = json.loads((tmp_path / "distances.json").read_text())
    assert document["layout"] == "object" and "camera-frame z" in document["definition"]
    assert spec_from_record(document["lidar"]) == spec
    for i, record in enumerate(document["frames"]):
        name = f"{i:06d}"
        assert record["frame"] == name and record["seed"] == SEED + 10 + i
        world, frame, cloud, calib = generate_frame(SEED + 10 + i, 320, 180, spec)
        assert np.array_equal(kitti.read_bin(tmp_path / "velodyne" / f"{name}.bin"), cloud.points)
        read = kitti.read_calib(tmp_path / "calib" / f"{name}.txt")
        assert np.allclose(read.P2, calib.P2) and np.allclose(
            read.lidar_to_camera, calib.lidar_to_camera
        )
        labels = kitti.read_labels(tmp_path / "label_2" / f"{name}.txt")
        objects = truth(world, frame, cloud, calib)
        assert [o.type for o in labels] == [kitti.to_kitti_type(o.cls) for o in objects]
        assert [o["distance"] for o in record["objects"]] == [round(o.distance, 4) for o in objects]
        for label, obj in zip(labels, objects, strict=True):
            assert label.location[2] == pytest.approx(obj.location[2], abs=0.006)
            assert label.bbox == pytest.approx(obj.box, abs=0.006)
        image = np.asarray(Image.open(tmp_path / "image_2" / f"{name}.png"))
        assert np.array_equal(image, frame.image)


def test_a_drive_keeps_its_ids_and_writes_the_tracking_layout(tmp_path: Path) -> None:
    spec = LidarSpec(azimuth_range=(-45.0, 45.0), azimuth_step=0.4)
    scene_, truths = generate_sequence(SEED + 20, 0.5, 10.0, 240, 136, spec)
    assert len(scene_) == 5 == len(truths) and scene_.fps == 10.0
    classes: dict[int, str] = {}
    for objects in truths:
        for obj in objects:
            assert classes.setdefault(obj.id, obj.cls) == obj.cls
    # a parked or slow object comes nearer by about the camera's 0.9 m per frame
    first = {o.id: o.distance for o in truths[0]}
    steps = [first[o.id] - o.distance for o in truths[1] if o.id in first]
    assert steps and max(steps) > 0.5
    out = write_kitti_sequence(tmp_path, 0.3, SEED + 20, 240, 136, spec=spec)
    assert json.loads(out.read_text())["layout"] == "tracking"
    assert len(list((tmp_path / "velodyne" / "0000").glob("*.bin"))) == 3
    assert len(list((tmp_path / "image_02" / "0000").glob("*.png"))) == 3
    kitti.read_calib(tmp_path / "calib" / "0000.txt")
    lines = (tmp_path / "label_02" / "0000.txt").read_text().splitlines()
    assert lines
    for line in lines:
        frame_no, track, rest = line.split(" ", 2)
        assert 0 <= int(frame_no) < 3 and int(track) > 0
        kitti.parse_label_line(rest)


def test_the_command_line_refuses_bad_arguments(tmp_path: Path) -> None:
    for argv in (["--size", "10x10"], ["--fov", "0"], ["--count", "0"], ["--azimuth-step", "0"]):
        with pytest.raises(SystemExit) as exc:
            main([str(tmp_path), *argv])
        assert exc.value.code == 2
    occupied = tmp_path / "a_file"
    occupied.write_text("")
    with pytest.raises(SystemExit) as exc:
        main([str(occupied), "--count", "1", "--size", "64x36"])
    assert exc.value.code == 2
    main([str(tmp_path / "out"), "--count", "1", "--size", "64x36", "--fov", "30"])
    assert (tmp_path / "out" / "velodyne" / "000000.bin").stat().st_size > 0


def test_the_shipped_sample_is_its_generator_seeds_output_and_small() -> None:
    document = json.loads((SAMPLE / "distances.json").read_text())
    spec = spec_from_record(document["lidar"])
    width, height = document["size"]
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 3_000_000
    assert len(document["frames"]) == 3
    for record in document["frames"]:
        name = record["frame"]
        assert 8_300_000 <= record["seed"] < 8_400_000  # the plan's sample seeds
        assert (SAMPLE / "velodyne" / f"{name}.bin").stat().st_size < 800_000
        world, frame, cloud, calib = generate_frame(record["seed"], width, height, spec)
        shipped = kitti.read_bin(SAMPLE / "velodyne" / f"{name}.bin")
        # another CPU's vector maths may round a grazing ray the other way: allow a few
        assert abs(len(shipped) - len(cloud)) <= len(cloud) // 1000
        if len(shipped) == len(cloud):
            assert np.allclose(shipped, cloud.points, atol=1e-3)
        objects = truth(world, frame, cloud, calib)
        assert [o["id"] for o in record["objects"]] == [o.id for o in objects]
        labels = (SAMPLE / "label_2" / f"{name}.txt").read_text()
        assert labels == kitti.format_labels(o.kitti() for o in objects)
        image = np.asarray(Image.open(SAMPLE / "image_2" / f"{name}.png"), np.int16)
        assert np.abs(image - frame.image).max() <= 1


def test_truth_objects_are_kitti_labels() -> None:
    _, objects = generate(SEED + 5, 320, 180, FORWARD)
    assert objects and all(isinstance(o, TruthObject) for o in objects)
    for obj in objects:
        line = obj.kitti().line()
        parsed = kitti.parse_label_line(line)
        assert parsed.type == kitti.to_kitti_type(obj.cls)
        assert -np.pi <= obj.alpha <= np.pi and 0 <= obj.truncated <= 1
        assert obj.points >= 0 and obj.range > 0 and obj.distance > 1.0


def test_culling_rays_by_angle_misses_no_hit() -> None:
    """The per-solid ray blocks (azimuth and elevation bounds) against every ray on every box,
    on a world with a car behind the sensor (its box straddles the +-180 degree azimuth)."""
    spec = LidarSpec(azimuth_step=1.0)
    world = random_world(np.random.default_rng(SEED + 30))
    world.things.append(car(999, world.camera_x, -12.0))
    found = cast(world, spec)
    d, _, _ = _rays(spec)
    s = solids(world)
    lo = world_to_lidar(world, spec, s.lo)
    hi = world_to_lidar(world, spec, s.hi)
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        ta = lo[:, :, None, None] / d[None]
        tb = hi[:, :, None, None] / d[None]
    near = np.nanmax(np.minimum(ta, tb), axis=1)
    far = np.nanmin(np.maximum(ta, tb), axis=1)
    t = np.where((near <= far) & (near > 0), near, np.inf).min(axis=0)
    ground = np.where(d[2] < 0, -origin(world, spec)[1] / d[2], np.inf)
    expected = np.minimum(t, ground)
    assert np.allclose(found["range"], expected, rtol=1e-9, atol=1e-9)
    assert (found["owner"] == 999).sum() > 20  # the car behind is seen
