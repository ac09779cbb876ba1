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
import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from vlm_core.tasks import package_file
from vlm_core.weights.hashing import sha256_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a training folder or one checkpoint folder")
    parser.add_argument("--name", default="cgan32")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    args = parser.parse_args()
    source = args.source
    if (source / "checkpoints.json").is_file():  # a run folder: its best (or last) checkpoint
        pointer = json.loads((source / "checkpoints.json").read_text())
        source = source / "checkpoints" / Path(pointer[args.checkpoint]).name
    state = {k: v for k, v in load_file(str(source / "model.safetensors")).items()
             if k.startswith("g_ema.")}  # fmt: skip
    target = package_file("vlm_art", "weights", args.name)
    target.mkdir(parents=True, exist_ok=True)
    save_file(state, str(target / "model.safetensors"))
    sidecar = json.loads((source / "model.json").read_text())
    sidecar["files"] = {"model.safetensors": sha256_of(target / "model.safetensors")}
    sidecar["shipped_from"] = f"{source.parent.parent.name}/checkpoints/{source.name}"
    (target / "model.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    size = (target / "model.safetensors").stat().st_size / 2**20
    print(f"{target / 'model.safetensors'}: {len(state)} tensors, {size:.2f} MiB")


if __name__ == "__main__":
    main()
