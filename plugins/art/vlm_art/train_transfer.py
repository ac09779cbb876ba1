"""Training `art.style_transfer`'s feed-forward style network through the core trainer
(Johnson et al. 2016): the network (:mod:`vlm_art.stylenet`) restyles random crops of content
photographs, and its loss is the optimisation method's on its output — the relative content
loss at the content level plus ``style_weight`` times the relative Gram style loss at every
level, on the same loss network (:mod:`vlm_art.optimize`; by default VGG-11 with random
weights, seed 0). The style weight is lower than the optimisation's (10 against 1e4): the
optimisation keeps the content because it starts from the photograph and stops after 100
steps, while a network minimises the loss it is given and, at 1e4, gives the content up.

``--data`` is a folder of content images: with ``train/`` and ``val/`` sub-folders those are
the splits, otherwise ``val_fraction`` of the images (seeded) is held out. Training samples are
random square crops (side drawn between ``crop`` and the image's shorter side, resized to
``crop``) with random horizontal flips; validation takes each held-out image's centre square at
``val_size`` and reports ``val_content`` and ``val_style`` beside ``val_loss``.
``python -m vlm_art.content OUT`` writes the photographs the bundled networks were trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from torchmetrics import Metric

from vlm_art import style_images, stylenet
from vlm_art.data import IMAGE_SUFFIXES
from vlm_art.optimize import CONTENT_LEVEL, StyleTransfer, content_loss, gram, style_loss, tile_to
from vlm_art.params import TransferTrainParams
from vlm_art.styles import STYLES
from vlm_art.tensors import to_tensor
from vlm_core.errors import InputError
from vlm_core.tasks import TrainContext
from vlm_core.training import TrainSetup

#: Content images are read with their longer edge at most this many crops (the crops are then
#: taken between 1x and about 4x reduction: the scales a run at 128-512 px meets).
MAX_CROPS_ACROSS = 4
#: Training samples per image in an epoch (an epoch is then a few dozen steps).
SAMPLES_PER_IMAGE = 16


def _read(path: Path, longer: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    return style_images.resized(np.asarray(rgb), min(longer, max(rgb.size)))


def _images_in(folder: Path) -> list[Path]:
    found = (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return sorted(found)


def read_splits(
    data: Path, *, longer: int, val_fraction: float, seed: int, need_train: bool = True
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The training and held-out content images of ``data`` as (H, W, 3) uint8, each with its
    longer edge at most ``longer``. Without ``need_train`` (evaluating) a ``val/`` folder alone
    is all held out (`vlm eval --shift` writes one)."""
    data = Path(data)
    if not data.is_dir():
        raise InputError(f"--data {data} is not a folder of content images")
    if (data / "val").is_dir() and not need_train and not (data / "train").is_dir():
        return [], [_read(p, longer) for p in _images_in(data / "val")]
    if (data / "train").is_dir() and (data / "val").is_dir():
        train, val = _images_in(data / "train"), _images_in(data / "val")
    else:
        files = _images_in(data)
        order = np.random.default_rng(seed).permutation(len(files))
        n_val = max(1, round(len(files) * val_fraction)) if len(files) > 1 else 0
        val = [files[i] for i in sorted(order[:n_val])]
        train = [files[i] for i in sorted(order[n_val:])]
    if not train or not val:
        raise InputError(
            f"{data} holds {len(train)} training and {len(val)} held-out content images; "
            "training needs at least one of each (PNG/JPEG files, or train/ and val/ folders)"
        )
    return [_read(p, longer) for p in train], [_read(p, longer) for p in val]


def _square(rgb: np.ndarray, top: int, left: int, side: int, size: int) -> torch.Tensor:
    from PIL import Image

    crop = Image.fromarray(rgb[top : top + side, left : left + side])
    if side != size:
        crop = crop.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return to_tensor(np.asarray(crop))[0]


def _at_least(rgb: np.ndarray, side: int) -> np.ndarray:
    """``rgb`` enlarged so that its shorter side is at least ``side``."""
    shorter = min(rgb.shape[:2])
    if shorter >= side:
        return rgb
    return style_images.resized(rgb, -(-max(rgb.shape[:2]) * side // shorter))


class ContentCrops(Dataset[torch.Tensor]):
    """Random square crops (3, crop, crop) in [0, 1] of the content images: side uniform
    between ``crop`` and the shorter side, resized to ``crop``, flipped half of the time. The
    draws come from numpy's global generator, which the trainer seeds per sample."""

    def __init__(self, images: Sequence[np.ndarray], crop: int) -> None:
        self.images = [_at_least(rgb, crop) for rgb in images]
        self.crop = crop

    def __len__(self) -> int:
        return len(self.images) * SAMPLES_PER_IMAGE

    def __getitem__(self, index: int) -> torch.Tensor:
        rgb = self.images[index % len(self.images)]
        height, width = rgb.shape[:2]
        side = int(np.random.randint(self.crop, min(height, width) + 1))
        top = int(np.random.randint(0, height - side + 1))
        left = int(np.random.randint(0, width - side + 1))
        x = _square(rgb, top, left, side, self.crop)
        return x.flip(-1) if np.random.rand() < 0.5 else x


class CentreSquares(Dataset[torch.Tensor]):
    """Each held-out image's centre square at ``size`` (3, size, size): the same every time."""

    def __init__(self, images: Sequence[np.ndarray], size: int) -> None:
        self.squares = []
        for rgb in images:
            height, width = rgb.shape[:2]
            side = min(height, width)
            top, left = (height - side) // 2, (width - side) // 2
            self.squares.append(_square(rgb, top, left, side, size))

    def __len__(self) -> int:
        return len(self.squares)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.squares[index]


class PerceptualLoss:
    """The optimisation method's objective on a batch of (content, output) pairs: the relative
    content loss and the relative Gram style loss of each output, per image, on the loss network
    (moved to the batch's device on first use; not part of the trained model)."""

    def __init__(
        self,
        network: StyleTransfer,
        style: torch.Tensor,
        *,
        content_weight: float,
        style_weight: float,
        judge: tuple[nn.Module, int] | None = None,
    ) -> None:
        self.network = network
        self.content_weight, self.style_weight = content_weight, style_weight
        self.judge = judge  # (the bundled style classifier, the style's index) in validation
        with torch.no_grad():
            self.grams = [gram(f) for f in network.features(tile_to(style, network.min_side))]

    def _on(self, device: torch.device) -> None:
        if str(device) != self.network.device:
            self.network.to(device)
            self.grams = [g.to(device) for g in self.grams]

    def losses(self, output: torch.Tensor, content: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N,) content and (N,) style losses of ``output`` against ``content``."""
        self._on(output.device)
        with torch.no_grad():
            target = self.network.features(content)[CONTENT_LEVEL]
        features = self.network.features(output)
        return content_loss(features[CONTENT_LEVEL], target), style_loss(features, self.grams)

    def __call__(self, model: nn.Module, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        output = model(batch)
        c, s = self.losses(output, batch)
        columns = [c, s]
        if self.judge is not None and not model.training:
            net, label = self.judge
            columns.append((judged_styles(net.to(output.device), output) == label).to(c))
        per_image = torch.stack(columns, 1).detach()
        return {
            "loss": self.content_weight * c.mean() + self.style_weight * s.mean(),
            "content": c.mean().detach(),
            "style": s.mean().detach(),
            "preds": per_image,  # what validation's LossMeans averages
            "target": per_image,
        }


def judged_styles(judge: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The bundled style classifier's verdict (style indices of :data:`vlm_art.styles.STYLES`)
    on each image's centre square (N, 3, H, W in [0, 1]) reduced to its 32 px by averaging, as
    it was trained to see styles."""
    side = min(images.shape[-2:])
    top, left = (images.shape[-2] - side) // 2, (images.shape[-1] - side) // 2
    square = images[..., top : top + side, left : left + side].float()
    with torch.no_grad():
        logits: torch.Tensor = judge.logits(nn.functional.adaptive_avg_pool2d(square, 32))
    return logits.argmax(dim=1)


class LossMeans(Metric):
    """The mean content and style losses over the validation split (``update(preds, _)`` with
    (N, 2) per-image losses), logged as ``val_content`` and ``val_style``; with a third column
    (a procedural style's network), the share the style classifier calls that style,
    ``val_style_judged``."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("sums", default=torch.zeros(3, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("judged", default=torch.zeros((), dtype=torch.float64),
                       dist_reduce_fx="sum")  # fmt: skip
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.sums[: preds.shape[1]] += preds.double().sum(0)
        self.count += len(preds)
        if preds.shape[1] > 2:
            self.judged += len(preds)

    def compute(self) -> dict[str, torch.Tensor]:
        means = self.sums / self.count.clamp_min(1)
        values = {"content": means[0].float(), "style": means[1].float()}
        if self.judged > 0:
            values["style_judged"] = (self.sums[2] / self.judged).float()
        return values


def _architecture(params: TransferTrainParams, card: Mapping[str, Any]) -> dict[str, Any]:
    if "architecture" in card:  # evaluating trained weights: their architecture
        return dict(card["architecture"])
    return stylenet.architecture(width=params.width, blocks=params.blocks)


def build(data: Path, params: TransferTrainParams, ctx: TrainContext) -> TrainSetup:
    """The TrainSetup of `vlm train art.style_transfer --data FOLDER --param style=NAME`."""
    style = style_images.choose(params.style)
    style_rgb = style_images.pixels(style, params.style_size)
    train, val = read_splits(data, longer=MAX_CROPS_ACROSS * params.crop,
                             val_fraction=params.val_fraction, seed=ctx.seed,
                             need_train=ctx.purpose != "eval")  # fmt: skip
    network = StyleTransfer(params.backbone, params.backbone_weights, seed=params.backbone_seed)
    judge = None
    if style.builtin and style.name in STYLES:  # the bundled classifier knows these styles
        from vlm_art import classifier

        judge = (classifier.load(fresh=True), STYLES.index(style.name))
    loss = PerceptualLoss(network, to_tensor(style_rgb), content_weight=params.content_weight,
                          style_weight=params.style_weight, judge=judge)  # fmt: skip
    model = stylenet.StyleNet(_architecture(params, ctx.weights_card))
    ctx.logger.info(
        "style network for '%s' (%s, %.2f M parameters): %d training and %d held-out images",
        style.name, style.path or "built-in", sum(p.numel() for p in model.parameters()) / 1e6,
        len(train), len(val),
    )  # fmt: skip
    card = {
        "architecture": model.arch,
        "style": {
            "name": style.name,
            "source": "built-in" if style.builtin else style.path.name,  # type: ignore[union-attr]
            "size": list(style_rgb.shape[1::-1]),
            **({"render_seed": style_images.RENDER_SEED} if style.name in STYLES else {}),
        },
        # the loss network it was trained against, in the run parameters' names: a run that
        # names another one optimises instead (method=auto); and the losses' weights
        "loss_network": {
            "backbone": params.backbone,
            "backbone_weights": params.backbone_weights,
            "seed": params.backbone_seed,
        },
        "loss_weights": {
            "style_weight": params.style_weight,
            "content_weight": params.content_weight,
        },
        "preprocessing": {"range": [0.0, 1.0], "input": "RGB, any size (padded to 4)"},
    }
    return TrainSetup(
        model=model,
        train_data=ContentCrops(train, params.crop),
        val_data=CentreSquares(val, params.val_size),
        loss=loss,
        metrics=LossMeans,
        monitor="val_loss",
        mode="min",
        card=card,
    )
