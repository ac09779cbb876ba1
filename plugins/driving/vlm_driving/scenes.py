"""Procedural driving scenes: a road in perspective with lanes, sidewalks, sky and buildings,
and the eight driving classes at their real sizes and distances, with occlusion, lighting
(day, dusk, night) and weather (clear, fog, rain).

A scene is a small world in metres seen by a forward camera; :func:`render` projects it at any
resolution and returns the image with the visible box of every labelled object (what the owner
map of :class:`~vlm_driving.canvas.Canvas` shows of it, so occluded parts do not count).
:class:`Drive` moves the camera and the traffic through a world over time: the frames of a
test video, with ground-truth track ids.

``python -m vlm_driving.scenes OUT --count 2000 --size 400x224 --seed 0`` writes a COCO data
set (``OUT/images/*.png``, ``OUT/annotations.json``; ``--format yolo`` for the YOLO layout;
``--size 400x224,1280x720`` makes the scenes take the sizes in turn);
``--video SECONDS`` writes a 720p MP4 with its per-frame ground truth instead.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vlm_driving.canvas import FAR, RGB, Canvas
from vlm_driving.classes import CLASSES
from vlm_driving.sprites import SPRITES, style_for

LANE = 3.5  # metres
CAMERA_HEIGHT = 1.4
NEAR = 1.0  # nearest depth drawn, metres

#: (width, height) in metres and the share of its box an object's drawing fills.
SIZES: dict[str, tuple[tuple[float, float], tuple[float, float], float]] = {
    "car": ((1.7, 1.95), (1.35, 1.6), 0.85),
    "truck": ((2.4, 2.55), (3.0, 3.8), 0.9),
    "bus": ((2.5, 2.6), (3.0, 3.4), 0.95),
    "motorcycle": ((0.7, 0.9), (1.45, 1.7), 0.55),
    "bicycle": ((1.6, 1.8), (1.0, 1.8), 0.3),
    "pedestrian": ((0.5, 0.65), (1.5, 1.95), 0.5),
    "traffic light": ((0.4, 0.5), (1.1, 1.3), 0.95),
    "traffic sign": ((0.6, 0.9), (0.6, 0.9), 0.65),
}


@dataclass
class Thing:
    """An object of the world: class, ground position (x lateral, z ahead, metres), size,
    height of its bottom above the ground, velocity and look."""

    id: int
    cls: str
    x: float
    z: float
    width: float
    height: float
    elevation: float = 0.0
    vx: float = 0.0
    vz: float = 0.0
    front: bool = False  # seen from the front (oncoming) rather than from behind
    style: dict[str, object] = field(default_factory=dict)


@dataclass
class Block:
    """A building beside the road: its facade runs along z at lateral ``x``."""

    x: float
    z0: float
    z1: float
    height: float
    colour: RGB
    windows: bool


@dataclass
class Look:
    """Lighting and weather of a scene."""

    time: str = "day"  # day, dusk, night
    weather: str = "clear"  # clear, fog, rain
    visibility: float = 400.0  # metres, for fog
    exposure: float = 1.0
    noise: float = 2.0
    blur: float = 0.0


@dataclass
class World:
    """Everything in a scene, in metres, and the camera's view of it."""

    things: list[Thing]
    blocks: list[Block]
    lanes_left: int  # oncoming lanes (x < 0 side of the centre line)
    lanes_right: int  # lanes in the camera's direction
    camera_x: float
    horizon: float  # image row of the horizon, as a fraction of the height
    focal: float  # focal length as a fraction of the width
    look: Look
    travelled: float = 0.0  # metres the camera has driven (lane-marking phase)
    crosswalk: float | None = None  # depth of a zebra crossing
    sky: RGB = (150, 190, 230)
    ground: RGB = (90, 120, 70)

    @property
    def road_left(self) -> float:
        return -self.lanes_left * LANE

    @property
    def road_right(self) -> float:
        return self.lanes_right * LANE


@dataclass(frozen=True)
class Frame:
    """A rendered scene: the image and its labelled objects (visible boxes, in pixels)."""

    image: np.ndarray  # (H, W, 3) uint8
    xyxy: np.ndarray  # (N, 4) float32
    labels: tuple[str, ...]
    ids: np.ndarray  # (N,) int64: the objects' ids (track ids in a video)


# --------------------------------------------------------------------------- building a world


def _lane_centre(lane: int) -> float:
    """Centre of lane ``lane``: 0, 1.. in the camera's direction, -1, -2.. oncoming."""
    return (lane + 0.5) * LANE


def _thing(world_ids: list[int], cls: str, rng: np.random.Generator, **kw: float | bool) -> Thing:
    (w0, w1), (h0, h1), _ = SIZES[cls]
    world_ids[0] += 1
    thing = Thing(
        id=world_ids[0],
        cls=cls,
        x=0.0,
        z=0.0,
        width=float(rng.uniform(w0, w1)),
        height=float(rng.uniform(h0, h1)),
        style=style_for(cls, rng),
    )
    for key, value in kw.items():
        setattr(thing, key, value)
    if cls == "bicycle" and not thing.style["rider"]:
        thing.height = float(rng.uniform(0.95, 1.1))
    if cls == "traffic light" and thing.style["horizontal"]:
        thing.width, thing.height = thing.height, thing.width
    return thing


def _free(things: Sequence[Thing], x: float, z: float, dx: float, dz: float) -> bool:
    return all(abs(t.x - x) > dx or abs(t.z - z) > dz for t in things)


def spawn(
    world: World,
    rng: np.random.Generator,
    counter: list[int],
    cls: str,
    z_range: tuple[float, float],
    speed: float = 0.0,
) -> Thing | None:
    """Place one object of ``cls`` where such objects are (lanes, sidewalks, poles), between
    the depths of ``z_range``; None when its spot is taken."""
    z = float(rng.uniform(*z_range))
    left, right = world.road_left, world.road_right
    if cls in ("car", "truck", "bus", "motorcycle"):
        lane = int(rng.integers(-world.lanes_left, world.lanes_right))
        jitter = 0.9 if cls == "motorcycle" else 0.3
        x = _lane_centre(lane) + float(rng.uniform(-jitter, jitter))
        oncoming = lane < 0
        if abs(x - world.camera_x) < 1.6 and z < 7:
            return None
        length = {"car": 5.5, "truck": 9.0, "bus": 13.0, "motorcycle": 3.0}[cls]
        if not _free([t for t in world.things if t.elevation == 0], x, z, 2.2, length):
            return None
        v = (
            -speed * float(rng.uniform(0.7, 1.1))
            if oncoming
            else speed * float(rng.uniform(0.8, 1.1))
        )
        return _thing(counter, cls, rng, x=x, z=z, front=oncoming, vz=v)
    if cls == "pedestrian":
        if world.crosswalk is not None and rng.random() < 0.35:
            x = float(rng.uniform(left + 0.5, right - 0.5))
            z = world.crosswalk + float(rng.uniform(-1.2, 1.2))
            vx = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.5))
        else:
            side = right if rng.random() < 0.5 else left
            x = side + math.copysign(float(rng.uniform(0.6, 3.2)), side)
            vx = 0.0
        if not _free([t for t in world.things if t.elevation == 0], x, z, 0.6, 0.6):
            return None
        stride = float(rng.uniform(-1, 1))
        thing = _thing(counter, cls, rng, x=x, z=z, vx=vx, front=bool(rng.random() < 0.5))
        thing.style["stride"] = stride
        thing.vz = float(rng.uniform(-1.2, 1.2)) if vx == 0 else 0.0
        return thing
    if cls == "bicycle":
        side = right if rng.random() < 0.6 else left
        x = side + math.copysign(float(rng.uniform(0.1, 1.5)), side)
        if not _free([t for t in world.things if t.elevation == 0], x, z, 1.0, 2.0):
            return None
        thing = _thing(counter, cls, rng, x=x, z=z)
        if thing.style["rider"]:
            thing.vz = float(rng.uniform(2.0, 5.0))
        return thing
    # signs and lights stand on poles beside the road, lights also hang over it
    side = right if rng.random() < 0.7 else left
    x = side + math.copysign(float(rng.uniform(0.4, 1.2)), side)
    if cls == "traffic light":
        elevation = float(rng.uniform(2.6, 4.2))
        if rng.random() < 0.35:
            x = float(rng.uniform(left + 1, right - 1))
            elevation = float(rng.uniform(4.6, 5.4))
    else:
        elevation = float(rng.uniform(1.9, 2.6))
    if not _free([t for t in world.things if t.elevation > 0], x, z, 1.5, 3.0):
        return None
    return _thing(counter, cls, rng, x=x, z=z, elevation=elevation, front=True)


#: How many objects of each class a scene has (inclusive range), and how far away they stand.
CROWD: dict[str, tuple[int, int, float, float]] = {
    "car": (1, 6, 6.0, 50.0),
    "truck": (0, 2, 9.0, 55.0),
    "bus": (0, 1, 10.0, 55.0),
    "motorcycle": (0, 2, 6.0, 35.0),
    "bicycle": (0, 2, 5.0, 30.0),
    "pedestrian": (0, 5, 4.0, 32.0),
    "traffic light": (0, 3, 8.0, 38.0),
    "traffic sign": (0, 3, 6.0, 30.0),
}


def random_look(rng: np.random.Generator) -> Look:
    time = str(rng.choice(["day", "day", "day", "dusk", "night"]))
    weather = str(rng.choice(["clear", "clear", "clear", "fog", "rain"]))
    return Look(
        time=time,
        weather=weather,
        visibility=float(rng.uniform(60, 160)) if weather == "fog" else 1e4,
        exposure=float(rng.uniform(0.75, 1.2)),
        noise=float(rng.uniform(0.5, 5.0)),
        blur=float(rng.choice([0.0, 0.0, 0.4, 0.8])),
    )


def random_world(
    rng: np.random.Generator,
    counter: list[int] | None = None,
    look: Look | None = None,
    crowd: Mapping[str, tuple[int, int, float, float]] | None = None,
) -> World:
    """A random street with a random crowd (``counter[0]``: the last object id used);
    ``crowd`` replaces :data:`CROWD` (how many of each class, how far: a denser or farther
    crowd for shifted held-out scenes)."""
    counter = counter if counter is not None else [0]
    lanes_right = int(rng.integers(1, 3))
    lanes_left = int(rng.integers(1, 3))
    world = World(
        things=[],
        blocks=[],
        lanes_left=lanes_left,
        lanes_right=lanes_right,
        camera_x=_lane_centre(int(rng.integers(0, lanes_right))) + float(rng.uniform(-0.4, 0.4)),
        horizon=float(rng.uniform(0.36, 0.5)),
        focal=float(rng.uniform(0.7, 0.95)),
        look=look or random_look(rng),
        travelled=float(rng.uniform(0, 100)),
        crosswalk=float(rng.uniform(10, 30)) if rng.random() < 0.3 else None,
        ground=((90, 120, 70) if rng.random() < 0.5 else (120, 118, 112)),
    )
    world.blocks = _blocks(world, rng, 0.0, 220.0)
    for cls, (lo, hi, z0, z1) in (CROWD if crowd is None else crowd).items():
        for _ in range(int(rng.integers(lo, hi + 1))):
            thing = spawn(world, rng, counter, cls, (z0, z1), speed=10.0)
            if thing is not None:
                world.things.append(thing)
    return world


def _blocks(world: World, rng: np.random.Generator, z_from: float, z_to: float) -> list[Block]:
    blocks = []
    for sign, edge in ((1, world.road_right), (-1, world.road_left)):
        z = z_from + float(rng.uniform(-10, 0))
        while z < z_to:
            length = float(rng.uniform(10, 35))
            grey = int(rng.integers(90, 210))
            tint = rng.integers(-30, 31, size=3)
            colour = tuple(int(np.clip(grey + t, 0, 255)) for t in tint)
            x = edge + sign * float(rng.uniform(4.5, 8.0))
            blocks.append(
                Block(
                    x=x,
                    z0=z,
                    z1=z + length,
                    height=float(rng.uniform(5, 28)),
                    colour=colour,
                    windows=bool(rng.random() < 0.8),
                )
            )  # type: ignore[arg-type]
            z += length + float(rng.uniform(0, 6))
    return blocks


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Camera:
    width: int
    height: int
    focal: float  # pixels
    horizon: float  # pixel row
    x: float

    def project(self, x: float, y: float, z: float) -> tuple[float, float]:
        z = max(z, NEAR)
        return (
            self.width / 2 + self.focal * (x - self.x) / z,
            self.horizon + self.focal * (CAMERA_HEIGHT - y) / z,
        )


def _sky(world: World, w: int, h: int, horizon: float) -> Image.Image:
    top = {"day": (95, 150, 215), "dusk": (70, 60, 120), "night": (8, 10, 24)}[world.look.time]
    low = {"day": (190, 215, 235), "dusk": (235, 150, 95), "night": (30, 30, 50)}[world.look.time]
    t = np.clip(np.arange(h, dtype=np.float32) / max(horizon, 1.0), 0, 1)[:, None]
    sky = np.asarray(top, np.float32) * (1 - t) + np.asarray(low, np.float32) * t
    return Image.fromarray(np.repeat(sky[:, None, :], w, axis=1).astype(np.uint8).reshape(h, w, 3))


def _ground(cv: Canvas, cam: Camera, world: World) -> None:
    far = 600.0
    cv.owner(0, FAR)
    w = cam.width

    def quad(x0: float, x1: float, z0: float, z1: float, colour: RGB) -> None:
        pts = [
            cam.project(x0, 0, z0),
            cam.project(x1, 0, z0),
            cam.project(x1, 0, z1),
            cam.project(x0, 0, z1),
        ]
        cv.polygon(pts, colour)

    horizon = cam.horizon
    cv.rect((0, horizon, w, cam.height), world.ground)
    left, right = world.road_left, world.road_right
    quad(left - 3.5, left, NEAR, far, (150, 148, 142))  # sidewalks
    quad(right, right + 3.5, NEAR, far, (150, 148, 142))
    quad(left, right, NEAR, far, (72, 72, 76))
    quad(left - 0.15, left, NEAR, far, (190, 190, 185))  # curbs
    quad(right, right + 0.15, NEAR, far, (190, 190, 185))
    marking = (225, 225, 215)
    phase = world.travelled % 12.0
    for lane in range(-world.lanes_left + 1, world.lanes_right):
        x = lane * LANE
        if lane == 0:  # the centre line: solid, yellow
            quad(x - 0.08, x + 0.08, NEAR, far, (220, 190, 60))
            continue
        for k in range(0, 14):
            z0 = k * 12.0 - phase
            if z0 + 4 > NEAR:
                quad(x - 0.07, x + 0.07, max(z0, NEAR), z0 + 4.0, marking)
    quad(left + 0.2, left + 0.32, NEAR, far, marking)
    quad(right - 0.32, right - 0.2, NEAR, far, marking)
    if world.crosswalk is not None and world.crosswalk > NEAR + 1:
        stripes = int((right - left) / 0.9)
        for i in range(stripes):
            x0 = left + 0.3 + i * 0.9
            quad(x0, x0 + 0.45, world.crosswalk - 1.5, world.crosswalk + 1.5, marking)


def _building(cv: Canvas, cam: Camera, block: Block, lit: bool, rng: np.random.Generator) -> None:
    z0, z1 = max(block.z0, NEAR), block.z1
    if z1 <= NEAR + 0.1:
        return
    cv.owner(0, z0)
    x, h = block.x, block.height
    depth = 12.0 * (1 if x > 0 else -1)
    face = [
        cam.project(x, 0, z0),
        cam.project(x, 0, z1),
        cam.project(x, h, z1),
        cam.project(x, h, z0),
    ]
    front = [
        cam.project(x, 0, z0),
        cam.project(x + depth, 0, z0),
        cam.project(x + depth, h, z0),
        cam.project(x, h, z0),
    ]
    cv.polygon(front, tuple(int(c * 0.8) for c in block.colour))  # type: ignore[arg-type]
    cv.polygon(face, block.colour)
    if not block.windows or z0 > 120:
        return
    floors = max(1, int(h / 3.2))
    columns = max(1, int((z1 - z0) / 2.5))
    glass = (55, 70, 90)
    for f in range(floors):
        y_lo, y_hi = f * 3.2 + 1.0, f * 3.2 + 2.4
        if y_hi > h - 0.3:
            break
        for c in range(columns):
            za, zb = z0 + c * 2.5 + 0.6, z0 + c * 2.5 + 1.8
            if zb > z1 - 0.3:
                break
            on = lit and rng.random() < 0.3
            quad = [
                cam.project(x, y_lo, za),
                cam.project(x, y_lo, zb),
                cam.project(x, y_hi, zb),
                cam.project(x, y_hi, za),
            ]
            cv.polygon(quad, (240, 210, 140) if on else glass, emissive=on)


def _box_of(cam: Camera, t: Thing) -> tuple[float, float, float, float]:
    """The pixel box of a thing's front face."""
    u, v_bottom = cam.project(t.x, t.elevation, t.z)
    half = cam.focal * t.width / max(t.z, NEAR) / 2
    tall = cam.focal * t.height / max(t.z, NEAR)
    return (u - half, v_bottom - tall, u + half, v_bottom)


def _pole(cv: Canvas, cam: Camera, t: Thing) -> None:
    if t.elevation <= 0:
        return
    cv.owner(0, t.z + 0.01)
    width = max(1.0, cam.focal * 0.1 / t.z)
    if t.cls == "traffic light" and t.elevation > 4.5:  # a gantry across the road
        (ua, va), (ub, vb) = (
            cam.project(t.x - 8, t.elevation + t.height * 0.8, t.z),
            cam.project(t.x + 8, t.elevation + t.height * 0.8, t.z),
        )
        cv.line([(ua, va), (ub, vb)], (70, 72, 75), width)
        return
    top = cam.project(t.x, t.elevation, t.z)
    foot = cam.project(t.x, 0, t.z)
    cv.line([top, foot], (110, 112, 115), width)


def _finish(
    rgb: np.ndarray,
    depth: np.ndarray,
    glow: np.ndarray,
    world: World,
    cam: Camera,
    rng: np.random.Generator,
) -> np.ndarray:
    look = world.look
    img = rgb.astype(np.float32)
    h, w = depth.shape
    rows = np.arange(h, dtype=np.float32)[:, None] - cam.horizon
    ground = np.where(rows > 0.5, cam.focal * CAMERA_HEIGHT / np.maximum(rows, 0.5), FAR)
    z = np.where(depth >= FAR, np.broadcast_to(ground, depth.shape), depth)
    if look.weather == "fog":
        keep = np.exp(-z / look.visibility)[:, :, None]
        img = img * keep + np.float32(200.0) * (1 - keep)
    light = {"day": 1.0, "dusk": 0.65, "night": 0.28}[look.time] * look.exposure
    g = glow[:, :, None]
    img = img * (light * (1 - g) + g)
    if look.time != "day" and glow.any():  # lamps bloom in the dark
        halo = Image.fromarray(np.clip(rgb * g, 0, 255).astype(np.uint8))
        radius = max(1.0, w / 200)
        img += np.asarray(halo.filter(ImageFilter.GaussianBlur(radius)), np.float32) * 0.8
    if look.weather == "rain":
        img *= 0.85
        streaks = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(streaks)
        length = h / 14
        for _ in range(int(w * h / 2500)):
            x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
            draw.line([(x, y), (x - length * 0.25, y + length)], fill=90, width=1)
        img += np.asarray(streaks, np.float32)[:, :, None] * 0.6
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if look.blur > 0:
        out = out.filter(ImageFilter.GaussianBlur(look.blur * w / 400))
    arr = np.asarray(out, np.float32)
    arr += rng.normal(0, look.noise, arr.shape).astype(np.float32)
    return np.clip(arr, 0, 255).astype(np.uint8)


#: An object is labelled when this much of its drawing is visible ...
MIN_VISIBLE = 0.3
#: ... and its visible box is at least this big (as fractions of the image width).
MIN_SIDE, MIN_AREA_SIDE = 0.01, 0.03


def render(world: World, width: int, height: int, rng: np.random.Generator) -> Frame:
    """Draw ``world`` at ``width`` x ``height`` and find each object's visible box."""
    cam = Camera(width, height, world.focal * width, world.horizon * height, world.camera_x)
    cv = Canvas(width, height)
    cv.rgb.paste(_sky(world, width, height, cam.horizon))
    _ground(cv, cam, world)
    lit = world.look.time != "day"
    window_rng = np.random.default_rng(int(world.travelled * 0) + len(world.blocks))
    for block in sorted(world.blocks, key=lambda b: -b.z0):
        _building(cv, cam, block, lit, window_rng)
    things = sorted((t for t in world.things if t.z > NEAR + 0.5), key=lambda t: -t.z)
    for t in things:
        box = _box_of(cam, t)
        if box[2] < 0 or box[0] > width or box[3] < 0 or box[1] > height:
            continue
        _pole(cv, cam, t)
        cv.owner(t.id, t.z)
        SPRITES[t.cls](cv, box, t.style, t.front)  # type: ignore[arg-type]
    rgb, owner, depth, glow = cv.arrays()
    image = _finish(rgb, depth, glow, world, cam, rng)
    return Frame(image=image, **_visible(things, owner, cam))  # type: ignore[arg-type]


def _visible(things: Sequence[Thing], owner: np.ndarray, cam: Camera) -> dict[str, object]:
    boxes, labels, ids = [], [], []
    min_side, min_area = MIN_SIDE * cam.width, (MIN_AREA_SIDE * cam.width) ** 2
    for t in things:
        x1, y1, x2, y2 = _box_of(cam, t)
        cx1, cy1 = max(0, math.floor(x1)), max(0, math.floor(y1))
        cx2, cy2 = min(cam.width, math.ceil(x2)), min(cam.height, math.ceil(y2))
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        window = owner[cy1:cy2, cx1:cx2] == t.id
        seen = int(window.sum())
        if seen == 0:
            continue
        full = (min(x2, cam.width) - max(x1, 0)) * (min(y2, cam.height) - max(y1, 0))
        if seen < MIN_VISIBLE * SIZES[t.cls][2] * max(full, 1.0):
            continue
        rows, cols = np.flatnonzero(window.any(axis=1)), np.flatnonzero(window.any(axis=0))
        bx1, by1 = cx1 + cols[0], cy1 + rows[0]
        bx2, by2 = cx1 + cols[-1] + 1, cy1 + rows[-1] + 1
        if min(bx2 - bx1, by2 - by1) < min_side or (bx2 - bx1) * (by2 - by1) < min_area:
            continue
        boxes.append((bx1, by1, bx2, by2))
        labels.append(t.cls)
        ids.append(t.id)
    return {
        "xyxy": np.asarray(boxes, np.float32).reshape(-1, 4),
        "labels": tuple(labels),
        "ids": np.asarray(ids, np.int64),
    }


def scene(seed: int, width: int = 400, height: int = 224) -> Frame:
    """The still scene of ``seed``."""
    rng = np.random.default_rng(seed)
    return render(random_world(rng), width, height, rng)


# --------------------------------------------------------------------------- driving (video)


class Drive:
    """A camera driving down a street at ``speed`` m/s with traffic around it; each
    :meth:`step` advances the world by one frame and renders it (ids are track ids)."""

    def __init__(
        self, seed: int, width: int = 1280, height: int = 720, fps: float = 25.0, speed: float = 9.0
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.counter = [0]
        look = replace(random_look(self.rng), time="day", weather="clear", blur=0.0, noise=1.5)
        self.world = random_world(self.rng, self.counter, look)
        self.width, self.height, self.fps, self.speed = width, height, fps, speed
        # traffic in the camera's direction drives with it: pace the cars ahead
        for t in self.world.things:
            if t.cls in ("car", "truck", "bus", "motorcycle") and not t.front:
                t.vz = speed * float(self.rng.uniform(0.85, 1.1))

    def _respawn(self) -> None:
        world, rng = self.world, self.rng
        world.things = [t for t in world.things if NEAR + 0.5 < t.z < 120]
        world.blocks = [b for b in world.blocks if b.z1 > NEAR]
        if max((b.z1 for b in world.blocks), default=0.0) < 200:
            world.blocks += _blocks(
                world, rng, max((b.z1 for b in world.blocks), default=0) + 2, 260
            )
        for cls, (_lo, hi, _z0, z1) in CROWD.items():
            have = sum(t.cls == cls for t in world.things)
            if have < hi and rng.random() < 0.02 * (hi - have):
                thing = spawn(world, rng, self.counter, cls, (z1, z1 + 10), speed=self.speed)
                if thing is not None:
                    if thing.cls in ("car", "truck", "bus", "motorcycle") and not thing.front:
                        thing.vz = self.speed * float(rng.uniform(0.85, 1.05))
                    world.things.append(thing)

    def step(self) -> Frame:
        dt = 1.0 / self.fps
        world = self.world
        world.travelled += self.speed * dt
        for t in world.things:
            t.z += (t.vz - self.speed) * dt
            t.x += t.vx * dt
        for b in world.blocks:
            b.z0 -= self.speed * dt
            b.z1 -= self.speed * dt
        if world.crosswalk is not None:
            world.crosswalk -= self.speed * dt
            if world.crosswalk < NEAR:
                world.crosswalk = None
        self._respawn()
        return render(world, self.width, self.height, self.rng)


def drive(
    seconds: float, seed: int = 0, width: int = 1280, height: int = 720, fps: float = 25.0
) -> list[Frame]:
    """The frames of a ``seconds``-long drive."""
    car = Drive(seed, width, height, fps)
    return [car.step() for _ in range(max(1, round(seconds * fps)))]


# --------------------------------------------------------------------------- data sets


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from None
    if not (32 <= w <= 4096 and 32 <= h <= 4096):
        raise argparse.ArgumentTypeError(f"size {w}x{h} is outside 32..4096")
    return w, h


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    return [_parse_size(part) for part in text.split(",")]


def write_dataset(
    out: Path,
    count: int,
    size: tuple[int, int] | Sequence[tuple[int, int]],
    seed: int,
    fmt: str = "coco",
) -> Path:
    """Write ``count`` scenes (seeds ``seed``..``seed + count - 1``) as a COCO or YOLO data
    set under ``out``; returns the annotation file (COCO) or the data.yaml (YOLO). ``size``
    is (width, height), or a list of them that the scenes take in turn."""
    from vlm_driving.datasets import Annotated, write_coco, write_yolo

    sizes: list[tuple[int, int]] = (
        [(int(size[0]), int(size[1]))]  # type: ignore[arg-type]
        if isinstance(size[0], int)
        else [(int(w), int(h)) for w, h in size]  # type: ignore[misc]
    )
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(count):
        width, height = sizes[i % len(sizes)]
        frame = scene(seed + i, width, height)
        path = images / f"scene_{seed + i:06d}.png"
        Image.fromarray(frame.image).save(path)
        items.append(
            Annotated(image=path, xyxy=frame.xyxy, labels=frame.labels, size=(height, width))
        )
    if fmt == "yolo":
        write_yolo(items, CLASSES, out)
        return out / "data.yaml"
    write_coco(items, CLASSES, out / "annotations.json")
    return out / "annotations.json"


def write_drive(
    out: Path,
    seconds: float,
    *,
    seed: int = 0,
    size: tuple[int, int] = (1280, 720),
    fps: float = 25.0,
) -> tuple[Path, Path]:
    """Write a drive as ``out/drive.mp4`` and its ground truth as ``out/drive.gt.jsonl`` (one
    line per frame: boxes, labels and track ids); returns both paths."""
    import json

    from vlm_core.export.video import encode_mp4
    from vlm_core.fileio import atomic_write_bytes, atomic_write_text

    frames = drive(seconds, seed, *size, fps=fps)
    video = out / "drive.mp4"
    atomic_write_bytes(video, encode_mp4(np.stack([f.image for f in frames]), fps))
    lines = [
        json.dumps(
            {
                "frame": t,
                "boxes": [
                    {"track_id": int(i), "label": label, "xyxy": [round(float(v), 2) for v in box]}
                    for box, label, i in zip(f.xyxy, f.labels, f.ids, strict=True)
                ],
            }
        )
        for t, f in enumerate(frames)
    ]
    truth = out / "drive.gt.jsonl"
    atomic_write_text(truth, "\n".join(lines) + "\n")
    return video, truth


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vlm_driving.scenes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", type=Path, help="the folder to write")
    parser.add_argument("--count", type=int, default=2000, help="scenes of a data set")
    parser.add_argument(
        "--size",
        type=_parse_sizes,
        default=None,
        help="WIDTHxHEIGHT (default 400x224; 1280x720 for --video); for a data set, a "
        "comma-separated list that the scenes take in turn",
    )
    parser.add_argument("--seed", type=int, default=0, help="the first scene's seed")
    parser.add_argument("--format", choices=("coco", "yolo"), default="coco")
    parser.add_argument(
        "--video",
        type=float,
        default=None,
        metavar="SECONDS",
        help="write a drive of this length (MP4 + ground-truth JSONL) instead",
    )
    parser.add_argument("--fps", type=float, default=25.0, help="frames per second of --video")
    args = parser.parse_args(argv)
    if args.video:
        if args.size and len(args.size) > 1:
            parser.error("--video takes one --size")
        size = args.size[0] if args.size else (1280, 720)
        for path in write_drive(args.out, args.video, seed=args.seed, size=size, fps=args.fps):
            print(path)
        return
    print(write_dataset(args.out, args.count, args.size or [(400, 224)], args.seed, args.format))


if __name__ == "__main__":
    main()
