"""Training `art.generate` through the core trainer: a (class-conditional) GAN from
:func:`vlm_core.gan.gan_setup`, validated by FID, KID and style accuracy of its EMA generator
against the held-out split, measured with a small CNN fitted to the training split."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset
from torchmetrics import Metric

from vlm_art import classifier
from vlm_art.classifier import StyleNet
from vlm_art.classifier import fit as fit_style_net
from vlm_art.data import read_folder
from vlm_art.params import GenerateTrainParams
from vlm_art.styles import STYLES
from vlm_core.errors import InputError
from vlm_core.gan import ConvFeatures, SampleGrid, build_gan, gan_setup, to_unit
from vlm_core.gan.metrics import fid_from_features, kid_from_features
from vlm_core.tasks import TrainContext
from vlm_core.training import TrainSetup

log = logging.getLogger(__name__)

DIFFAUGMENT = ("color", "translation", "cutout")


class GANQuality(Metric):
    """FID and KID of generated against real images in ``network``'s feature space, and (for a
    classifier network and labelled data) the share of generated images it puts in their
    requested class. ``update(fake, (real, labels))`` with images in [0, 1]."""

    full_state_update = False

    def __init__(self, network: Any, *, labelled: bool) -> None:
        super().__init__()
        self.network, self.labelled = network, labelled
        self.add_state("real", default=[], dist_reduce_fx="cat")
        self.add_state("fake", default=[], dist_reduce_fx="cat")
        self.add_state("hits", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, fake: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor]) -> None:
        real, labels = target
        net = self.network.to(fake.device).eval()
        with torch.no_grad():
            self.real.append(net.features(real.float()).double())
            fake_features = net.features(fake.float())
            self.fake.append(fake_features.double())
            if self.labelled and net.head is not None:
                preds = net.head(fake_features).argmax(dim=1)
                self.hits += (preds == labels).sum().double()
                self.count += len(labels)

    def compute(self) -> dict[str, torch.Tensor]:
        def cat(x: Any) -> torch.Tensor:
            return torch.cat(x) if isinstance(x, list) else x

        real, fake = cat(self.real).cpu(), cat(self.fake).cpu()
        kid_mean, _ = kid_from_features(real, fake, subsets=50, subset_size=min(1000, len(real)))
        values = {
            "fid": torch.tensor(fid_from_features(real, fake)),
            "kid": torch.tensor(kid_mean),
        }
        if self.labelled and self.count > 0:
            values["style_acc"] = (self.hits / self.count).float()
        return values


class _InFolderOrder(nn.Module):
    """The bundled style classifier with its logits in the data folder's class order (sorted
    sub-folder names) instead of ``STYLES`` order."""

    def __init__(self, net: StyleNet, class_names: tuple[str, ...]) -> None:
        super().__init__()
        self.net, self.name = net, net.name
        self.register_buffer("order", torch.tensor([STYLES.index(c) for c in class_names]))

    @property
    def num_features(self) -> int:
        return self.net.num_features

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(images)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        order: torch.Tensor = self.order  # type: ignore[assignment]
        return self.net.head(features)[:, order]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)


def _power_of_two(side: int) -> int:
    if side & (side - 1):
        raise InputError(f"image_size must be a power of two (16, 32, 64, 128), got {side}")
    return side


def build(data: Path, params: GenerateTrainParams, ctx: TrainContext) -> TrainSetup:
    """The TrainSetup of `vlm train art.generate --data FOLDER` (sub-folders: styles)."""
    size = _power_of_two(params.image_size)
    folder = read_folder(data, size, labelled=params.conditional)
    n = len(folder.images)
    if n < 4:
        raise InputError(f"{data} holds {n} images; training needs at least 4")
    classes = len(folder.class_names)
    order = np.random.default_rng(ctx.seed).permutation(n)
    n_val = max(2, round(n * params.val_fraction))
    val_idx, train_idx = order[:n_val], order[n_val:]
    images = torch.from_numpy(folder.images)
    labels = torch.from_numpy(folder.labels)
    train_set = TensorDataset(images[train_idx], labels[train_idx])
    val_set = TensorDataset(images[val_idx], labels[val_idx])

    network: Any
    procedural = classes > 1 and set(folder.class_names) <= set(STYLES)
    if params.feature_network == "bundled" or (params.feature_network == "auto" and procedural):
        if not procedural:
            found = ", ".join(folder.class_names) or "none"
            raise InputError(
                "feature_network=bundled judges the procedural styles "
                f"({', '.join(STYLES)}); {data} has classes {found}"
            )
        network = _InFolderOrder(classifier.load(fresh=True), folder.class_names)
        ctx.logger.info("feature network: the bundled %s", classifier.NAME)
    elif classes > 1 and params.classifier_steps > 0:
        # the plugin's style CNN, fitted to the training split: FID/KID features and the judge
        # of val_style_acc (the core's three-layer ConvFeatures separates these styles worse)
        torch.manual_seed(ctx.seed)
        network = StyleNet(classes, name=f"style CNN of {classes} classes "
                                         f"({params.classifier_steps} steps)")  # fmt: skip
        accuracy = fit_style_net(network, to_unit(images[train_idx]), labels[train_idx],
                                 steps=params.classifier_steps, seed=ctx.seed)  # fmt: skip
        ctx.logger.info("feature network %s: training accuracy %.3f", network.name, accuracy)
    else:
        network = ConvFeatures(3, 64, num_classes=max(classes, 0), seed=ctx.seed)
        network.name = f"conv-64d (seed {ctx.seed}, untrained)"
    network.requires_grad_(False).eval()

    arch = {
        "family": params.family,
        "image_size": size,
        "channels": 3,
        "latent_dim": params.latent_dim,
        "num_classes": classes if classes > 1 else 0,
        "width": params.width,
        "ema": True,
        "aux_classes": params.aux_weight > 0 and classes > 1,
    }
    gan = build_gan(arch)
    cond = gan.num_classes > 0
    setup = gan_setup(
        gan,
        train_set,
        loss=params.loss,
        r1_gamma=params.r1_gamma,
        n_critic=params.n_critic,
        d_lr_ratio=params.d_lr_ratio,
        aux_weight=params.aux_weight if classes > 1 else 0.0,
        diffaugment=DIFFAUGMENT if params.diffaugment else None,
        ema_decay=params.ema_decay,
        betas=(0.0, 0.99) if params.loss == "hinge" else (0.5, 0.999),
        conditional=cond,
        card={
            "class_names": list(folder.class_names) if cond else [],
            "feature_network": network.name,
            "preprocessing": {"image_size": size, "range": [-1.0, 1.0]},
        },
    )

    def predict(model: Any, batch: Any) -> tuple[torch.Tensor, Any]:
        real, y = batch[0], batch[1]
        if gan.ema_stats_stale:  # the EMA generator's own batch-norm statistics
            gan.refresh_ema_stats()
        generator = gan.generator
        z = torch.randn(len(real), gan.latent_dim, device=real.device)
        fake = generator(z, y if cond else None)
        return to_unit(fake), (to_unit(real), y)

    # sample grids at fixed latents, one run of rows per style: OUT/samples/step-NNNNNN.png
    if ctx.out is not None:
        setup.callbacks = (*setup.callbacks, SampleGrid(gan, ctx.out, n=64, seed=0))
    setup.val_data = val_set
    setup.predict = predict
    setup.metrics = lambda: GANQuality(network, labelled=cond)
    setup.monitor, setup.mode = "val_fid", "min"
    return setup
