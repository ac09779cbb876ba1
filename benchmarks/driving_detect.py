"""`driving.detect`'s detector against the same torchvision model called directly, in one run.

    python benchmarks/driving_detect.py --device cuda --out results/   # results/driving_detect.json

For each of torchvision's fasterrcnn_resnet50_fpn_v2 and fcos_resnet50_fpn (random COCO-shaped
weights: the machine is offline, and speed does not depend on the values) at 720p, fp32, batch
8 (the protocol of shared/anchors: 88 and 155 img/s on one H200):

- ``raw``: ``model(list_of_float_tensors_on_the_device)`` under ``torch.inference_mode``;
- ``plugin``: the plugin's :class:`~vlm_driving.detector.Detector` loaded from the same
  weights saved as a torchvision ``.pth`` (its classifier cut to the 8 driving classes), called
  on uint8 (H, W, 3) frames in host memory as a video reaches it — the copy to the device and
  the conversion to float included;
- ``fast``: the plugin with bf16 autocast and channels-last — its fast path; with
  ``--compile`` also ``compiled`` (the same under torch.compile; a failure is recorded).

The ratio ``plugin / raw`` is the acceptance figure (≥ 1.0).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "driving"))

MODELS = {"fasterrcnn_resnet50_fpn_v2": "fasterrcnn", "fcos_resnet50_fpn": "fcos"}


def _timed(call, batches: int, sync, warmup: int = 2) -> float:  # type: ignore[no-untyped-def]
    for _ in range(warmup):
        call()
    sync()
    t0 = time.perf_counter()
    for _ in range(batches):
        call()
    sync()
    return time.perf_counter() - t0


def bench(
    name: str,
    device: str,
    size: tuple[int, int],
    batch: int,
    batches: int,
    compile: bool,
    fast: bool = True,
    warmup: int = 2,
) -> dict[str, object]:
    """One detector raw, through the plugin, and (``fast``) through its bf16 fast path."""
    import numpy as np
    import torch
    from torchvision.models import detection
    from vlm_driving.detector import load_detector

    torch.manual_seed(0)
    raw = getattr(detection, name)(weights=None, weights_backbone=None, num_classes=91)
    raw.eval().to(device)
    h, w = size
    frames = [
        np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8) for i in range(batch)
    ]
    tensors = [torch.from_numpy(f).to(device).permute(2, 0, 1).float().div(255) for f in frames]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def call_raw() -> None:
        with torch.inference_mode():
            raw(tensors)

    row: dict[str, object] = {"model": name, "size": f"{w}x{h}", "batch": batch, "batches": batches}
    seconds = _timed(call_raw, batches, sync, warmup)
    row["raw_img_s"] = round(batch * batches / seconds, 2)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}_coco.pth"
        torch.save({k: v.cpu() for k, v in raw.state_dict().items()}, path)
        raw.cpu()  # free the device for the plugin's copy
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        runs = [("plugin", "float32", False)]
        if fast:
            runs.append(("fast", "bfloat16", False))
        if compile:
            runs.append(("compiled", "bfloat16", True))
        for label, dtype, compiled in runs:
            row[f"{label}_policy"] = {"dtype": dtype, "channels_last": True, "compile": compiled}
            try:
                detector = load_detector(
                    coco_model=name,
                    coco_weights=str(path),
                    device=device,
                    dtype=dtype,
                    compile=compiled,
                )
                seconds = _timed(lambda d=detector: d(frames), batches, sync, warmup)
            except Exception as exc:  # a compile failure must not hide the other figures
                row[f"{label}_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                continue
            row[f"{label}_img_s"] = round(batch * batches / seconds, 2)
    for label in ("plugin", "fast", "compiled"):
        if f"{label}_img_s" in row:
            ratio = float(row[f"{label}_img_s"]) / float(row["raw_img_s"])  # type: ignore[arg-type]
            row[f"{label}_over_raw"] = round(ratio, 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT of the frames")
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast path")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    rows = []
    for name in args.models.split(","):
        row = bench(name, args.device, (h, w), args.batch, args.batches, args.compile)
        print(json.dumps(row), flush=True)
        rows.append(row)
    import torch

    report = {
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "driving_detect.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
