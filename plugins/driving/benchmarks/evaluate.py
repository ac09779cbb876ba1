"""The bundled (or given) detector on what it never saw, as JSON:

- COCO mAP on 200 held-out generated scenes (seeds 900000...), by torchmetrics and by
  pycocotools' COCOeval on the exported COCO JSON, with their largest difference;
- a 10-second 720p generated drive through `driving.detect` (MP4 in, tracks, annotated MP4
  and JSONL out): ID switches, MOTA, IDF1 against the ground-truth track ids, frames per
  second;
- scikit-image's motorcycle_left photograph: what the detector reports on a real street.

    .venv/bin/python plugins/driving/benchmarks/evaluate.py --out /tmp/drv/eval [--weights W]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for evaluate.json")
    parser.add_argument("--weights", default="", help="detector weights (default: bundled)")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--video-seconds", type=float, default=10.0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import numpy as np
    from PIL import Image
    from skimage import data
    from vlm_driving.detector import DetectSettings, load_detector
    from vlm_driving.heldout import evaluate_drive, evaluate_scenes

    from vlm_core.types import Image as CoreImage

    detector = load_detector(args.weights, device=args.device)
    report: dict[str, object] = {"weights": detector.name, "sha256": detector.sha256}
    report["scenes"] = evaluate_scenes(detector, count=args.scenes)
    print(json.dumps(report["scenes"]), flush=True)
    report["drive"] = evaluate_drive(
        args.out / "drive", seconds=args.video_seconds, weights=args.weights, device=args.device
    )
    print(json.dumps(report["drive"]["mot"]), json.dumps(report["drive"]["summary"]), flush=True)
    photo = np.asarray(data.stereo_motorcycle()[0])
    for threshold in (0.4, 0.2):
        found = detector([CoreImage(pixels=photo).to_rgb_uint8()], DetectSettings(score=threshold))[
            0
        ]
        report[f"motorcycle_left@{threshold}"] = [
            {
                "label": detector.class_names[int(c)],
                "score": round(float(s), 3),
                "xyxy": [round(float(v), 1) for v in box],
            }
            for box, s, c in zip(found.xyxy, found.scores, found.labels, strict=True)
        ]
    args.out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo).save(args.out / "motorcycle_left.png")
    (args.out / "evaluate.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k.startswith("motorcycle")}))


if __name__ == "__main__":
    main()
