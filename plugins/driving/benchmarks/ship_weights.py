"""Copy a `vlm train driving.detect` checkpoint into the package
(vlm_driving/weights/detector/) as float32 safetensors with its sidecar, its sha256 updated.

    .venv/bin/python plugins/driving/benchmarks/ship_weights.py RUN_OR_CHECKPOINT \
        [--checkpoint best|last]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlm_core.tasks import package_file
from vlm_core.weights.trained import ship_trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a training folder or one checkpoint folder")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    args = parser.parse_args()
    target = package_file("vlm_driving", "weights", "detector")
    model, tensors = ship_trained(args.source, target, which=args.checkpoint, plugin="driving")
    print(f"{model}: {tensors} tensors, {model.stat().st_size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
