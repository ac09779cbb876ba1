"""Generated camera + LiDAR frames with ground truth: the image :mod:`vlm_driving.scenes`
renders, the sweep :mod:`vlm_driving.lidar` casts in the same world, their KITTI calibration,
and every labelled object's distance and 3D box. These frames let the fusion be trained and
measured without real data. They are also written in KITTI's layouts.

**Distance** (:attr:`TruthObject.distance`): the forward distance from the camera to the face
of the object that the camera sees. This is measured along the optical axis, so it is that
face's camera-frame z in metres (the ``z`` at which the renderer draws the object's sprite).
It is what a driver means by "the car ahead is 12 m away". It is also what the LiDAR points
in an object's 2D box measure, because they lie on that face. The fusion
(:mod:`vlm_driving.fusion`) estimates exactly this quantity. The 3D box centre lies half the
object's length further (a bus: 5-6 m). ``range`` is the straight-line distance from the
camera to that centre, and KITTI's label holds the bottom centre.

``python -m vlm_driving.lidar_scenes OUT --count 10 --seed 8100000`` writes KITTI's object
layout: ``image_2/``, ``velodyne/``, ``calib/`` and ``label_2/``, plus ``distances.json``. Add
``--sequence SECONDS`` for the tracking layout (``image_02/0000/``, ``velodyne/0000/``,
``calib/0000.txt``, ``label_02/0000.txt``). ``--fov DEGREES`` and ``--azimuth-step DEGREES``
set the sweep; the default is a full turn at 0.2 degrees. The plugin's sample
``samples/kitti/`` was written by ``--count 3 --seed 8300000 --size 640x360 --fov 120``: a
120-degree sector ahead (the camera sees at most 71 degrees) keeps each ``.bin`` near
0.55 MB.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from vlm_core.types import Image, Scene
from vlm_driving import kitti
from vlm_driving.lidar import (
    Cuboid,
    LidarSpec,
    Sweep,
    calibration,
    cuboid,
    sweep,
    world_to_camera,
)
from vlm_driving.scenes import Camera, Drive, Frame, World, _parse_size, random_world, render

#: Every sweep's noise comes from this stream of the seed, so the image is exactly
#: :func:`vlm_driving.scenes.scene`'s for the same seed.
SWEEP_STREAM = 29

#: The definition written beside the data (``distances.json``) and in the docs.
DISTANCE_DEFINITION = (
    "distance: the forward distance in metres from the camera to the face of the object the "
    "camera sees, along the optical axis (that face's camera-frame z); range: the straight-line "
    "distance from the camera to the centre of the object's 3D box"
)

#: Heading along the camera's z axis away from it / towards it, as KITTI's rotation_y.
AWAY, TOWARDS = -math.pi / 2, math.pi / 2


@dataclass(frozen=True)
class TruthObject:
    """One labelled object of a generated frame.

    ``cls``: the plugin's class; ``id``: the object's id (its track id in a sequence);
    ``box``: (x1, y1, x2, y2) pixels, the visible box the renderer reports (occluded parts
    excluded); ``distance``: metres, see the module docstring; ``range``: metres from the
    camera to the 3D box's centre; ``dimensions`` (h, w, l), ``location`` (x, y, z: the bottom
    centre in the camera frame) and ``rotation_y``: KITTI's 3D box (``l`` along the heading:
    vehicles and people face along z, a bicycle is drawn side on and faces along x);
    ``points``: LiDAR returns on the object, its sides included; ``points_in_box``: those that
    land in ``box`` on the image (what a fusion can use). ``truncated`` (share of its face
    outside the image) and ``occluded`` (0 fully visible, 1 partly, 2 largely: the visible
    box's area against its face's, in the image) are as KITTI's labels have them.
    """

    cls: str
    id: int
    box: tuple[float, float, float, float]
    distance: float
    range: float
    dimensions: tuple[float, float, float]
    location: tuple[float, float, float]
    rotation_y: float
    points: int
    points_in_box: int
    truncated: float
    occluded: int

    @property
    def alpha(self) -> float:
        """KITTI's observation angle: ``rotation_y`` less the object's bearing."""
        a = self.rotation_y - math.atan2(self.location[0], self.location[2])
        return (a + math.pi) % (2 * math.pi) - math.pi

    def kitti(self) -> kitti.KittiObject:
        """The object as a KITTI label line."""
        return kitti.KittiObject(
            type=kitti.to_kitti_type(self.cls),
            bbox=self.box,
            truncated=self.truncated,
            occluded=self.occluded,
            alpha=self.alpha,
            dimensions=self.dimensions,
            location=self.location,
            rotation_y=self.rotation_y,
        )

    def record(self) -> dict[str, object]:
        """The object for ``distances.json``."""
        return {
            "id": self.id,
            "class": self.cls,
            "kitti_type": kitti.to_kitti_type(self.cls),
            "box": [round(v, 2) for v in self.box],
            "distance": round(self.distance, 4),
            "range": round(self.range, 4),
            "points": self.points,
            "points_in_box": self.points_in_box,
        }


def _area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def truth(world: World, frame: Frame, cloud: Sweep, calib: kitti.Calibration) -> list[TruthObject]:
    """The ground truth of every object ``frame`` labels, in its order (``calib``: the frame's
    calibration, to count the returns that land in each box)."""
    height, width = frame.image.shape[:2]
    things = {t.id: t for t in world.things}
    counts = dict(zip(*np.unique(cloud.hit, return_counts=True), strict=True))
    xyz1 = np.c_[cloud.points[:, :3].astype(np.float64), np.ones(len(cloud))]
    uvw = xyz1 @ (calib.P2 @ calib.lidar_to_camera).T
    ahead = uvw[:, 2] > 0.5
    uv = uvw[:, :2] / np.where(ahead, uvw[:, 2], 1.0)[:, None]
    out = []
    for box, label, object_id in zip(frame.xyxy, frame.labels, frame.ids, strict=True):
        t = things[int(object_id)]
        c = cuboid(t)
        bottom = world_to_camera(world, np.array([c.x, c.elevation, c.z + c.length / 2]))
        centre = bottom - np.array([0.0, c.height / 2, 0.0])
        if t.cls == "bicycle":  # side on: its length runs along x
            dims, heading = (c.height, c.length, c.width), 0.0
        else:
            dims, heading = (c.height, c.width, c.length), TOWARDS if t.front else AWAY
        full = face_box(world, c, width, height)
        inside = (max(full[0], 0), max(full[1], 0), min(full[2], width), min(full[3], height))
        truncated = 1.0 - _area(inside) / max(_area(full), 1e-9)
        seen = _area(box) / max(_area(inside), 1e-9)
        occluded = 0 if seen >= 0.85 else 1 if seen >= 0.5 else 2
        mine = ahead & (cloud.hit == t.id)
        in_box = mine & (uv[:, 0] >= box[0]) & (uv[:, 0] <= box[2])
        in_box &= (uv[:, 1] >= box[1]) & (uv[:, 1] <= box[3])
        out.append(
            TruthObject(
                cls=label,
                id=int(object_id),
                box=tuple(float(v) for v in box),  # type: ignore[arg-type]
                distance=float(c.z),
                range=float(np.linalg.norm(centre)),
                dimensions=tuple(float(v) for v in dims),  # type: ignore[arg-type]
                location=tuple(float(v) for v in bottom),  # type: ignore[arg-type]
                rotation_y=heading,
                points=int(counts.get(int(object_id), 0)),
                points_in_box=int(np.count_nonzero(in_box)),
                truncated=float(np.clip(truncated, 0.0, 1.0)),
                occluded=occluded,
            )
        )
    return out


def face_box(world: World, c: Cuboid, width: int, height: int) -> tuple[float, ...]:
    """The pixel box of a solid's face toward the camera: the sprite's box, narrowed where the
    solid is (a pedestrian's shoulders, a parked bicycle's frame); not clipped to the image."""
    cam = Camera(width, height, world.focal * width, world.horizon * height, world.camera_x)
    x1, y2 = cam.project(c.x - c.width / 2, c.elevation, c.z)
    x2, y1 = cam.project(c.x + c.width / 2, c.elevation + c.height, c.z)
    return (x1, y1, x2, y2)


def _scene(
    frames: Sequence[Frame],
    clouds: Sequence[Sweep],
    calib: kitti.Calibration,
    fps: float,
    name: str,
) -> Scene:
    return Scene(
        images=tuple(Image(pixels=f.image, name=f"{name}/{t:06d}") for t, f in enumerate(frames)),
        clouds=tuple(c.points for c in clouds),
        projection=calib.projection,
        lidar_to_camera=calib.lidar_to_camera,
        fps=fps,
        frame_ids=tuple(f"{t:06d}" for t in range(len(frames))),
        name=name,
    )


def sweep_rng(seed: int) -> np.random.Generator:
    """The RNG of a seed's sensor noise, apart from the renderer's."""
    return np.random.default_rng([seed, SWEEP_STREAM])


def generate_frame(
    seed: int, width: int = 640, height: int = 360, spec: LidarSpec = LidarSpec()
) -> tuple[World, Frame, Sweep, kitti.Calibration]:
    """The world, image, sweep and calibration of ``seed``. The image is
    :func:`vlm_driving.scenes.scene`'s for the same seed and size."""
    rng = np.random.default_rng(seed)
    world = random_world(rng)
    frame = render(world, width, height, rng)
    return (
        world,
        frame,
        sweep(world, spec, sweep_rng(seed)),
        calibration(world, width, height, spec),
    )


def generate(
    seed: int, width: int = 640, height: int = 360, spec: LidarSpec = LidarSpec()
) -> tuple[Scene, list[TruthObject]]:
    """One generated frame as a one-frame :class:`Scene` and its labelled objects' truth."""
    world, frame, cloud, calib = generate_frame(seed, width, height, spec)
    scene = _scene([frame], [cloud], calib, 10.0, f"lidar_scene_{seed}")
    return scene, truth(world, frame, cloud, calib)


def generate_sequence(
    seed: int,
    seconds: float,
    fps: float = 10.0,
    width: int = 640,
    height: int = 360,
    spec: LidarSpec = LidarSpec(),
) -> tuple[Scene, list[list[TruthObject]]]:
    """A drive (:class:`vlm_driving.scenes.Drive`: the camera at 9 m/s with traffic, ids
    stable over time) of ``seconds`` at ``fps``: a :class:`Scene` of its frames and each
    frame's truth. The camera does not turn, so one calibration holds for every frame."""
    car = Drive(seed, width, height, fps=fps)
    rng = sweep_rng(seed)
    calib = calibration(car.world, width, height, spec)
    frames, clouds, truths = [], [], []
    for _ in range(max(1, round(seconds * fps))):
        frame = car.step()
        cloud = sweep(car.world, spec, rng)
        frames.append(frame)
        clouds.append(cloud)
        truths.append(truth(car.world, frame, cloud, calib))
    return _scene(frames, clouds, calib, fps, f"lidar_drive_{seed}"), truths


# ---------------------------------------------------------------------------------------------
# KITTI layouts


def _spec_record(spec: LidarSpec) -> dict[str, object]:
    record = asdict(spec)
    record["elevations"] = (
        "HDL-64E" if spec.elevations == LidarSpec().elevations else list(spec.elevations)
    )
    return record


def spec_from_record(record: dict[str, object]) -> LidarSpec:
    """The :class:`LidarSpec` ``distances.json`` recorded (to regenerate a frame)."""
    values = dict(record)
    if values.get("elevations") == "HDL-64E":
        values.pop("elevations")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return replace(LidarSpec(), **fields)  # type: ignore[arg-type]


def _save_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(image).save(path, optimize=True)


def write_kitti(
    out: Path,
    count: int,
    seed: int,
    width: int = 640,
    height: int = 360,
    spec: LidarSpec = LidarSpec(),
) -> Path:
    """Write ``count`` frames (seeds ``seed``..) in KITTI's object layout under ``out``:
    ``image_2/NNNNNN.png``, ``velodyne/NNNNNN.bin``, ``calib/NNNNNN.txt``,
    ``label_2/NNNNNN.txt`` (the 3D boxes, KITTI's types), and ``distances.json`` (each
    object's distance, range and point count, in label-line order, with the seeds, the
    sensor and the definition of distance, since KITTI labels have no distance column).
    Returns ``distances.json``."""
    out = Path(out)
    for sub in ("image_2", "velodyne", "calib", "label_2"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    records: list[dict[str, object]] = []
    for i in range(count):
        name = f"{i:06d}"
        world, frame, cloud, calib = generate_frame(seed + i, width, height, spec)
        objects = truth(world, frame, cloud, calib)
        _save_png(out / "image_2" / f"{name}.png", frame.image)
        kitti.write_bin(out / "velodyne" / f"{name}.bin", cloud.points)
        kitti.write_calib(out / "calib" / f"{name}.txt", calib)
        kitti.write_labels(out / "label_2" / f"{name}.txt", [o.kitti() for o in objects])
        records.append({"frame": name, "seed": seed + i, "objects": [o.record() for o in objects]})
    return _write_distances(out, "object", width, height, spec, records)


def _write_distances(
    out: Path,
    layout: str,
    width: int,
    height: int,
    spec: LidarSpec,
    frames: list[dict[str, object]],
    **extra: object,
) -> Path:
    from vlm_core.fileio import atomic_write_text

    path = out / "distances.json"
    document = {
        "generator": "vlm_driving.lidar_scenes",
        "layout": layout,
        "definition": DISTANCE_DEFINITION,
        "size": [width, height],
        "lidar": _spec_record(spec),
        **extra,
        "frames": frames,
    }
    atomic_write_text(path, json.dumps(document, indent=1) + "\n")
    return path


def tracking_line(frame: int, obj: TruthObject) -> str:
    """One line of a KITTI tracking label: ``frame track_id`` then the object's label fields
    (truncation as the tracking devkit's 0/1/2 levels)."""
    level = 0 if obj.truncated < 0.05 else 1 if obj.truncated < 0.5 else 2
    return f"{frame} {obj.id} " + replace(obj.kitti(), truncated=float(level)).line()


def write_kitti_sequence(
    out: Path,
    seconds: float,
    seed: int,
    width: int = 640,
    height: int = 360,
    fps: float = 10.0,
    spec: LidarSpec = LidarSpec(),
    sequence: int = 0,
) -> Path:
    """Write a drive in KITTI's tracking layout under ``out``: ``image_02/SSSS/NNNNNN.png``,
    ``velodyne/SSSS/NNNNNN.bin``, ``calib/SSSS.txt``, ``label_02/SSSS.txt`` (``frame
    track_id type ...`` lines) and ``distances.json`` (per frame). Returns ``distances.json``."""
    out = Path(out)
    seq = f"{sequence:04d}"
    scene, truths = generate_sequence(seed, seconds, fps, width, height, spec)
    lines: list[str] = []
    records: list[dict[str, object]] = []
    for t, (image, cloud, objects) in enumerate(
        zip(scene.images, scene.clouds, truths, strict=True)
    ):
        name = f"{t:06d}"
        _save_png(out / "image_02" / seq / f"{name}.png", image.pixels)
        (out / "velodyne" / seq).mkdir(parents=True, exist_ok=True)
        kitti.write_bin(out / "velodyne" / seq / f"{name}.bin", cloud)
        lines += [tracking_line(t, o) for o in objects]
        records.append({"frame": name, "objects": [o.record() for o in objects]})
    for sub in ("calib", "label_02"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    calib = kitti.Calibration.from_matrices(scene.projection, scene.lidar_to_camera)
    kitti.write_calib(out / "calib" / f"{seq}.txt", calib)
    from vlm_core.fileio import atomic_write_text

    atomic_write_text(out / "label_02" / f"{seq}.txt", "".join(line + "\n" for line in lines))
    return _write_distances(
        out, "tracking", width, height, spec, records, seed=seed, fps=fps, sequence=seq
    )


def _parse_fov(text: str) -> tuple[float, float]:
    try:
        fov = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"fov must be degrees, got {text!r}") from None
    if not 0 < fov <= 360:
        raise argparse.ArgumentTypeError(f"fov {fov:g} is outside (0, 360]")
    return (-fov / 2, fov / 2)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vlm_driving.lidar_scenes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", type=Path, help="the folder to write")
    parser.add_argument("--count", type=int, default=10, help="frames of the object layout")
    parser.add_argument("--seed", type=int, default=0, help="the first frame's seed")
    parser.add_argument("--size", type=_parse_size, default=(640, 360), help="WIDTHxHEIGHT")
    parser.add_argument(
        "--sequence",
        type=float,
        default=None,
        metavar="SECONDS",
        help="write a drive of this length in the tracking layout instead",
    )
    parser.add_argument("--fps", type=float, default=10.0, help="frames per second of --sequence")
    parser.add_argument(
        "--azimuth-step", type=float, default=LidarSpec().azimuth_step, help="degrees"
    )
    parser.add_argument(
        "--fov",
        type=_parse_fov,
        default=(-180.0, 180.0),
        help="horizontal degrees swept, centred ahead (360: a full turn)",
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    try:
        spec = LidarSpec(azimuth_step=args.azimuth_step, azimuth_range=args.fov)
    except ValueError as exc:
        parser.error(str(exc))
    width, height = args.size
    try:
        if args.sequence:
            path = write_kitti_sequence(
                args.out, args.sequence, args.seed, width, height, args.fps, spec
            )
        else:
            path = write_kitti(args.out, args.count, args.seed, width, height, spec)
    except OSError as exc:
        parser.exit(2, f"{parser.prog}: cannot write {args.out}: {exc.strerror or exc}\n")
    print(path)


if __name__ == "__main__":
    main()
