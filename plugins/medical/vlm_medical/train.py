"""Training and evaluation of `medical.segment` through the core trainer: MONAI data sets,
transforms, DiceCE loss, and Dice / Hausdorff-95 validation on whole volumes."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from vlm_core.params import under_given
from vlm_core.tasks import TrainContext
from vlm_core.training import TrainSetup
from vlm_medical._quiet import quiet_monai
from vlm_medical.data import read_dataset, spatial_dims_of
from vlm_medical.features import card_entry, recorded_layers, segment_layers
from vlm_medical.intensity import normalize
from vlm_medical.networks import SIDES, architecture, build_network, spatial_dims
from vlm_medical.params import SegmentParams, SegmentTrainParams


class VolumeMetric(Metric):
    """Mean over volumes of a MONAI per-volume metric (Dice or HD95) of the foreground labels,
    kept as a sum and a count so that torchrun processes add up exactly."""

    full_state_update = False
    total: torch.Tensor
    count: torch.Tensor

    def __init__(self, kind: str, num_classes: int) -> None:
        super().__init__()
        self.kind, self.num_classes = kind, num_classes
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        from monai.metrics import compute_dice, compute_hausdorff_distance
        from monai.networks.utils import one_hot

        pred_1h = one_hot(preds, self.num_classes)
        target_1h = one_hot(target, self.num_classes)
        if self.kind == "dice":
            values = compute_dice(pred_1h, target_1h, include_background=False, ignore_empty=False)
        else:
            with warnings.catch_warnings():  # MONAI deprecates an argument it passes itself
                warnings.simplefilter("ignore", FutureWarning)
                values = compute_hausdorff_distance(
                    pred_1h, target_1h, include_background=False, percentile=95
                )
        values = values.reshape(values.shape[0], -1).double()
        finite = torch.isfinite(values)  # HD95 is inf/nan when a label is absent from one side
        per_volume = torch.where(finite, values, torch.zeros_like(values)).sum(1) / finite.sum(
            1
        ).clamp(min=1)
        keep = finite.any(1)
        self.total += per_volume[keep].sum().to(self.total.device)
        self.count += keep.sum().to(self.count.device)

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1)


def _one_channel(x: Any, dims: int, label: bool) -> Any:
    """(C, *spatial) with C = 1: a trailing axis of 1 dropped (a (W, H, 1) file is 2D), RGB
    averaged to grey (an image) or its first channel kept (a label)."""
    while x.ndim > dims + 1 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.shape[0] > 1:
        x = x[:1] if label else x[:3].mean(0, keepdims=True)
    return x


def _transforms(params: SegmentTrainParams, train: bool) -> Any:
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        EnsureTyped,
        Lambdad,
        LoadImaged,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        SpatialPadd,
    )

    preset, dims = params.preset, params.spatial_dims
    steps: list[Any] = [
        LoadImaged(keys=["image", "label"], image_only=True),
        EnsureChannelFirstd(keys=["image", "label"]),
        Lambdad(keys="image", func=lambda x: _one_channel(x, dims, label=False)),
        Lambdad(keys="label", func=lambda x: _one_channel(x, dims, label=True)),
        Lambdad(keys="image", func=lambda x: normalize(np.asarray(x), preset)),
        EnsureTyped(keys=["image", "label"], track_meta=False),
        Lambdad(keys="label", func=lambda x: x.long()),
    ]
    if train:
        size = [params.patch] * dims
        steps += [
            SpatialPadd(keys=["image", "label"], spatial_size=size),
            RandCropByPosNegLabeld(
                keys=["image", "label"], label_key="label", spatial_size=size, pos=1, neg=1,
                num_samples=params.samples_per_volume,
            ),
            *(RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=a) for a in range(dims)),
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        ]  # fmt: skip
        if params.augment == "wide":
            steps += _wide_augmentation(dims)
    return Compose(steps)


def _wide_augmentation(dims: int) -> list[Any]:
    """The wide augmentation of a segmentation patch (after the crop): lesions zoomed to
    0.6-1.2 of their size (the label with them), a bias field, gamma, blur, and Gaussian noise
    up to a standard deviation of 0.3."""
    from vlm_medical.augment import wide_augmentation

    return wide_augmentation(label=True, dims=dims, zoom=(0.6, 1.2), smooth=(0.25, 1.0),
                             smooth_prob=0.2, noise_std=0.3, noise_prob=0.5)  # fmt: skip


def build(data: Path, params: SegmentTrainParams, ctx: TrainContext) -> TrainSetup:
    from monai.data import CacheDataset, Dataset, list_data_collate
    from monai.losses import DiceCELoss

    from vlm_medical.segment import window_features, window_logits

    quiet_monai()
    found = read_dataset(data, val_fraction=params.val_fraction, seed=ctx.seed)
    classes = len(found.class_names)
    init = _initial(params, classes) if params.init and ctx.purpose == "train" else None
    divisor, smallest = SIDES[params.network]
    if params.patch % divisor or params.patch < smallest:
        raise ValueError(
            f"patch {params.patch} does not fit {params.network}: it needs a multiple of "
            f"{divisor} of at least {smallest}"
        )
    recorded = ctx.weights_card.get("architecture")
    if ctx.purpose != "train" and isinstance(recorded, dict):  # the network as trained
        arch = dict(recorded)
        params = params.model_copy(update={"spatial_dims": spatial_dims(arch)})
    elif init is not None:  # the network the init weights describe (a pruned UNet's widths)
        arch = dict(init.card["architecture"])
    else:
        arch = architecture(params.network, out_channels=classes, spatial_dims=params.spatial_dims)
    dims = params.spatial_dims
    train_items = found.train if ctx.purpose == "train" else []
    if ctx.purpose in ("train", "fit") and not found.train:
        raise ValueError(f"{data}: no training pairs")
    first = Path((found.train if ctx.purpose != "eval" else found.val)[0]["image"])
    if (found_dims := spatial_dims_of(first)) != dims:
        hint = "; train with -p spatial_dims=2" if found_dims == 2 else ""
        raise ValueError(
            f"{first}: a {found_dims}D image, and spatial_dims={dims} trains a {dims}D "
            f"network on {dims}D data{hint}"
        )
    progress = ctx.rank == 0
    train_set = (
        CacheDataset(
            train_items,
            _transforms(params, True),
            cache_rate=params.cache_rate,
            num_workers=0,
            progress=False,
        )
        if train_items
        else Dataset([], _transforms(params, True))
    )
    val_set = CacheDataset(found.val, _transforms(params, False), cache_rate=params.cache_rate,
                           num_workers=0, progress=progress and False)  # fmt: skip
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    # the network halves each side per level: windows (like patches) are a multiple of that
    roi = [max(smallest, params.roi - params.roi % divisor)] * dims
    # what `vlm run` takes from the card unless told otherwise: the window validation uses
    inference = {"roi": roi[0], "overlap": 0.25, "blend": "gaussian"}
    run_windows = under_given(SegmentParams(), inference)  # a run at its defaults

    def logits_of(model: Any, image: torch.Tensor) -> torch.Tensor:
        if model.training:  # random patches of the patch size
            return model(image)
        # whole validation volumes, of any size: windowed by the run's own function, at the
        # run's defaults for these weights (a volume smaller than the window gets a smaller
        # window there, not zero padding)
        return window_logits(model, image, run_windows)

    def loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss_fn(logits_of(model, batch["image"]), batch["label"])

    def predict(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return logits_of(model, batch["image"]).argmax(dim=1, keepdim=True), batch["label"]

    # the familiarity model: each whole training volume (no crops) through the run's own
    # sliding window at the run's settings for these weights, the rows averaged over windows
    layers = recorded_layers(ctx.weights_card, segment_layers(arch))

    def features(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return window_features(model, layers, batch["image"], run_windows)

    whole = Dataset(found.train, _transforms(params, False)) if ctx.purpose != "eval" else None

    return TrainSetup(
        model=init.module if init is not None else build_network(arch),
        train_data=train_set,
        val_data=val_set,
        loss=loss,
        predict=predict,
        metrics=lambda: {
            "dice": VolumeMetric("dice", classes),
            "hd95": VolumeMetric("hd95", classes),
        },
        monitor="val_dice",
        mode="max",
        collate=list_data_collate,
        features=features,
        fit_data=whole,
        card={
            "architecture": arch,
            "features": card_entry(layers),
            "class_names": list(found.class_names),
            "preprocessing": {
                "intensity": params.preset,
                "channels": 1,
                "axes": "ijk (NIfTI voxel order)" if dims == 3 else "ij (2D image)",
            },
            "inference": inference,
            "notice": "Research use only: not a medical device, not for diagnosis.",
            **(_provenance(init) if init is not None else {}),
        },
    )


def _initial(params: SegmentTrainParams, classes: int) -> Any:
    """The weights ``params.init`` names, loaded to train (the core's ``LoadedModel``, its
    module on the CPU in train mode): built from their card, so a pruned UNet keeps its
    narrower channels. Their network, dimensions and classes must be this run's."""
    from vlm_core.weights import load_model
    from vlm_medical.segment import SEGMENTERS

    loaded = load_model(params.init, SEGMENTERS[params.spatial_dims], fresh=True, param="init")
    arch = loaded.card["architecture"]
    dims, name = spatial_dims(arch), arch.get("name")
    if dims != params.spatial_dims:
        raise ValueError(
            f"init {loaded.path} is a {dims}D network; train it with -p spatial_dims={dims}"
        )
    if name != params.network:
        raise ValueError(f"init {loaded.path} is a {name}; train it with -p network={name}")
    if int(arch.get("out_channels", 0)) != classes:
        raise ValueError(
            f"init {loaded.path} has {arch.get('out_channels')} output classes and the data "
            f"{classes}"
        )
    return loaded


def _provenance(init: Any) -> dict[str, Any]:
    """What the card keeps of the weights training started from: their file and sha256, and
    how they were made smaller (``compression``) when they say so."""
    made = {"init": {"path": str(init.path), "sha256": init.sha256}}
    if "compression" in init.card:
        made["compression"] = init.card["compression"]
    return made
