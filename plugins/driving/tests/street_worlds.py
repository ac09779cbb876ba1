"""Hand-built worlds of the scene generator for the driving tests: a straight street and the
cars put on it (the camera and the LiDAR tests share them)."""

from __future__ import annotations

import numpy as np
from vlm_driving.scenes import Look, Thing, World, style_for


def street(things: list[Thing], look: Look | None = None) -> World:
    """A three-lane street without buildings, the camera in the first lane, no sensor noise."""
    return World(
        things=things,
        blocks=[],
        lanes_left=1,
        lanes_right=2,
        camera_x=1.75,
        horizon=0.45,
        focal=0.8,
        look=look or Look(noise=0.0),
    )


def car(i: int, x: float, z: float) -> Thing:
    """Car ``i`` (its look drawn from seed ``i``) at lateral ``x`` and depth ``z`` metres."""
    rng = np.random.default_rng(i)
    return Thing(id=i, cls="car", x=x, z=z, width=1.8, height=1.5, style=style_for("car", rng))
