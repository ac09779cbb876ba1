"""Training `art.generate` through the core trainer: a (class-conditional) GAN from
:func:`vlm_core.gan.gan_setup`, validated by FID, KID and style accuracy of its EMA generator
against the held-out split, measured with a small CNN fitted to the training split."""

from __future__ import annotations

import json
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
from vlm_art.data import ImageFolder, read_folder
from vlm_art.params import GenerateTrainParams
from vlm_art.shifts import SAMPLING_FILE
from vlm_art.styles import STYLES
from vlm_core.errors import InputError
from vlm_core.gan import ConvFeatures, SampleGrid, build_gan, gan_setup, to_unit
from vlm_core.gan.metrics import fid_from_features, kid_from_features
from vlm_core.gan.sampling import truncated_latents
from vlm_core.tasks import TrainContext
from vlm_core.training import TrainSetup

log = logging.getLogger(__name__)

DIFFAUGMENT = ("color", "translation", "cutout")


class GANQuality(Metric):
    """FID and KID of generated against real images in ``network``'s feature space, and (for a
    classifier network and labelled data) the share of generated images it puts in their
    requested class: over all (``style_acc``), per class (``style_acc_<name>`` for each of
    ``class_names``) and their mean (``style_acc_mean``). ``update(fake, (real, labels))``
    with images in [0, 1]."""

    full_state_update = False

    def __init__(self, network: Any, *, labelled: bool, class_names: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.network, self.labelled, self.class_names = network, labelled, tuple(class_names)
        classes = max(1, len(self.class_names))
        self.add_state("real", default=[], dist_reduce_fx="cat")
        self.add_state("fake", default=[], dist_reduce_fx="cat")
        self.add_state("hits", default=torch.zeros(classes, dtype=torch.float64),
                       dist_reduce_fx="sum")  # fmt: skip
        self.add_state("count", default=torch.zeros(classes, dtype=torch.float64),
                       dist_reduce_fx="sum")  # fmt: skip

    def update(self, fake: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor]) -> None:
        real, labels = target
        net = self.network.to(fake.device).eval()
        with torch.no_grad():
            self.real.append(net.features(real.float()).double())
            fake_features = net.features(fake.float())
            self.fake.append(fake_features.double())
            if self.labelled and net.head is not None:
                preds = net.head(fake_features).argmax(dim=1)
                where = labels.long().clamp(max=len(self.hits) - 1)
                self.hits.index_add_(0, where, (preds == labels).double())
                self.count.index_add_(0, where, torch.ones_like(where, dtype=torch.float64))

    def compute(self) -> dict[str, torch.Tensor]:
        def cat(x: Any) -> torch.Tensor:
            return torch.cat(x) if isinstance(x, list) else x

        real, fake = cat(self.real).cpu(), cat(self.fake).cpu()
        kid_mean, _ = kid_from_features(real, fake, subsets=50, subset_size=min(1000, len(real)))
        values = {
            "fid": torch.tensor(fid_from_features(real, fake)),
            "kid": torch.tensor(kid_mean),
        }
        if self.labelled and self.count.sum() > 0:
            values["style_acc"] = (self.hits.sum() / self.count.sum()).float()
            if len(self.class_names) > 1:
                seen = self.count > 0
                rates = self.hits[seen] / self.count[seen]
                for name, rate in zip(
                    [n for n, s in zip(self.class_names, seen.tolist(), strict=True) if s],
                    rates, strict=True,
                ):  # fmt: skip
                    values[f"style_acc_{name}"] = rate.float()
                values["style_acc_mean"] = rates.mean().float()
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


def _procedural(class_names: tuple[str, ...]) -> bool:
    return len(class_names) > 1 and set(class_names) <= set(STYLES)


def _read(root: Path, size: int, params: GenerateTrainParams) -> ImageFolder:
    """``root`` read with its styles (sub-folders) when the GAN is conditional, or when they
    are procedural styles the bundled classifier can judge an unconditional GAN's FID with
    (the GAN ignores them); otherwise as one unlabelled set."""
    folder = read_folder(root, size, labelled=True)
    if params.conditional or not folder.class_names:
        return folder
    if params.feature_network != "fit" and _procedural(folder.class_names):
        return folder
    return read_folder(root, size, labelled=False)


def _splits(
    data: Path, size: int, params: GenerateTrainParams, ctx: TrainContext
) -> tuple[ImageFolder, np.ndarray, np.ndarray]:
    """The images, and the indices of the training and validation split: ``data/train`` and
    ``data/val`` when ``data`` has a ``val/`` folder (and a ``train/`` one, or it is
    evaluated: `vlm eval --shift` writes ``val/`` only, every image measured); otherwise
    ``val_fraction`` of the images, drawn with the seed."""
    data = Path(data)
    val_dir, train_dir = data / "val", data / "train"
    if val_dir.is_dir() and (train_dir.is_dir() or ctx.purpose != "train"):
        val = _read(val_dir, size, params)
        if not train_dir.is_dir():
            return val, np.arange(0), np.arange(len(val.images))
        train = _read(train_dir, size, params)
        if train.class_names != val.class_names:
            raise InputError(
                f"{data}: train/ has styles {', '.join(train.class_names) or 'none'} but val/ "
                f"has {', '.join(val.class_names) or 'none'}"
            )
        both = ImageFolder(np.concatenate([train.images, val.images]),
                           np.concatenate([train.labels, val.labels]), val.class_names)  # fmt: skip
        n_train = len(train.images)
        return both, np.arange(n_train), np.arange(n_train, len(both.images))
    folder = _read(data, size, params)
    n = len(folder.images)
    if n < 4:
        raise InputError(f"{data} holds {n} images; training needs at least 4")
    order = np.random.default_rng(ctx.seed).permutation(n)
    n_val = max(2, round(n * params.val_fraction))
    return folder, order[n_val:], order[:n_val]


def sampling_of(data: Path, seed: int) -> tuple[int, float | None]:
    """How validation draws its generated images: ``(seed, truncation)`` from the folder's
    ``sampling.json`` (written by `vlm eval art.generate --shift`), else the run's seed and no
    truncation (`vlm run art.generate`'s default)."""
    path = Path(data) / SAMPLING_FILE
    if not path.is_file():
        return seed, None
    found = json.loads(path.read_text())
    truncation = found.get("truncation")
    return int(found.get("seed", seed)), None if truncation is None else float(truncation)


def validation_latents(
    labels: torch.Tensor, dim: int, *, seed: int, truncation: float | None
) -> torch.Tensor:
    """The latent of each validation image's generated counterpart: the ``j``-th image of class
    ``k`` gets latent ``j`` of ``truncated_latents(n_k, seed=seed + k)`` — the latents of
    `vlm run art.generate -p styles=<class k> -p count=n_k -p seed=<seed + k> -p
    truncation=...`, so a run at those parameters makes exactly the images judged here."""
    z = torch.empty(len(labels), dim)
    for k in labels.unique().tolist():
        where = (labels == k).nonzero().flatten()
        z[where] = truncated_latents(len(where), dim, truncation=truncation, seed=seed + int(k))
    return z


def _start_from(gan: Any, init: str, class_names: tuple[str, ...]) -> None:
    """Load the generator of the weights ``init`` names into ``gan``'s G and EMA G (a
    fine-tune: the shipped weights hold only the EMA generator, so D starts new). Their
    architecture and styles must be this run's."""
    from vlm_art.generate import GENERATOR
    from vlm_core.weights import load_into, load_model

    loaded = load_model(init, GENERATOR, fresh=True, param="init")
    theirs = dict(loaded.card.get("architecture") or {})
    ours = gan.arch.to_dict()
    differ = sorted(k for k in ours if k in theirs and theirs[k] != ours[k])
    if differ:
        raise InputError(
            f"init {loaded.path} differs from this run in {', '.join(differ)}: "
            + ", ".join(f"{k} {theirs[k]} (run: {ours[k]})" for k in differ)
        )
    names = tuple(loaded.card.get("class_names") or ())
    if names and names != tuple(class_names):
        raise InputError(f"init {loaded.path} has styles {names}; the data {class_names}")
    state = loaded.module.generator.state_dict()
    for name in ("g", "g_ema"):  # the core's strict load: a mismatch names the weights
        load_into(gan[name], state, plugin="art", source=loaded.path)


def build(data: Path, params: GenerateTrainParams, ctx: TrainContext) -> TrainSetup:
    """The TrainSetup of `vlm train art.generate --data FOLDER` (sub-folders: styles)."""
    size = _power_of_two(params.image_size)
    folder, train_idx, val_idx = _splits(data, size, params, ctx)
    if ctx.purpose == "train" and len(train_idx) < 2:
        raise InputError(f"{data} holds {len(train_idx)} training images; training needs 2")
    classes = len(folder.class_names)
    images = torch.from_numpy(folder.images)
    labels = torch.from_numpy(folder.labels)
    train_set = TensorDataset(images[train_idx], labels[train_idx])

    network: Any
    procedural = _procedural(folder.class_names)
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
        if len(train_idx) == 0:
            raise InputError(f"{data} has no train/ images to fit the feature network on")
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
        "num_classes": classes if params.conditional and classes > 1 else 0,
        "width": params.width,
        "ema": True,
        "aux_classes": params.aux_weight > 0 and params.conditional and classes > 1,
    }
    gan = build_gan(arch)
    if params.init and ctx.purpose == "train":
        _start_from(gan, params.init, folder.class_names)
        ctx.logger.info("generator started from %s (D new)", params.init)
    cond = gan.num_classes > 0
    setup = gan_setup(
        gan,
        train_set,
        loss=params.loss,
        r1_gamma=params.r1_gamma,
        n_critic=params.n_critic,
        d_lr_ratio=params.d_lr_ratio,
        aux_weight=params.aux_weight if gan.num_classes > 1 else 0.0,
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

    seed, truncation = sampling_of(data, ctx.seed)
    val_labels = labels[val_idx]
    z_val = validation_latents(val_labels, gan.latent_dim, seed=seed, truncation=truncation)
    val_set = TensorDataset(images[val_idx], val_labels, z_val)

    def predict(model: Any, batch: Any) -> tuple[torch.Tensor, Any]:
        real, y, z = batch[0], batch[1], batch[2]
        if gan.ema_stats_stale:  # the EMA generator's own batch-norm statistics
            gan.refresh_ema_stats()
        fake = gan.generator(z.to(real.device), y if cond else None)
        return to_unit(fake), (to_unit(real), y)

    # sample grids at fixed latents, one run of rows per style: OUT/samples/step-NNNNNN.png
    if ctx.out is not None:
        setup.callbacks = (*setup.callbacks, SampleGrid(gan, ctx.out, n=64, seed=0))
    setup.val_data = val_set
    setup.predict = predict
    setup.metrics = lambda: GANQuality(network, labelled=cond, class_names=folder.class_names)
    setup.monitor, setup.mode = "val_fid", "min"
    return setup
