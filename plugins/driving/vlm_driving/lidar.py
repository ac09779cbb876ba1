"""Synthetic LiDAR: a ray-cast 64-beam sweep of the procedural world :mod:`vlm_driving.scenes`
renders, and the KITTI calibration that ties it to the rendered image.

The camera draws every object as a flat sprite at the depth ``thing.z`` of the face it sees (a
car ahead shows its back, an oncoming one its front). The LiDAR sees solids:

- **Objects.** Each :class:`~vlm_driving.scenes.Thing` is an axis-aligned cuboid
  (:func:`cuboid`). Its face at ``z`` is the sprite's box: centred on ``x``, ``width`` wide,
  from ``elevation`` to ``elevation + height``. The solid extends away from the camera, from
  ``z`` to ``z + length``. The length is drawn per class from an RNG seeded by the thing itself
  (its id and size), so it is the same in every frame of a drive and for every run of a seed.
  Two classes have a face narrower than their box, to match what the sprite paints: a
  pedestrian's torso spans 0.84 of its box, and a bicycle is drawn side on (its ``width`` is
  its length along x) and, when parked, only as tall as its wheels and frame.
- **Scenery.** Poles under lights and signs and the gantry over the road, drawn in the image as
  lines 0.1 m wide. Each building :class:`~vlm_driving.scenes.Block` is a box 12 m deep behind
  its facade, as the renderer draws it. The ground is the plane y = 0: road, lane paint,
  sidewalks, curbs, crossing and verge each have their own reflectivity.

**Sensor** (:class:`LidarSpec`). A Velodyne HDL-64E-like spinning LiDAR, as on KITTI's car: 64
beams from +2.0 to -24.9 degrees, 0.2 degrees of azimuth (the HDL-64E at 10 Hz turns 0.17-0.18),
120 m range. It is mounted 0.27 m behind and 0.08 m above the camera, as KITTI's Velodyne sits
relative to its cameras. Each return gets Gaussian range noise (2 cm, as Velodyne specifies).
A random 7% of returns drop. A return is lost when its signal, ``albedo · cos(incidence) ·
(10 m / range)^2``, falls under ``min_signal``, so dark asphalt at grazing incidence fades
beyond about 55 m as it does in KITTI's sweeps. Fog attenuates both ways (Koschmieder
extinction ``3 / visibility``) and rain drops 5% more. The sky and anything past 120 m return
nothing. The intensity is ``albedo · cos(incidence)`` plus a little noise, clipped to [0, 1].
Retro-reflective signs come out near 0.9, lane paint at 0.55, asphalt at 0.1.

**Casting.** The rays form a beams x azimuths grid from one origin. For each solid, the
azimuths and elevations its corners can subtend bound the block of rays that might hit it.
These bounds are conservative: a great-circle arc never leaves its endpoints' azimuth interval,
and the elevation bound uses the footprint's nearest and farthest points. The rays of that
block are intersected with the box by the slab method, in one numpy expression. The only
Python loop runs over the solids (a few dozen), never over rays. The ground plane is one
division for all rays.

**Frames.** World: x right, y up, z ahead; the camera sits at ``(world.camera_x, 1.4, 0)``
looking along z. LiDAR frame (KITTI's Velodyne): x forward, y left, z up, origin at the sensor.
Camera frame (KITTI's rectified camera): x right, y down, z forward. :func:`calibration`
gives KITTI's ``P2``, ``R0_rect`` and ``Tr_velo_to_cam`` for a rendered image. The camera that
renders the image is itself the rectified reference camera, so ``R0_rect`` is the identity and
``P2`` has no baseline term.

Not modelled: the motion of the sensor and of the traffic during a sweep (the whole sweep is
taken at the frame's instant), multiple returns, beam divergence (a ray is a line), and
sprites' holes (a bicycle's wheels are solid).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from vlm_driving.kitti import Calibration
from vlm_driving.scenes import CAMERA_HEIGHT, LANE, NEAR, Thing, World

#: HDL-64E-like beam elevations in degrees, highest first: the upper block of 32 lasers from
#: +2.0 to -8.33 (1/3 degree apart), the lower block of 32 from -8.83 to -24.9 (about 1/2).
HDL64_ELEVATIONS: tuple[float, ...] = tuple(
    round(float(v), 4)
    for v in np.concatenate([np.linspace(2.0, -8.33, 32), np.linspace(-8.83, -24.9, 32)])
)

#: What a return hit (:attr:`Sweep.surface`).
GROUND, BUILDING, POLE, OBJECT = 1, 2, 3, 4

#: Near-infrared reflectivity (0..1) of the ground's materials.
ASPHALT, PAINT, SIDEWALK, CURB, GRASS, GRAVEL = 0.10, 0.55, 0.25, 0.30, 0.40, 0.20
#: ... and of the scenery and the objects without a painted body.
POLE_ALBEDO, SIGN_ALBEDO, LIGHT_ALBEDO, BICYCLE_ALBEDO = 0.35, 0.90, 0.10, 0.15

#: A return's signal is measured against its strength at this range.
REFERENCE_RANGE = 10.0

#: Per-class length of the solid along z (metres, uniform range); bicycle: its depth along z,
#: as its ``width`` is already its length (it is drawn side on).
LENGTHS: dict[str, tuple[float, float]] = {
    "car": (3.8, 4.8),
    "truck": (6.0, 10.0),
    "bus": (10.0, 12.5),
    "motorcycle": (1.8, 2.2),
    "bicycle": (0.5, 0.7),
    "pedestrian": (0.3, 0.6),
    "traffic light": (0.3, 0.3),
    "traffic sign": (0.05, 0.05),
}
#: A pedestrian's sprite fills 0.84 of its box's width (its shoulders).
PEDESTRIAN_FACE = 0.84
#: A parked bicycle's sprite reaches 0.484 of its length up (wheels 0.44, then the bar).
BICYCLE_FRAME = 0.484
#: Poles and gantries: 0.1 m thick, as the renderer draws them; a gantry spans 16 m.
POLE_WIDTH, GANTRY_HALF = 0.1, 8.0
#: A building's box: this deep behind its facade (the renderer draws its end face so).
BUILDING_DEPTH = 12.0


@dataclass(frozen=True)
class LidarSpec:
    """A spinning LiDAR. Angles in degrees; azimuth 0 is straight ahead, positive to the left.

    ``azimuth_range``: the swept sector, (-180, 180) for a full turn or e.g. (-60, 60) for the
    camera's side only. ``mount``: the sensor's offset from the camera in the LiDAR's axes
    (forward, left, up), metres. ``range_noise``: sigma of the range error, metres.
    ``dropout``: the share of returns lost at random. ``min_signal``: the weakest return kept
    (see the module docstring). ``weather``: whether the world's fog and rain act on it.
    """

    elevations: tuple[float, ...] = HDL64_ELEVATIONS
    azimuth_step: float = 0.2
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    max_range: float = 120.0
    min_range: float = 1.0
    mount: tuple[float, float, float] = (-0.27, 0.0, 0.08)
    range_noise: float = 0.02
    dropout: float = 0.07
    min_signal: float = 1e-4
    intensity_noise: float = 0.02
    weather: bool = True

    def __post_init__(self) -> None:
        lo, hi = self.azimuth_range
        if not self.elevations or not all(-90 < e < 90 for e in self.elevations):
            raise ValueError(f"beam elevations must lie in (-90, 90), got {self.elevations}")
        if not -180 <= lo < hi <= 180:
            raise ValueError(f"azimuth_range must lie in [-180, 180], got {self.azimuth_range}")
        if not 0 < self.azimuth_step <= hi - lo:
            raise ValueError(f"azimuth_step must be in (0, {hi - lo}], got {self.azimuth_step}")
        if not 0 < self.min_range < self.max_range:
            raise ValueError(
                f"need 0 < min_range < max_range, got {self.min_range}, {self.max_range}"
            )
        if not (0 <= self.dropout < 1 and self.range_noise >= 0 and self.min_signal >= 0):
            raise ValueError("dropout must be in [0, 1), range_noise and min_signal >= 0")

    @property
    def columns(self) -> int:
        """Azimuth steps per sweep."""
        lo, hi = self.azimuth_range
        return max(1, round((hi - lo) / self.azimuth_step))

    @property
    def rays(self) -> int:
        return len(self.elevations) * self.columns

    def azimuths(self) -> np.ndarray:
        """(columns,) degrees: the centre of each azimuth step."""
        lo = self.azimuth_range[0]
        return lo + (np.arange(self.columns) + 0.5) * self.azimuth_step


@dataclass(frozen=True, eq=False)
class Sweep:
    """One sweep's returns (N of them).

    ``points``: (N, 4) float32, x, y, z in metres in the LiDAR frame (x forward, y left, z up)
    and intensity in [0, 1]. ``hit``: (N,) int64, the id of the :class:`Thing` hit (0: ground,
    building or pole). ``surface``: (N,) uint8, :data:`GROUND`, :data:`BUILDING`, :data:`POLE`
    or :data:`OBJECT` (ground truth for ground removal). ``ring``: (N,) uint8, the beam (0 the
    highest).
    """

    points: np.ndarray
    hit: np.ndarray
    surface: np.ndarray
    ring: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


@dataclass(frozen=True)
class Cuboid:
    """A thing's solid in world metres: its face toward the camera is at depth ``z``, centred
    on ``x``; it is ``width`` across (x), ``height`` tall from ``elevation``, ``length`` deep
    (z .. z + length)."""

    x: float
    z: float
    elevation: float
    width: float
    height: float
    length: float

    @property
    def lo(self) -> tuple[float, float, float]:
        return (self.x - self.width / 2, self.elevation, self.z)

    @property
    def hi(self) -> tuple[float, float, float]:
        return (self.x + self.width / 2, self.elevation + self.height, self.z + self.length)


def cuboid(thing: Thing) -> Cuboid:
    """The solid of ``thing`` (see the module docstring). Its length comes from an RNG seeded by
    the thing's id and size, so it does not change as the thing moves."""
    seed = [thing.id, round(thing.width * 1e6), round(thing.height * 1e6)]
    lo, hi = LENGTHS[thing.cls]
    length = lo if hi == lo else float(np.random.default_rng(seed).uniform(lo, hi))
    width, height = thing.width, thing.height
    if thing.cls == "pedestrian":
        width *= PEDESTRIAN_FACE
    elif thing.cls == "bicycle" and not thing.style.get("rider", False):
        height = min(height, BICYCLE_FRAME * thing.width)
    return Cuboid(thing.x, thing.z, thing.elevation, width, height, length)


def _luminance(colour: object, default: float = 0.5) -> float:
    if not isinstance(colour, tuple) or len(colour) != 3:
        return default
    r, g, b = colour
    return (0.3 * r + 0.59 * g + 0.11 * b) / 255.0


def albedo(thing: Thing) -> float:
    """The near-infrared reflectivity of ``thing``'s solid: bright paint or clothes return more
    than dark; signs are retro-reflective."""
    if thing.cls == "traffic sign":
        return SIGN_ALBEDO
    if thing.cls == "traffic light":
        return LIGHT_ALBEDO
    if thing.cls == "bicycle":
        return BICYCLE_ALBEDO
    if thing.cls == "pedestrian":
        return 0.1 + 0.4 * _luminance(thing.style.get("top"))
    return 0.08 + 0.5 * _luminance(thing.style.get("body"))


@dataclass(frozen=True, eq=False)
class Solids:
    """The world's boxes in world metres: ``lo``/``hi`` (B, 3) corners (x, y, z), ``owner``
    (B,) thing id (0: scenery), ``surface`` (B,) code, ``albedo`` (B,)."""

    lo: np.ndarray
    hi: np.ndarray
    owner: np.ndarray
    surface: np.ndarray
    albedo: np.ndarray


def solids(world: World) -> Solids:
    """Every box of ``world``: its things, their poles and gantries, and its buildings."""
    rows: list[tuple[tuple[float, float, float], tuple[float, float, float], int, int, float]]
    rows = []
    for t in world.things:
        c = cuboid(t)
        rows.append((c.lo, c.hi, t.id, OBJECT, albedo(t)))
        if t.elevation <= 0:
            continue
        z0, z1 = t.z + 0.01, t.z + 0.01 + POLE_WIDTH
        if t.cls == "traffic light" and t.elevation > 4.5:  # a gantry across the road
            y = t.elevation + t.height * 0.8
            lo, hi = (
                (t.x - GANTRY_HALF, y - POLE_WIDTH / 2, z0),
                (t.x + GANTRY_HALF, y + POLE_WIDTH / 2, z1),
            )
        else:
            lo, hi = (t.x - POLE_WIDTH / 2, 0.0, z0), (t.x + POLE_WIDTH / 2, t.elevation, z1)
        rows.append((lo, hi, 0, POLE, POLE_ALBEDO))
    for b in world.blocks:
        far = b.x + (BUILDING_DEPTH if b.x > 0 else -BUILDING_DEPTH)
        rows.append(
            (
                (min(b.x, far), 0.0, b.z0),
                (max(b.x, far), b.height, b.z1),
                0,
                BUILDING,
                0.1 + 0.4 * _luminance(b.colour),
            )
        )
    if not rows:
        empty = np.zeros((0, 3))
        return Solids(empty, empty, np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0))
    lo, hi, owner, surface, alb = zip(*rows, strict=True)
    return Solids(
        lo=np.asarray(lo, np.float64),
        hi=np.asarray(hi, np.float64),
        owner=np.asarray(owner, np.int64),
        surface=np.asarray(surface, np.uint8),
        albedo=np.asarray(alb, np.float64),
    )


def ground_albedo(world: World, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Reflectivity of the ground at world ``(x, z)``: the renderer's street layout (road,
    curbs, sidewalks 3.5 m wide, lane lines dashed 4 m in 12 m, the yellow centre line, edge
    lines and the zebra crossing), continued behind the camera."""
    left, right = world.road_left, world.road_right
    verge = GRASS if world.ground[1] > world.ground[0] + 10 else GRAVEL
    out = np.full(x.shape, verge)
    out[((x >= left - 3.5) & (x < left)) | ((x > right) & (x <= right + 3.5))] = SIDEWALK
    out[((x >= left - 0.15) & (x < left)) | ((x > right) & (x <= right + 0.15))] = CURB
    out[(x >= left) & (x <= right)] = ASPHALT
    paint = np.abs(x) <= 0.08
    dashed = ((z + world.travelled % 12.0) % 12.0) < 4.0
    for lane in range(-world.lanes_left + 1, world.lanes_right):
        if lane != 0:
            paint |= (np.abs(x - lane * LANE) <= 0.07) & dashed
    paint |= ((x >= left + 0.2) & (x <= left + 0.32)) | ((x >= right - 0.32) & (x <= right - 0.2))
    if world.crosswalk is not None and world.crosswalk > NEAR + 1:
        stripes = int((right - left) / 0.9)
        offset = x - left - 0.3
        index = np.floor(offset / 0.9)
        paint |= (
            (index >= 0)
            & (index < stripes)
            & (offset - index * 0.9 <= 0.45)
            & (np.abs(z - world.crosswalk) <= 1.5)
        )
    out[paint] = PAINT
    return out


# ---------------------------------------------------------------------------------------------
# frames and calibration


def origin(world: World, spec: LidarSpec) -> np.ndarray:
    """The sensor's position in world metres (x right, y up, z ahead)."""
    forward, left, up = spec.mount
    return np.array([world.camera_x - left, CAMERA_HEIGHT + up, forward])


def world_to_lidar(world: World, spec: LidarSpec, xyz: np.ndarray) -> np.ndarray:
    """(N, 3) world points in the LiDAR frame (x forward, y left, z up)."""
    p = np.asarray(xyz, np.float64) - origin(world, spec)
    return np.stack([p[..., 2], -p[..., 0], p[..., 1]], axis=-1)


def world_to_camera(world: World, xyz: np.ndarray) -> np.ndarray:
    """(N, 3) world points in the camera frame (x right, y down, z forward)."""
    p = np.asarray(xyz, np.float64)
    return np.stack([p[..., 0] - world.camera_x, CAMERA_HEIGHT - p[..., 1], p[..., 2]], axis=-1)


def velo_to_cam(spec: LidarSpec) -> np.ndarray:
    """KITTI's ``Tr_velo_to_cam`` (3x4): the LiDAR frame into the camera frame. The axes only
    turn (camera x = -LiDAR y, y = -z, z = x); the translation is the mount offset."""
    forward, left, up = spec.mount
    return np.array(
        [[0.0, -1.0, 0.0, 0.0 - left], [0.0, 0.0, -1.0, 0.0 - up], [1.0, 0.0, 0.0, forward]],
        np.float64,
    )


def projection(world: World, width: int, height: int) -> np.ndarray:
    """KITTI's ``P2`` (3x4) of the camera that renders ``world`` at ``width`` x ``height``:
    focal ``world.focal · width`` pixels, principal point at the image's centre column and the
    horizon row (the renderer's :class:`~vlm_driving.scenes.Camera`), no baseline term."""
    f = world.focal * width
    return np.array(
        [[f, 0.0, width / 2, 0.0], [0.0, f, world.horizon * height, 0.0], [0.0, 0.0, 1.0, 0.0]]
    )


def calibration(world: World, width: int, height: int, spec: LidarSpec) -> Calibration:
    """The KITTI calibration of a rendered frame and its sweep (``R0_rect`` the identity)."""
    return Calibration(
        P2=projection(world, width, height), R0_rect=np.eye(3), Tr_velo_to_cam=velo_to_cam(spec)
    )


# ---------------------------------------------------------------------------------------------
# casting


@functools.lru_cache(maxsize=8)
def _rays(spec: LidarSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit directions (3, beams, columns) in the LiDAR frame, their reciprocals (zeros
    nudged so a slab test never divides 0 by 0), and the beam elevations (radians)."""
    elev = np.radians(np.asarray(spec.elevations, np.float64))
    az = np.radians(spec.azimuths())
    ce = np.cos(elev)[:, None]
    d = np.stack(
        [
            ce * np.cos(az)[None, :],
            ce * np.sin(az)[None, :],
            np.repeat(np.sin(elev)[:, None], len(az), axis=1),
        ]
    )
    safe = np.where(np.abs(d) < 1e-12, 1e-12, d)
    d.setflags(write=False)
    inv = 1.0 / safe
    inv.setflags(write=False)
    return d, inv, elev


def _azimuth_intervals(lo: np.ndarray, hi: np.ndarray) -> list[tuple[float, float]]:
    """Degree intervals within [-180, 180] that hold every direction to the box's footprint."""
    if lo[0] <= 0 <= hi[0] and lo[1] <= 0 <= hi[1]:
        return [(-180.0, 180.0)]
    xs = np.array([lo[0], lo[0], hi[0], hi[0]])
    ys = np.array([lo[1], hi[1], lo[1], hi[1]])
    angles = np.degrees(np.arctan2(ys, xs))
    if hi[0] < 0 and lo[1] < 0 < hi[1]:  # straddles the backward direction (+-180)
        return [(float(angles[angles > 0].min()), 180.0), (-180.0, float(angles[angles < 0].max()))]
    return [(float(angles.min()), float(angles.max()))]


def _columns(lo: np.ndarray, hi: np.ndarray, spec: LidarSpec) -> np.ndarray:
    a0, step, n = spec.azimuth_range[0], spec.azimuth_step, spec.columns
    parts = []
    for amin, amax in _azimuth_intervals(lo, hi):
        j0 = max(0, math.floor((amin - a0) / step - 0.5))
        j1 = min(n - 1, math.ceil((amax - a0) / step - 0.5))
        if j1 >= j0:
            parts.append(np.arange(j0, j1 + 1))
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def _rows(lo: np.ndarray, hi: np.ndarray, elev: np.ndarray) -> np.ndarray:
    near = math.hypot(max(lo[0], -hi[0], 0.0), max(lo[1], -hi[1], 0.0))
    far = math.hypot(max(abs(lo[0]), abs(hi[0])), max(abs(lo[1]), abs(hi[1])))
    top = math.atan2(hi[2], near if hi[2] > 0 else far)
    bottom = math.atan2(lo[2], near if lo[2] < 0 else far)
    return np.flatnonzero((elev >= bottom - 1e-9) & (elev <= top + 1e-9))


def cast(world: World, spec: LidarSpec) -> dict[str, np.ndarray]:
    """The first surface along every ray, noise-free: (beams, columns) arrays ``range``
    (metres, inf where nothing within reach), ``owner``, ``surface``, ``albedo`` and ``cos``
    (of the incidence angle)."""
    d, inv, elev = _rays(spec)
    shape = d.shape[1:]
    o = origin(world, spec)
    best = np.full(shape, np.inf)
    owner = np.zeros(shape, np.int64)
    surface = np.zeros(shape, np.uint8)
    alb = np.zeros(shape)
    axis = np.full(shape, 2, np.int8)
    # the ground plane y = 0, the sensor o[1] above it
    down = d[2] < -1e-9
    best[down] = -o[1] / d[2][down]
    surface[down] = GROUND
    s = solids(world)
    los = world_to_lidar(world, spec, s.lo)
    his = world_to_lidar(world, spec, s.hi)
    lo_l, hi_l = np.minimum(los, his), np.maximum(los, his)
    for b in range(len(s.owner)):
        lo, hi = lo_l[b], hi_l[b]
        cols, rows = _columns(lo, hi, spec), _rows(lo, hi, elev)
        if not len(cols) or not len(rows):
            continue
        ix = np.ix_(rows, cols)
        sub = inv[:, rows][:, :, cols]
        ta, tb = lo[:, None, None] * sub, hi[:, None, None] * sub
        enter = np.minimum(ta, tb)
        t_near = enter.max(axis=0)
        t_far = np.maximum(ta, tb).min(axis=0)
        current = best[ix]
        better = (t_near <= t_far) & (t_near > 0) & (t_near < current)
        if not better.any():
            continue
        best[ix] = np.where(better, t_near, current)
        owner[ix] = np.where(better, s.owner[b], owner[ix])
        surface[ix] = np.where(better, s.surface[b], surface[ix])
        alb[ix] = np.where(better, s.albedo[b], alb[ix])
        axis[ix] = np.where(better, enter.argmax(axis=0), axis[ix])
    ground = surface == GROUND
    if ground.any():
        r = best[ground]
        px = o[0] - d[1][ground] * r  # world x = sensor x - LiDAR y
        pz = o[2] + d[0][ground] * r
        alb[ground] = ground_albedo(world, px, pz)
    cos = np.abs(np.take_along_axis(d, axis[None].astype(np.int64), axis=0)[0])
    return {"range": best, "owner": owner, "surface": surface, "albedo": alb, "cos": cos}


def sweep(
    world: World, spec: LidarSpec = LidarSpec(), rng: np.random.Generator | None = None
) -> Sweep:
    """One sweep of ``world`` by ``spec``'s LiDAR: ray casting (:func:`cast`), then the
    sensor's losses and noise drawn from ``rng`` (see the module docstring). Points are
    ordered by azimuth step, then beam, as a spinning LiDAR reports them."""
    rng = rng if rng is not None else np.random.default_rng(0)
    c = cast(world, spec)
    r, cos, alb = c["range"], c["cos"], c["albedo"]
    finite = np.isfinite(r)
    signal = np.zeros_like(r)
    signal[finite] = (
        alb[finite] * cos[finite] * (REFERENCE_RANGE / np.maximum(r[finite], 1e-3)) ** 2
    )
    dropout = spec.dropout
    if spec.weather and world.look.weather == "fog":
        signal *= np.exp(-2.0 * 3.0 / world.look.visibility * np.where(finite, r, 0.0))
    elif spec.weather and world.look.weather == "rain":
        dropout = 1 - (1 - dropout) * 0.95
    draws = rng.random(r.shape)
    keep = (
        finite
        & (r >= spec.min_range)
        & (r <= spec.max_range)
        & (signal >= spec.min_signal)
        & (draws >= dropout)
    )
    noise = rng.normal(0.0, 1.0, r.shape) * spec.range_noise
    shine = rng.normal(0.0, 1.0, r.shape) * spec.intensity_noise
    order = keep.T  # azimuth-major: a spinning LiDAR's order
    d, _, _ = _rays(spec)
    measured = (r + noise).T[order]
    xyz = np.stack([d[k].T[order] * measured for k in range(3)], axis=1)
    intensity = np.clip((alb * cos + shine).T[order], 0.0, 1.0)
    rings = np.broadcast_to(np.arange(r.shape[0], dtype=np.uint8)[None, :], order.shape)[order]
    return Sweep(
        points=np.c_[xyz, intensity].astype(np.float32),
        hit=c["owner"].T[order].astype(np.int64),
        surface=c["surface"].T[order].astype(np.uint8),
        ring=rings.astype(np.uint8),
    )
