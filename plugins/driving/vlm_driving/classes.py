"""The driving classes and how COCO's categories map onto them (light: no imports)."""

from __future__ import annotations

#: The classes of the default detector, in label order (label 0 is the background).
CLASSES: tuple[str, ...] = (
    "car",
    "truck",
    "bus",
    "motorcycle",
    "bicycle",
    "pedestrian",
    "traffic light",
    "traffic sign",
)

#: COCO category id (torchvision's 91-index label) → driving class. COCO has no general
#: traffic-sign category; its stop sign is the nearest.
COCO_TO_DRIVING: dict[int, str] = {
    1: "pedestrian",  # person
    2: "bicycle",
    3: "car",
    4: "motorcycle",
    6: "bus",
    8: "truck",
    10: "traffic light",
    13: "traffic sign",  # stop sign
}
