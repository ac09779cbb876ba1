"""medical.segment's sliding window against raw MONAI, same network, volume and settings.

    python benchmarks/medical_segment.py --out results/          # GPU: 320x320x160, roi 96
    python benchmarks/medical_segment.py --device cpu --quick     # a small volume on the CPU

Writes medical_segment.json into --out (or prints it). The H200 anchor for raw MONAI (UNet 3D,
96^3 windows, sw-batch 8, bf16, 320x320x160) is 372 Mvoxel/s (shared/anchors).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="96x96x64 volume, roi 64, 2 rounds")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from vlm_medical.bench import bench_sliding_window

    if args.quick:
        row = bench_sliding_window(device=args.device, shape=(96, 96, 64), roi=64, sw_batch=2,
                                   rounds=2, channels=(8, 16, 32, 64))  # fmt: skip
    else:
        row = bench_sliding_window(device=args.device)
    text = json.dumps(row, indent=2)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "medical_segment.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
