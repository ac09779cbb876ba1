"""Camera + LiDAR fusion: the distance to every 2D detection, from the LiDAR points that land in
its box.

One frame at a time (:func:`range_boxes`):

1. **Projection.** The sweep is projected onto the image once with the calibration chain
   ``P2 · R0_rect · Tr_velo_to_cam`` (:meth:`vlm_core.types.Scene.project`): every point in
   front of the camera that lands on the image, with its pixel and its camera-frame depth.
2. **Ground removal.** A plane is fitted to the points in view by RANSAC (Fischler and Bolles,
   1981: the plane of most points within ``ground_tolerance`` among random three-point
   hypotheses), restricted to near-level planes among the lower half of the points, then
   refined by least squares (SVD) on its inliers. Points within ``ground_tolerance`` of the
   plane, or below it, are ground: they would put the road in front of a car into the car's
   box. This is the usual first step of LiDAR object pipelines (e.g. Zermas et al., ICRA 2017,
   "Fast segmentation of 3D point clouds"); it assumes the road is planar over the view (true of
   the generated world, and of most KITTI frames within 40 m).
3. **Distance.** Each box is shrunk by ``box_shrink`` of its width and height on every side
   (its edges bleed onto what is behind and beside the object) and takes the non-ground points
   inside it; a box whose shrunk inside holds fewer than ``min_points`` takes those of its
   whole box (a sign plate one scan line crosses at its lower edge). Where boxes overlap, a
   box is measured on the points no other box holds when it has enough of them
   (``exclusive``): a truck's box often holds the car in front of it, whose own box claims
   those points. The depths are sorted and split into clusters wherever
   consecutive depths are further apart than ``cluster_gap`` metres plus ``cluster_gap_rel``
   of the range (the LiDAR's spacing grows with distance). The object is the nearest cluster
   holding at least ``cluster_share`` of the box's points (at the default 0.5: the largest
   cluster); its distance is the ``face_percentile`` (median) of its depths: the forward
   distance (camera z) to the face of the object the camera sees, which is what
   :attr:`vlm_driving.lidar_scenes.TruthObject.distance` defines. Fewer than ``min_points``
   points in the box: the distance is NaN (not measured). The rule and its settings were
   chosen on validation seeds 8_100_000-8_100_099 (truth boxes): the nearest cluster with a
   fifth of the points and the 10th percentile left 20% of objects within 40 m over 1 m off
   (an occluder in the box), the largest cluster among the exclusive points 10%.
4. **Confidence** in [0, 1]: grows with the cluster's point count (half at 8 points) and with
   its share of the box's points, and falls with the depth spread of its face.
5. **Location.** The 3D point of the box's bottom-centre ray at that depth, in the camera frame
   (what KITTI's label ``location`` holds, there the centre of the box's bottom face), and the
   same point in the LiDAR frame, for a bird's-eye view.

Everything is vectorised over points: one projection, one plane test, one (boxes x points)
membership mask; the only Python loop is over the boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlm_core.types import Scene
from vlm_driving.params import MIN_POINTS


@dataclass(frozen=True)
class FusionSettings:
    """How :func:`range_boxes` measures (the defaults were chosen on validation seeds
    8_100_000.. of :mod:`vlm_driving.lidar_scenes`; see the plugin README)."""

    #: fewer points than this in a box: distance NaN
    min_points: int = MIN_POINTS
    #: points within this many metres of the ground plane (or below it) are ground
    ground_tolerance: float = 0.2
    #: share of a box's width and height cut from each side before points are counted
    box_shrink: float = 0.05
    #: depth gap (metres) that splits two clusters, plus ``cluster_gap_rel`` of the range
    cluster_gap: float = 0.3
    cluster_gap_rel: float = 0.02
    #: the nearest cluster with at least this share of the box's points is the object (none
    #: has: the largest); at 0.5 it is the largest cluster
    cluster_share: float = 0.5
    #: percentile of the object cluster's depths taken as its face's distance
    face_percentile: float = 50.0
    #: measure a box on the points no other box holds, when it has at least this share of
    #: its points (and ``min_points``) to itself; else on all its points
    exclusive: bool = True
    exclusive_share: float = 0.2
    #: RANSAC hypotheses and the points they are scored on
    ransac_iterations: int = 64
    ransac_sample: int = 2000
    #: the ground plane's normal is within this many degrees of the LiDAR's up axis
    max_ground_tilt_deg: float = 15.0


@dataclass(frozen=True, eq=False)
class Ground:
    """A plane ``normal · p + offset = 0`` in the LiDAR frame (``normal`` unit, pointing up),
    fitted to ``inliers`` points."""

    normal: np.ndarray
    offset: float
    inliers: int

    def height(self, xyz: np.ndarray) -> np.ndarray:
        """Signed height of (N, 3) LiDAR-frame points above the plane, metres."""
        return xyz @ self.normal + self.offset


@dataclass(frozen=True, eq=False)
class Ranging:
    """The measurements of one frame's boxes (N of them).

    ``distance`` (N,) float64 metres, the forward (camera z) distance to the object's visible
    face, NaN where fewer than ``min_points`` points fell in the box; ``points`` (N,) int64, the
    non-ground points in the (shrunk) box; ``confidence`` (N,) in [0, 1] (0 where NaN);
    ``location`` (N, 3) camera frame (x right, y down, z forward) and ``lidar`` (N, 3) LiDAR
    frame: the box's bottom-centre ray at that distance (NaN where the distance is).
    """

    distance: np.ndarray
    points: np.ndarray
    confidence: np.ndarray
    location: np.ndarray
    lidar: np.ndarray
    min_points: int = MIN_POINTS

    def __len__(self) -> int:
        return len(self.distance)

    @classmethod
    def empty(cls, min_points: int = MIN_POINTS) -> Ranging:
        return cls(
            distance=np.zeros(0),
            points=np.zeros(0, np.int64),
            confidence=np.zeros(0),
            location=np.zeros((0, 3)),
            lidar=np.zeros((0, 3)),
            min_points=min_points,
        )


def fit_ground(
    xyz: np.ndarray, settings: FusionSettings = FusionSettings(), seed: int = 0
) -> Ground | None:
    """The ground plane of (N, 3) LiDAR-frame points by RANSAC (see the module docstring);
    None when no near-level plane is supported by three points or more.

    Hypotheses are drawn from the lower half (by height) of an even spread of at most
    ``2 * ransac_sample`` of the points, and scored together as one matrix product on that
    half; the best is refined on its inliers there. The seed makes the fit repeatable.
    """
    if len(xyz) < 3:
        return None
    rng = np.random.default_rng(seed)
    # an even spread of at most 2 x ransac_sample points, then its lower half
    spread = xyz[:: max(1, len(xyz) // (2 * settings.ransac_sample))]
    low = spread[spread[:, 2] <= np.median(spread[:, 2])]
    if len(low) < 3:
        return None
    sample = low[: settings.ransac_sample]
    triples = sample[rng.integers(0, len(sample), size=(settings.ransac_iterations, 3))]
    normals = np.cross(triples[:, 1] - triples[:, 0], triples[:, 2] - triples[:, 0])
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-9
    normals = normals[ok] / norms[ok, None]
    normals *= np.sign(normals[:, 2:3] + 1e-12)  # pointing up
    offsets = -np.einsum("ij,ij->i", normals, triples[ok, 0])
    level = normals[:, 2] >= np.cos(np.radians(settings.max_ground_tilt_deg))
    if not level.any():
        return None
    normals, offsets = normals[level], offsets[level]
    heights = sample @ normals.T + offsets  # (S, H)
    best = int(np.argmax((np.abs(heights) < settings.ground_tolerance).sum(0)))
    inliers = low[np.abs(low @ normals[best] + offsets[best]) < settings.ground_tolerance]
    if len(inliers) < 3:
        return None
    centre = inliers.mean(0)
    normal = np.linalg.svd(inliers - centre, full_matrices=False)[2][-1]
    normal = normal * np.sign(normal[2] + 1e-12)
    return Ground(normal=normal, offset=float(-normal @ centre), inliers=len(inliers))


def shrink(xyxy: np.ndarray, share: float) -> np.ndarray:
    """(N, 4) boxes with ``share`` of their width and height cut from each side."""
    boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
    dx = (boxes[:, 2] - boxes[:, 0]) * share
    dy = (boxes[:, 3] - boxes[:, 1]) * share
    return np.stack([boxes[:, 0] + dx, boxes[:, 1] + dy, boxes[:, 2] - dx, boxes[:, 3] - dy], 1)


def _sorted_percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear) of already sorted ``values``, without its
    overhead (it runs once per box)."""
    position = q / 100.0 * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return float(values[low] + (values[high] - values[low]) * (position - low))


def face_distance(depths: np.ndarray, settings: FusionSettings) -> tuple[float, float]:
    """The distance of the object's visible face from the depths of the points in its box,
    and the confidence of it (see the module docstring): ``(nan, 0.0)`` under ``min_points``.
    """
    count = len(depths)
    if count < settings.min_points:
        return float("nan"), 0.0
    d = np.sort(depths)
    gaps = np.diff(d) > settings.cluster_gap + settings.cluster_gap_rel * d[:-1]
    starts = np.concatenate(([0], np.flatnonzero(gaps) + 1))
    ends = np.append(starts[1:], count)
    sizes = ends - starts
    big = np.flatnonzero(sizes >= max(settings.cluster_share * count, 1.0))
    pick = int(big[0]) if len(big) else int(np.argmax(sizes))
    cluster = d[starts[pick] : ends[pick]]
    distance = _sorted_percentile(cluster, settings.face_percentile)
    n = len(cluster)
    near = cluster[: np.searchsorted(cluster, distance + max(0.3, 0.02 * distance), "right")]
    spread = float(near.std()) if len(near) > 1 else 0.0
    confidence = (
        (1.0 - 0.5 ** (n / 8.0))
        * (0.5 + 0.5 * n / count)
        * np.exp(-spread / max(0.1, 0.01 * distance))
    )
    return distance, float(np.clip(confidence, 0.0, 1.0))


def ray_points(projection: np.ndarray, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """(N, 3) camera-frame points at camera z ``depth`` (N,) whose pixels under the 3x4
    ``projection`` are ``uv`` (N, 2): the 2x2 linear system of ``P·[x, y, z, 1] ∝ [u, v, 1]``
    for x and y."""
    p = np.asarray(projection, np.float64)
    u, v, z = uv[:, 0], uv[:, 1], depth
    a = np.empty((len(z), 2, 2))
    b = np.empty((len(z), 2))
    for row, w in ((0, u), (1, v)):
        a[:, row, 0] = w * p[2, 0] - p[row, 0]
        a[:, row, 1] = w * p[2, 1] - p[row, 1]
        b[:, row] = (p[row, 2] - w * p[2, 2]) * z + p[row, 3] - w * p[2, 3]
    xy = np.linalg.solve(a, b[..., None])[..., 0] if len(z) else np.zeros((0, 2))
    return np.column_stack([xy, z])


def to_lidar(lidar_to_camera: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """(N, 3) camera-frame points in the LiDAR frame (the inverse of ``lidar_to_camera``)."""
    back = np.linalg.inv(np.asarray(lidar_to_camera, np.float64))
    return camera @ back[:3, :3].T + back[:3, 3]


def range_boxes(
    scene: Scene,
    t: int,
    xyxy: np.ndarray,
    settings: FusionSettings = FusionSettings(),
    ground: Ground | bool | None = True,
) -> Ranging:
    """The distance, point count, confidence and 3D location of each (N, 4) xyxy box on image
    ``t`` of ``scene`` (see the module docstring).

    ``ground``: True fits the ground plane of the frame's points in view; a :class:`Ground`
    uses that plane; False or None keeps every point (no ground removal).
    """
    boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
    if not len(boxes):
        return Ranging.empty(settings.min_points)
    index, uvz = scene.project(t)
    if len(index):
        xyz = scene.clouds[t][index, :3]
        plane = fit_ground(xyz.astype(np.float64), settings) if ground is True else ground or None
        if isinstance(plane, Ground):
            uvz = uvz[plane.height(xyz) >= settings.ground_tolerance]
    u, v = uvz[:, 0].astype(np.float32), uvz[:, 1].astype(np.float32)

    def within(cut: np.ndarray) -> np.ndarray:  # (N boxes, M points)
        cut = cut.astype(np.float32)
        return (
            (u[None, :] >= cut[:, 0:1])
            & (u[None, :] <= cut[:, 2:3])
            & (v[None, :] >= cut[:, 1:2])
            & (v[None, :] <= cut[:, 3:4])
        )

    inside = within(shrink(boxes, settings.box_shrink))
    if settings.box_shrink > 0:
        # a thin object one scan line crosses at its box's edge (a sign plate) keeps the
        # points of its whole box rather than none
        whole = within(boxes)
        few = (inside.sum(1) < settings.min_points) & (whole.sum(1) >= settings.min_points)
        inside = np.where(few[:, None], whole, inside)
    if settings.exclusive and len(boxes) > 1:
        # a point inside several boxes is left to them only where a box has too few of its
        # own: an object's box often holds the one in front of it (a car before a truck)
        alone = inside & (inside.sum(0) == 1)[None, :]
        own = alone.sum(1)
        enough = own >= np.maximum(settings.min_points, settings.exclusive_share * inside.sum(1))
        inside = np.where(enough[:, None], alone, inside)
    rows, cols = np.nonzero(inside)  # by box, then point
    depths = uvz[cols, 2]
    bounds = np.searchsorted(rows, np.arange(len(boxes) + 1))
    counts = np.diff(bounds).astype(np.int64)
    distance = np.full(len(boxes), np.nan)
    confidence = np.zeros(len(boxes))
    for i in np.flatnonzero(counts >= settings.min_points):
        distance[i], confidence[i] = face_distance(depths[bounds[i] : bounds[i + 1]], settings)
    bottom = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]], 1)
    measured = np.isfinite(distance)
    location = np.full((len(boxes), 3), np.nan)
    lidar = np.full((len(boxes), 3), np.nan)
    if measured.any():
        location[measured] = ray_points(scene.projection, bottom[measured], distance[measured])
        lidar[measured] = to_lidar(scene.lidar_to_camera, location[measured])
    return Ranging(
        distance=distance,
        points=counts,
        confidence=confidence,
        location=location,
        lidar=lidar,
        min_points=settings.min_points,
    )
