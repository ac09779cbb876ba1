"""The whole benchmark suite on one GPU (target: under 4 minutes), JSON into a folder.

    python benchmarks/gpu_suite.py --out results/     # writes results/gpu_suite.json

Runs `vlm bench all` on CUDA: backbone engine vs raw timm (vit_base_patch16_224 and resnet50,
bf16, batch 256), the fast path (bf16 weights, channels-last, torch.compile with CUDA graphs)
vs raw eager timm with MFU against the measured matmul ceiling, the streaming executor over 500
and 2,000 JPEGs (GPU decoding) vs model-only throughput, the model cache cycling 5 models,
and attention against nn.MultiheadAttention.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for gpu_suite.json.")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--suites", default="backbone,fastpath,executor,cache,attention,train,gan,clip"
    )
    args = parser.parse_args()

    import timm
    import torch

    from vlm_core.bench.suite import run_suites

    t0 = time.perf_counter()
    rows = run_suites(args.suites.split(","), device=args.device, quick=args.quick)
    wall = time.perf_counter() - t0
    report = {
        "wall_s": round(wall, 1),
        "under_4_minutes": wall < 240,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_suite.json").write_text(json.dumps(report, indent=2, default=str))
    for row in rows:
        print(json.dumps(row, default=str))
    print(f"suite wall time {wall:.1f} s ({'under' if wall < 240 else 'OVER'} 4 minutes)")


if __name__ == "__main__":
    main()
