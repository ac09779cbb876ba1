"""The style classifier: a small CNN (four 3x3 convolution stages with batch norm, 128 pooled
features, a linear head) trained only on real procedural samples. It judges which style a
generated image is in and is the feature network (a :class:`vlm_core.gan.FeatureNetwork`) of the
plugin's FID/KID figures, named ``art-style-classifier``. (The core's three-layer
``ConvFeatures`` reached only 0.80 held-out accuracy on these styles.)"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vlm_art.styles import STYLES, render
from vlm_core.gan import to_unit
from vlm_core.tasks import package_file
from vlm_core.weights import ModelRecipe

NAME = "art-style-classifier"


class StyleNet(nn.Module):
    """(N, 3, H, W) images in [0, 1] to 128 features and ``num_classes`` logits."""

    dims = 128

    def __init__(self, num_classes: int = len(STYLES), name: str = NAME) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in (32, 64, 128, 128):
            layers += [nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.ReLU(),
                       nn.Conv2d(c_out, c_out, 3, 2, 1), nn.ReLU()]  # fmt: skip
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(self.dims, num_classes)
        self.num_classes, self.name = num_classes, name

    @property
    def num_features(self) -> int:
        return self.dims

    def features(self, images: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.body(images.float() * 2 - 1)
        return result

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.head(self.features(images))
        return result

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)


def fit(net: StyleNet, images: torch.Tensor, labels: torch.Tensor, *, steps: int, seed: int,
        batch_size: int = 64, lr: float = 2e-3) -> float:  # fmt: skip
    """Train ``net`` on ``images`` ([0, 1]) with random flips (Adam, cross-entropy); returns
    the training accuracy. Leaves the network in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(images), (batch_size,), generator=gen)
        x, y = images[idx], labels[idx]
        if torch.rand((), generator=gen) < 0.5:
            x = x.flip(3)
        loss = F.cross_entropy(net.logits(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        preds = torch.cat([net.logits(b).argmax(1) for b in images.split(256)])
    return float((preds == labels).float().mean())


def folder() -> Path:
    return package_file("vlm_art", "weights", "style-classifier")


def real_set(per_style: int, *, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Procedural images (N, 3, size, size) in [0, 1] and their style labels, rendered in
    memory exactly as :func:`vlm_art.styles.write_dataset` writes them."""
    images, labels = [], []
    for label, style in enumerate(STYLES):
        for i in range(per_style):
            images.append(render(style, size, seed * 1_000_003 + i))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return x, torch.tensor(labels)


def train(per_style: int = 400, *, steps: int = 800, seed: int = 0) -> tuple[StyleNet, float]:
    """Fit the classifier on ``per_style`` real images of each style (data seed 0)."""
    images, labels = real_set(per_style, seed=0)
    torch.manual_seed(seed)
    net = StyleNet()
    return net, fit(net, images, labels, steps=steps, seed=seed)


def card_of(net: StyleNet) -> dict[str, object]:
    """The card :data:`CLASSIFIER` builds the network from."""
    return {
        "architecture": {"name": NAME, "num_classes": net.num_classes},
        "class_names": list(STYLES),
    }


def save(net: StyleNet, out: Path, record: dict[str, object]) -> None:
    """Write ``out/model.safetensors`` and its sidecar ``out/model.json`` (the card, the file's
    sha256 and ``record``: how it was trained and measured)."""
    from safetensors.torch import save_file

    from vlm_core.weights import sha256_of

    out.mkdir(parents=True, exist_ok=True)
    model = out / "model.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(model))
    sidecar = {"name": NAME, "dims": net.dims, "class_names": list(STYLES), **record,
               "card": card_of(net), "files": {model.name: sha256_of(model)}}  # fmt: skip
    (out / "model.json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")


def _style_net(card: Mapping[str, Any]) -> nn.Module:
    return StyleNet(int(card["architecture"]["num_classes"]))


#: The bundled style classifier (not a task's network: its sidecar names no task).
CLASSIFIER = ModelRecipe(
    task="art.generate",
    name=NAME,
    build=_style_net,
    default=lambda: str(folder()),
)


def load(path: Path | None = None, *, fresh: bool = False) -> StyleNet:
    """The bundled classifier (or the one saved in ``path``) through the core's one weights
    path: in eval mode without gradients from the model cache, or with ``fresh`` a network of
    its own (for a trainer that moves it to its device)."""
    from vlm_core.weights import load_model

    loaded = load_model(str(path or ""), CLASSIFIER, fresh=fresh)
    net = cast(StyleNet, loaded.module)  # what CLASSIFIER builds
    return net.eval().requires_grad_(False) if fresh else net


@torch.no_grad()
def predict(net: StyleNet, images: torch.Tensor) -> torch.Tensor:
    """Style indices of generator outputs in [-1, 1] (N, 3, H, W)."""
    return net.logits(to_unit(images)).argmax(dim=1)
