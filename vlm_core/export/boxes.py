"""Box exports: COCO JSON (one file per run) and YOLO txt (one file per image)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlm_core.types import Boxes


def yolo_lines(boxes: Boxes, class_names: tuple[str, ...]) -> str:
    """YOLO txt: ``class cx cy w h score`` per box, coordinates normalised to [0, 1]."""
    height, width = boxes.image_size
    lines = []
    for i, (x1, y1, x2, y2) in enumerate(boxes.xyxy.tolist()):
        cls = class_names.index(boxes.labels[i])
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        w, h = (x2 - x1) / width, (y2 - y1) / height
        lines.append(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f} {float(boxes.scores[i]):.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


@dataclass
class CocoBuilder:
    """Accumulates images and detections into one COCO results document."""

    images: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    categories: dict[str, int] = field(default_factory=dict)

    def add(self, file_name: str, boxes: Boxes) -> None:
        image_id = len(self.images) + 1
        height, width = boxes.image_size
        self.images.append(
            {"id": image_id, "file_name": file_name, "width": width, "height": height}
        )
        for name in boxes.all_class_names:
            self.categories.setdefault(name, len(self.categories) + 1)
        for i, (x1, y1, x2, y2) in enumerate(boxes.xyxy.tolist()):
            ann: dict[str, Any] = {
                "id": len(self.annotations) + 1,
                "image_id": image_id,
                "category_id": self.categories[boxes.labels[i]],
                "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                "area": round((x2 - x1) * (y2 - y1), 3),
                "score": round(float(boxes.scores[i]), 6),
                "iscrowd": 0,
            }
            if boxes.track_ids is not None:
                ann["track_id"] = int(boxes.track_ids[i])
            self.annotations.append(ann)

    def document(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "annotations": self.annotations,
            "categories": [{"id": i, "name": n} for n, i in self.categories.items()],
        }
