"""Write the figures of docs/attention-and-explainability.md: ViT attention rollout and
ResNet Grad-CAM on scikit-image's astronaut photograph.

By default the models are randomly initialised (seed 0), because the machine that built the
docs reaches no model hub; the figures then show the methods working, not what a trained
model looks at. With real weights:

    python scripts/make_explain_figures.py --pretrained \\
        --vit vit_small_patch16_224.augreg_in21k_ft_in1k --convnet resnet50.a1_in1k
    python scripts/make_explain_figures.py --vit-weights vit.safetensors --convnet-weights r.pth

Each figure is one PNG: the photograph, the heat map, and the overlay, side by side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image as PILImage
from skimage import data
from torch import nn

from vlm_core.explain import apply_colormap, explain
from vlm_core.export.images import write_image
from vlm_core.types import Image

REPO = Path(__file__).resolve().parents[1]


def load(name: str, pretrained: bool, weights: Path | None) -> nn.Module:
    """A timm model: random (seed 0), from timm's pretrained source, or from a local file."""
    torch.manual_seed(0)
    if weights is not None:  # timm's documented way to point a model at a local file
        overlay = {"file": str(weights)}
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
    return timm.create_model(name, pretrained=pretrained)


def panel(image: Image, heat: np.ndarray, overlay: Image, tile: int) -> np.ndarray:
    """Photograph | heat map | overlay, each resized to ``tile`` x ``tile`` pixels."""
    tiles = [image.to_rgb_uint8(), apply_colormap(heat), overlay.pixels]
    resized = [
        np.asarray(PILImage.fromarray(t).resize((tile, tile), PILImage.Resampling.LANCZOS))
        for t in tiles
    ]
    gap = np.full((tile, 4, 3), 255, np.uint8)
    return np.concatenate([resized[0], gap, resized[1], gap, resized[2]], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vit", default="vit_small_patch16_224", help="timm ViT-family name")
    parser.add_argument("--convnet", default="resnet50", help="timm convnet name")
    parser.add_argument(
        "--pretrained", action="store_true", help="use timm's pretrained weights (hub or cache)"
    )
    parser.add_argument("--vit-weights", type=Path, help="local weights file for --vit")
    parser.add_argument("--convnet-weights", type=Path, help="local weights file for --convnet")
    parser.add_argument("--head-fusion", default="mean", choices=["mean", "max", "min"])
    parser.add_argument("--discard-ratio", type=float, default=0.0)
    parser.add_argument("--tile", type=int, default=192, help="pixels per panel tile")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = parser.parse_args()

    torch.set_num_threads(min(2, torch.get_num_threads()))
    image = Image(pixels=data.astronaut(), name="astronaut")
    trained = args.pretrained or args.vit_weights or args.convnet_weights
    jobs = [
        ("rollout", args.vit, args.vit_weights),
        ("gradcam", args.convnet, args.convnet_weights),
    ]
    for method, name, weights in jobs:
        model = load(name, args.pretrained, weights)
        options = (
            {"head_fusion": args.head_fusion, "discard_ratio": args.discard_ratio}
            if method == "rollout"
            else {}
        )
        result = explain(model, image, method=method, **options)  # type: ignore[arg-type]
        arch = name.split(".")[0]
        path = args.out / f"astronaut-{method}-{arch}.png"
        write_image(panel(image, result.heat, result.overlay, args.tile), path)
        print(
            f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: "
            f"{method} of {name} ({'trained' if trained else 'random init, seed 0'}), "
            f"class {result.class_index} (logit {result.score:.3f}), "
            f"{len(result.layers)} layer(s) from {result.layers[0]}, "
            f"{path.stat().st_size / 1024:.0f} KiB"
        )


if __name__ == "__main__":
    main()
