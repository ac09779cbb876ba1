"""Copy a `vlm train art.generate` checkpoint's EMA generator into the package
(vlm_art/weights/NAME/): only the ``g_ema.*`` tensors are kept (the discriminator and the raw
generator are not needed to sample), and the sidecar's sha256 is updated.

    .venv/bin/python plugins/art/benchmarks/ship_weights.py RUN_OR_CHECKPOINT [--name cgan32]
        [--checkpoint best|last]

NAME is ``cgan32`` for the default weights of `art.generate` and ``dcgan32-baseline`` for the
DCGAN the tests and `benchmarks/evaluate.py` compare them with.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlm_core.tasks import package_file
from vlm_core.weights.trained import ship_trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a training folder or one checkpoint folder")
    parser.add_argument("--name", default="cgan32")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    args = parser.parse_args()
    target = package_file("vlm_art", "weights", args.name)
    model, tensors = ship_trained(
        args.source,
        target,
        which=args.checkpoint,
        keep=lambda name: name.startswith("g_ema."),
        plugin="art",
    )
    print(f"{model}: {tensors} tensors, {model.stat().st_size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
