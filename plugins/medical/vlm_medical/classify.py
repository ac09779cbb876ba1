"""`medical.classify`: a MONAI DenseNet121 classifies volumes (and 2D images), and 3D Grad-CAM
shows where its evidence is; training and evaluation through the core trainer.

Pre-processing is the same in training and inference (:func:`prepare`): intensity scaling
with a :mod:`vlm_medical.intensity` preset on the input's own grid, then a resize of the whole
volume to the network's cube (:func:`resize_cube`: area averaging along the axes that shrink,
trilinear along those that grow); inference runs the two steps on the device and keeps the
scaled volume for the overlay. A 2D image is a one-slice volume, as in ``medical.segment``: its
columns are i, its rows j, and the resize repeats the slice along k, so one 3D network serves
both; its Grad-CAM map is brought back onto the image.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlm_core.errors import InputError, UsageError, did_you_mean
from vlm_core.familiarity import FeatureTap, Ood
from vlm_core.kinds import Kind
from vlm_core.tasks import RunContext, TrainContext, package_file
from vlm_core.training import TrainSetup
from vlm_core.types import Caption, Image, Metrics, Volume
from vlm_core.weights import LoadedModel as TrainedModel
from vlm_core.weights import ModelRecipe
from vlm_core.weights import load_model as load_trained_model
from vlm_medical._quiet import quiet_monai
from vlm_medical.classify_params import (
    DEFAULT_WEIGHTS,
    NOTICE,
    ClassifyParams,
    ClassifyTrainParams,
)
from vlm_medical.features import card_entry, classify_layers, recorded_layers
from vlm_medical.intensity import normalize_tensor
from vlm_medical.segment import _as_volume

TASK = "medical.classify"
#: Files a class folder or a manifest may list: NIfTI volumes and 2D images.
SUFFIXES = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
MANIFESTS = ("manifest.csv", "manifest.json")

#: MONAI ``DenseNet`` arguments by network name; DenseNet121's own, and a slim one.
NETWORKS: dict[str, dict[str, Any]] = {
    "densenet121": {"init_features": 64, "growth_rate": 32, "block_config": [6, 12, 24, 16]},
    "densenet121-slim": {"init_features": 32, "growth_rate": 12, "block_config": [2, 4, 6, 4]},
}


# --- network ------------------------------------------------------------------------------------


def architecture(
    network: str,
    num_classes: int,
    dropout: float = 0.0,
    arguments: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The card's ``architecture``: what :func:`build_network` rebuilds the model from;
    ``arguments``: the DenseNet's, for a network not in :data:`NETWORKS` (a student's)."""
    return {
        "name": "densenet",
        "variant": network,
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": num_classes,
        **(NETWORKS[network] if arguments is None else arguments),
        "dropout_prob": dropout,
    }


def build_network(arch: dict[str, Any]) -> nn.Module:
    """MONAI's ``DenseNet`` as ``arch`` describes it (see :func:`architecture`)."""
    from monai.networks.nets import DenseNet

    if arch.get("name") != "densenet":
        raise InputError(
            f"the checkpoint's architecture is '{arch.get('name')}', not a DenseNet; use "
            f"weights trained by `vlm train {TASK}`"
        )
    kwargs = {k: v for k, v in arch.items() if k not in ("name", "variant")}
    return DenseNet(**kwargs)


# --- pre-processing -----------------------------------------------------------------------------


def resize_cube(data: torch.Tensor, size: int) -> torch.Tensor:
    """(1, i, j, k) → (1, size, size, size): area averaging along the axes that shrink (no
    aliasing), then trilinear interpolation along those that grow."""
    x = data[None].float()
    i, j, k = (min(int(n), size) for n in x.shape[2:])
    shrunk = (i, j, k)
    if shrunk != tuple(x.shape[2:]):
        x = F.adaptive_avg_pool3d(x, shrunk)
    if shrunk != (size,) * 3:
        x = F.interpolate(x, size=(size,) * 3, mode="trilinear", align_corners=False)
    return x[0]


def prepare(array: torch.Tensor, preset: str, size: int) -> torch.Tensor:
    """The network's input (1, size, size, size) for a volume (i, j, k), on its device."""
    return resize_cube(normalize_tensor(array.float(), preset)[None], size)


def read_item(path: str) -> np.ndarray:
    """A training file as a float32 (i, j, k) array, through the core's safe loader."""
    from vlm_core.io import load_input, probe_input

    item = load_input(probe_input(Path(path), (Kind.VOLUME, Kind.IMAGE)))
    return _as_volume(item)[0]


# --- data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassData:
    """Labelled files (``{"image": path, "label": index}``) and the class names."""

    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    class_names: tuple[str, ...]


def _files(folder: Path) -> list[Path]:
    return [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(SUFFIXES)
    ]


def _class_folders(root: Path) -> dict[str, list[Path]]:
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    found = {p.name: _files(p) for p in folders}
    if not found:
        raise InputError(
            f"{root}: expected one sub-folder per class holding NIfTI or PNG files, or a "
            f"{' / '.join(MANIFESTS)}; found no sub-folders"
        )
    empty = [name for name, files in found.items() if not files]
    if empty:
        raise InputError(
            f"{root / empty[0]}: class '{empty[0]}' holds no NIfTI or PNG files "
            f"({', '.join(SUFFIXES)})"
        )
    return found


def _manifest_rows(path: Path) -> tuple[list[dict[str, str]], list[str] | None]:
    """Rows of a manifest (``image``, ``label`` and optionally ``split``: train / val) and the
    class names it declares (JSON ``classes``), if any."""
    try:
        names = None
        if path.suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                rows = [dict(r) for r in csv.DictReader(handle)]
        else:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            rows = loaded["items"] if isinstance(loaded, dict) else loaded
            if isinstance(loaded, dict) and loaded.get("classes") is not None:
                names = [str(c) for c in loaded["classes"]]
        for n, row in enumerate(rows):
            if not row.get("image") or row.get("label") in (None, ""):
                raise ValueError(f"entry {n + 1} lacks 'image' or 'label'")
            split = str(row.get("split") or "")
            if split not in ("", "train", "val"):
                raise ValueError(f"entry {n + 1} has split '{split}', not train or val")
        return [{k: str(v) for k, v in row.items() if v is not None} for row in rows], names
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: not a usable manifest ({exc})") from None


def _split(
    by_class: dict[str, list[Path]], fraction: float, seed: int
) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Hold out ``fraction`` of each class (at least one file of a class with two or more)."""
    rng = np.random.RandomState(seed)
    train: dict[str, list[Path]] = {}
    val: dict[str, list[Path]] = {}
    for name, files in by_class.items():
        order = rng.permutation(len(files))
        n_val = max(1, round(len(files) * fraction)) if len(files) > 1 else 0
        val[name] = [files[i] for i in sorted(order[:n_val])]
        train[name] = [files[i] for i in sorted(order[n_val:])]
    return train, val


def read_class_data(data: Path, *, val_fraction: float, seed: int) -> ClassData:
    """Labelled files under ``data``, in one of three layouts:

    - ``data/<class>/*`` — one sub-folder per class; ``val_fraction`` of each class is held
      out for validation (stratified, chosen with ``seed``);
    - ``data/train/<class>/*`` and ``data/val/<class>/*`` — an explicit split (either part may
      be missing: a folder with ``val/`` only is a held-out set for ``vlm eval``);
    - a manifest: ``data`` is (or holds) ``manifest.csv`` with columns ``image,label[,split]``
      or ``manifest.json`` (a list of such objects, or ``{"classes": [...], "items": [...]}``);
      paths are relative to the manifest; rows without a split are split as above.

    Files are NIfTI volumes or 2D images (PNG, JPEG, TIFF); class names are sorted.
    """
    data = Path(data)
    if not data.exists():
        raise InputError(f"{data}: no such data folder or manifest")
    manifest = data if data.is_file() else next(
        (data / m for m in MANIFESTS if (data / m).is_file()), None
    )  # fmt: skip
    fixed: dict[str, dict[str, list[Path]]] = {"train": {}, "val": {}}
    free: dict[str, list[Path]] = {}
    names: list[str] | None = None
    if manifest is not None:
        if manifest.suffix not in (".csv", ".json"):
            raise InputError(f"{manifest}: a manifest must be a .csv or .json file")
        rows, names = _manifest_rows(manifest)
        for row in rows:
            path = (manifest.parent / row["image"]).resolve()
            if not path.is_file():
                raise InputError(f"{manifest}: lists {row['image']}, which is missing")
            split = row.get("split", "")
            target = fixed[split] if split else free
            target.setdefault(row["label"], []).append(path)
    elif {p.name for p in data.iterdir() if p.is_dir()} & {"train", "val"}:
        for part in ("train", "val"):
            if (data / part).is_dir():
                fixed[part] = _class_folders(data / part)
    else:
        free = _class_folders(data)
    held_train, held_val = _split(free, val_fraction, seed)
    labelled = {
        part: {c: fixed[part].get(c, []) + held.get(c, []) for c in {*fixed[part], *held}}
        for part, held in (("train", held_train), ("val", held_val))
    }
    seen = sorted({c for part in labelled.values() for c in part})
    class_names = tuple(names or seen)
    unknown = sorted(set(seen) - set(class_names))
    if unknown:
        raise InputError(f"{manifest}: label '{unknown[0]}' is not among its classes")
    if len(class_names) < 2:
        found = ", ".join(f"'{c}'" for c in class_names) or "none"
        noun = "class" if len(class_names) == 1 else "classes"
        raise InputError(f"{data}: found {len(class_names)} {noun} ({found}); need at least 2")
    counts = {c: sum(len(part.get(c, [])) for part in labelled.values()) for c in class_names}
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        raise InputError(f"{manifest or data}: class '{empty[0]}' has no files")
    index = {c: i for i, c in enumerate(class_names)}

    def items(part: dict[str, list[Path]]) -> list[dict[str, Any]]:
        return [{"image": str(p), "label": index[c]} for c in class_names for p in part.get(c, [])]

    return ClassData(items(labelled["train"]), items(labelled["val"]), class_names)


# --- training -----------------------------------------------------------------------------------


def _transforms(params: ClassifyTrainParams, train: bool) -> Any:
    from monai.transforms import (
        Compose,
        EnsureTyped,
        Lambdad,
        RandFlipd,
        RandRotate90d,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    load = functools.partial(_load_prepared, preset=params.preset, size=params.size)
    steps: list[Any] = [Lambdad(keys="image", func=load)]
    if train and params.augment != "none":
        steps += [
            RandFlipd(keys="image", prob=0.5, spatial_axis=0),
            RandFlipd(keys="image", prob=0.5, spatial_axis=1),
            RandFlipd(keys="image", prob=0.5, spatial_axis=2),
            RandRotate90d(keys="image", prob=0.5, spatial_axes=(0, 1)),
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        ]
        if params.augment == "wide":
            steps += _wide_augmentation()
    steps.append(EnsureTyped(keys="image", data_type="tensor", track_meta=False))
    return Compose(steps)


def _wide_augmentation() -> list[Any]:
    """MONAI's random transforms that widen what a volume can look like (on the network's
    cube, intensities scaled to 0..1): everything zoomed to 0.6-1.1 of its size (smaller
    lesions), a scanner's bias field, gamma, blur, and Gaussian noise of a standard deviation
    up to 0.15 (about twice the largest training noise on that scale)."""
    from vlm_medical.augment import wide_augmentation

    return wide_augmentation(label=False, zoom=(0.6, 1.1), smooth=(0.25, 0.8), smooth_prob=0.15,
                             noise_std=0.15, noise_prob=0.4)  # fmt: skip


def _initial(params: ClassifyTrainParams, class_names: Sequence[str]) -> TrainedModel:
    """The weights ``params.init`` names ('bundled': the shipped ones), loaded to fine-tune
    (the core's ``LoadedModel``, a private copy of the module): their classes and
    pre-processing must be this run's."""
    loaded = load_trained_model(
        "" if params.init == "bundled" else params.init, CLASSIFIER, fresh=True, param="init"
    )
    names = [str(c) for c in loaded.card.get("class_names") or ()]
    if names != list(class_names):
        raise InputError(f"init {loaded.path} has classes {names} and the data {list(class_names)}")
    made = loaded.card.get("preprocessing") or {}
    for key, name, mine in (("size", "size", params.size), ("intensity", "preset", params.preset)):
        if key in made and made[key] != mine:
            raise InputError(
                f"init {loaded.path} sees {key} {made[key]!r}; train with -p {name}={made[key]}"
            )
    return loaded


def _load_prepared(path: str, *, preset: str, size: int) -> torch.Tensor:
    return prepare(torch.from_numpy(read_item(path)), preset, size)


def build(data: Path, params: ClassifyTrainParams, ctx: TrainContext) -> TrainSetup:
    """What `vlm train` / `vlm eval medical.classify` hand the core trainer."""
    from monai.data import CacheDataset, Dataset
    from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC

    quiet_monai()
    found = read_class_data(data, val_fraction=params.val_fraction, seed=ctx.seed)
    classes = len(found.class_names)
    train_items = found.train if ctx.purpose == "train" else []
    if ctx.purpose in ("train", "fit") and not found.train:
        raise InputError(f"{data}: no training files (every file is in the validation split)")
    if ctx.purpose == "eval" and not found.val:
        raise InputError(f"{data}: no validation files to evaluate on")

    def dataset(items: list[dict[str, Any]], train: bool) -> Any:
        return CacheDataset(items, _transforms(params, train), cache_rate=params.cache_rate,
                            num_workers=0, progress=False)  # fmt: skip

    def loss(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = model(batch["image"])
        target = batch["label"].long()
        return {"loss": F.cross_entropy(logits, target), "preds": logits.softmax(1),
                "target": target}  # fmt: skip

    def predict(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return model(batch["image"]).softmax(1), batch["label"].long()

    recorded = ctx.weights_card.get("architecture")
    init = _initial(params, found.class_names) if params.init and ctx.purpose == "train" else None
    if ctx.purpose != "train" and isinstance(recorded, dict):  # the network as trained
        arch = dict(recorded)
    elif init is not None:  # the network the init weights describe, with their tensors
        arch = dict(init.card["architecture"])
    else:
        arch = architecture(params.network, classes, params.dropout)
    layers = recorded_layers(ctx.weights_card, classify_layers(arch))

    # whole training volumes without augmentation, read once when the model is fitted
    whole = Dataset(found.train, _transforms(params, False)) if ctx.purpose != "eval" else None

    def features(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # the run's one forward pass per input (Grad-CAM's), tapped the same way
        with FeatureTap(model, layers) as tap:
            model(batch["image"])
        return tap.features()

    return TrainSetup(
        model=init.module.train() if init is not None else build_network(arch),
        train_data=dataset(train_items, True),
        val_data=dataset(found.val, False) if found.val else None,
        loss=loss,
        predict=predict,
        metrics=lambda: {
            "acc": MulticlassAccuracy(num_classes=classes, average="micro"),
            "auroc": MulticlassAUROC(num_classes=classes),
        },
        monitor="val_acc",
        mode="max",
        features=features,
        fit_data=whole,
        card={
            "architecture": arch,
            "features": card_entry(layers),
            "class_names": list(found.class_names),
            "preprocessing": {
                "intensity": params.preset,
                "size": params.size,
                "resize": "whole volume to size³: area averaging down, trilinear up",
                "channels": 1,
                "axes": "ijk (NIfTI voxel order); 2D images as one slice (i = column)",
            },
            "explain": {"method": "gradcam", "layer": "auto"},
            "notice": NOTICE,
            **({"init": {"path": str(init.path), "sha256": init.sha256}} if init else {}),
        },
    )


# --- inference ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedClassifier:
    network: nn.Module
    card: dict[str, Any]
    sha256: str
    class_names: tuple[str, ...]
    size: int
    preset: str
    cam_layer: str  # the automatic Grad-CAM layer for this network and input size
    #: the weights as the core loaded them: their familiarity model and lock (None: a bare
    #: network)
    trained: TrainedModel | None = None
    #: the layers the familiarity check reads (:mod:`vlm_medical.features`)
    layers: tuple[str, ...] = ()
    #: logits are divided by it before the softmax (the card's ``calibration``; 1: none)
    temperature: float = 1.0

    @property
    def exported(self) -> str:
        """``"onnx"`` or ``"pt2"`` when the network is a `vlm export` file (forward passes
        only: no Grad-CAM, no familiarity tap), "" for torch weights."""
        return self.trained.exported if self.trained is not None else ""

    @property
    def lock(self) -> threading.Lock:
        """Held while hooks are on the network (Grad-CAM's, the familiarity tap's): the
        core's model cache shares it between runs."""
        return self.trained.lock if self.trained is not None else _CAM_LOCK

    def familiarity_tap(self) -> FeatureTap | None:
        """A tap on :attr:`layers` when the weights have a familiarity model, else None."""
        if self.trained is None or self.trained.familiarity is None:
            return None
        return FeatureTap(self.network, self.layers)

    def judge(self, tap: FeatureTap | None, count: int = 1) -> list[Ood | None]:
        """The verdicts of the ``count`` inputs ``tap`` saw, in order: one row each, from the
        Grad-CAM forward pass of their batch (its backward pass runs no forward hooks);
        ``count`` None without a tap or a familiarity model."""
        if tap is None or self.trained is None:
            return [None] * count
        rows = tap.features()
        if len(rows) != count:
            raise RuntimeError(
                f"the familiarity tap saw {len(rows)} inputs' forward passes, not {count}"
            )
        return self.trained.judge(rows)


#: Grad-CAM hooks a module for one call; a bare network (no cached weights, whose lock is held
#: instead) explains one input at a time.
_CAM_LOCK = threading.Lock()
#: :func:`auto_cam_layer` by (weights sha256, input size, device).
_CAM_LAYERS: dict[tuple[str, int, str], str] = {}


def default_weights() -> str:
    return str(package_file("vlm_medical", "weights", DEFAULT_WEIGHTS))


def auto_cam_layer(network: nn.Module, size: int, device: torch.device) -> str:
    """The deepest dense block whose output grid is at least 4 voxels a side for a size³
    input (the finest class-specific map; the last block of a small input is 1³), else the
    first block."""
    grids: dict[str, tuple[int, ...]] = {}
    blocks = [(n, m) for n, m in network.named_modules() if n.startswith("features.denseblock")]
    blocks = [(n, m) for n, m in blocks if n.count(".") == 1]
    handles = [
        m.register_forward_hook(
            lambda _m, _a, out, name=n: grids.__setitem__(name, tuple(out.shape[2:]))
        )
        for n, m in blocks
    ]
    try:
        with torch.inference_mode():
            network(torch.zeros(1, 1, size, size, size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    if not grids:
        raise InputError("the network has no dense blocks for Grad-CAM; pass cam_layer")
    fine = [n for n, grid in grids.items() if min(grid) >= 4]
    return fine[-1] if fine else next(iter(grids))


def _network(card: Mapping[str, Any]) -> nn.Module:
    return build_network(dict(card["architecture"]))


#: The classifier: a `vlm train medical.classify` network, by default the bundled DenseNet.
CLASSIFIER = ModelRecipe(
    task=TASK,
    name="classify",
    build=_network,
    default=default_weights,
    needs=("architecture", "class_names"),
)


def _classifier(loaded: TrainedModel, device: torch.device) -> LoadedClassifier:
    card = loaded.card
    names = tuple(str(c) for c in card.get("class_names") or ())
    if len(names) < 2:
        raise InputError(
            f"{loaded.path}: its sidecar names {len(names)} class(es); a `vlm train {TASK}` "
            "checkpoint names at least two"
        )
    size = int((card.get("preprocessing") or {}).get("size", 32))
    preset = str((card.get("preprocessing") or {}).get("intensity", "auto"))
    network = loaded.module
    where = (loaded.sha256, size, str(device))
    if where not in _CAM_LAYERS and not loaded.exported:  # an export has no layers to hook
        _CAM_LAYERS[where] = auto_cam_layer(network, size, device)
    calibration = card.get("calibration") or {}
    return LoadedClassifier(
        network, card, loaded.sha256, names, size, preset, _CAM_LAYERS.get(where, ""),
        trained=loaded,
        layers=recorded_layers(card, classify_layers(card["architecture"])),
        temperature=float(calibration.get("temperature", 1.0)),
    )  # fmt: skip


def load_model(ref: str, device: torch.device) -> LoadedClassifier:
    """The network of a `vlm train medical.classify` checkpoint through the core's model cache
    (empty ``ref``: the bundled weights)."""
    return _classifier(load_trained_model(ref, CLASSIFIER, device=str(device)), device)


def _class_index(model: LoadedClassifier, name: str) -> int | None:
    if not name:
        return None
    if name not in model.class_names:
        raise UsageError(
            f"explain='{name}' is not one of the model's classes "
            f"({', '.join(model.class_names)})" + did_you_mean(name, model.class_names)
        )
    return model.class_names.index(name)


@dataclass(frozen=True, eq=False)
class Classified:
    """One input's answer: the class probabilities (softmax of the logits divided by the
    weights' temperature), the class the map explains, the Grad-CAM heat (i, j, k) in [0, 1]
    on the input's grid, and the scaled intensities (the overlay's background)."""

    probs: np.ndarray
    explained: int
    heat: np.ndarray
    scaled: np.ndarray


def classify_arrays(
    model: LoadedClassifier,
    arrays: Sequence[np.ndarray],
    params: ClassifyParams,
    device: torch.device,
    tap: FeatureTap | None = None,
) -> list[Classified]:
    """The answers for volumes (i, j, k), any sizes: each is scaled and resized to the
    network's cube on the device, then the whole batch takes one forward and one backward
    pass (:func:`~vlm_core.explain.gradcam.run_grad_cam_batch`; the same maps and
    probabilities as one input at a time, within float tolerance), ``tap`` (if any) on during
    it: one row per input."""
    from vlm_core.explain._common import to_heat
    from vlm_core.explain.gradcam import run_grad_cam_batch

    if not arrays:
        return []
    scaled, pixels = network_input(model, arrays, params, device)
    layer = model.cam_layer if params.cam_layer == "auto" else params.cam_layer
    explain = _class_index(model, params.explain)
    with model.lock, tap if tap is not None else contextlib.nullcontext():
        saliencies = run_grad_cam_batch(model.network, pixels, explain, layer)
    return [
        Classified(
            probs=(s.logits.double() / model.temperature).softmax(0).cpu().numpy(),
            explained=s.class_index,
            heat=to_heat(s.coarse, tuple(array.shape)),
            scaled=volume.cpu().numpy(),
        )
        for s, array, volume in zip(saliencies, arrays, scaled, strict=True)
    ]


def network_input(
    model: LoadedClassifier,
    arrays: Sequence[np.ndarray],
    params: ClassifyParams,
    device: torch.device,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Volumes (i, j, k), any sizes, as the run prepares them on the device: each scaled by
    the preset (kept for the overlay), and the network's input batch (B, 1, s, s, s) of their
    resized cubes."""
    preset = model.preset if params.preset == "trained" else params.preset
    scaled, cubes = [], []
    for array in arrays:
        source = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)
        volume = normalize_tensor(source, preset)
        scaled.append(volume)
        cubes.append(resize_cube(volume[None], model.size))
    return scaled, torch.stack(cubes)


def probabilities(
    model: LoadedClassifier,
    arrays: Sequence[np.ndarray],
    params: ClassifyParams,
    device: torch.device,
) -> np.ndarray:
    """(B, classes) float64: the class probabilities of volumes (i, j, k) from one forward pass
    of their batch, no gradients: the softmax of the logits divided by the weights'
    temperature, as :func:`classify_arrays` computes them from Grad-CAM's forward pass. What a
    run of an exported network answers, and what `vlm export` measures accuracy with."""
    if not arrays:
        return np.zeros((0, len(model.class_names)))
    pixels = network_input(model, arrays, params, device)[1]
    with torch.no_grad():
        logits = model.network(pixels)
    return (logits.double() / model.temperature).softmax(1).cpu().numpy()


def classify_array(
    model: LoadedClassifier,
    array: np.ndarray,
    params: ClassifyParams,
    device: torch.device,
    tap: FeatureTap | None = None,
) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """``(probabilities, explained class, heat, scaled intensities)`` of one volume (i, j, k):
    :func:`classify_arrays` of a batch of one."""
    (one,) = classify_arrays(model, [array], params, device, tap)
    return one.probs, one.explained, one.heat, one.scaled


def _as_uint8(heat: np.ndarray) -> np.ndarray:
    """A heat map in [0, 1] as 0..255: the ``heatmap`` output of images and volumes alike."""
    return np.round(heat * 255).astype(np.uint8)


def _explanation(
    heat: np.ndarray, affine: np.ndarray, explained: int, image: bool
) -> dict[str, float]:
    """Where the map peaks: voxel (i, j, k) and world mm for a volume, pixel (x, y) for an
    image; and the index of the class it explains."""
    peak = np.unravel_index(int(heat.argmax()), heat.shape)
    out = {"explained_class": float(explained)}
    if image:
        return {**out, "peak_x": float(peak[0]), "peak_y": float(peak[1])}
    world = affine @ np.array([*peak, 1.0])
    return {
        **out,
        **{f"peak_{axis}": float(v) for axis, v in zip("ijk", peak, strict=True)},
        **{f"peak_{axis}_mm": float(v) for axis, v in zip("xyz", world[:3], strict=True)},
    }


def run(
    inputs: Sequence[Image | Volume], params: ClassifyParams, ctx: RunContext
) -> list[dict[str, Any]]:
    """The batch ``inputs`` (the runner's, up to the task's ``batch_size``) classified and
    explained in one Grad-CAM pass; the weights come from the core's model cache once per
    call."""
    from vlm_core.explain import overlay

    quiet_monai()
    device = torch.device(ctx.device)
    loaded = load_trained_model(params.weights, CLASSIFIER, ctx=ctx)
    params = loaded.run_params(params)  # the card's `inference` settings the user did not set
    model = _classifier(loaded, device)
    if model.exported:
        return _run_exported(model, inputs, params, device, ctx)
    volumes = [_as_volume(item) for item in inputs]
    tap = model.familiarity_tap()
    answers = classify_arrays(model, [v[0] for v in volumes], params, device, tap)
    for n, verdict in enumerate(model.judge(tap, len(inputs))):
        ctx.record_ood(n, verdict)
    outputs: list[dict[str, Any]] = []
    for n, (item, (_, affine, _), answer) in enumerate(zip(inputs, volumes, answers, strict=True)):
        probs, explained, heat = answer.probs, answer.explained, answer.heat
        top = int(probs.argmax())
        values = {name: float(p) for name, p in zip(model.class_names, probs, strict=True)}
        where = _explanation(heat, affine, explained, isinstance(item, Image))
        result: dict[str, Any] = {
            "class": Caption(text=model.class_names[top], score=float(probs[top]), tags=values),
            "probabilities": Metrics(values),
        }
        title = f"{item.name or 'input'} · Grad-CAM of '{model.class_names[explained]}'"
        if isinstance(item, Image):  # back onto the image: rows j, columns i
            plane = np.ascontiguousarray(heat[:, :, 0].T)
            result["gradcam"] = overlay(
                Image(pixels=item.pixels, name=title), plane, params.opacity, params.colormap
            )
            result["heatmap"] = Image(pixels=_as_uint8(plane), name=title)
        else:
            k = int(heat.reshape(-1, heat.shape[2]).mean(0).argmax())  # the most salient slice
            background = Image(pixels=answer.scaled[:, :, k], name=f"{title} · slice k={k}")
            result["gradcam"] = overlay(background, heat[:, :, k], params.opacity, params.colormap)
            # 8 bits as for an image (255 = the map's peak): a quarter of float32's bytes and
            # about a third of its gzip time, for steps of 1/255 in a map upsampled from 4³
            result["heatmap"] = Volume(array=_as_uint8(heat), affine=affine, name=title)
            where["overlay_slice_k"] = float(k)
        result["explanation"] = Metrics(where)
        outputs.append(result)
        ctx.report((n + 1) / len(inputs), f"classified {n + 1} of {len(inputs)}")
    return outputs


#: The ``note`` output of a run of an exported network.
EXPORTED_NOTE = (
    "Class and probabilities from the exported {fmt} network. No Grad-CAM heat map, overlay or "
    "explanation: Grad-CAM needs the network's gradients, which an exported file does not "
    "have. Run with the torch weights for them."
)


def _run_exported(
    model: LoadedClassifier,
    inputs: Sequence[Image | Volume],
    params: ClassifyParams,
    device: torch.device,
    ctx: RunContext,
) -> list[dict[str, Any]]:
    """A run of a `vlm export` file: the class and probabilities (the same as the torch
    weights give, within the export's tolerance) from one forward pass per batch, and a
    ``note`` output saying why the Grad-CAM outputs (``gradcam``, ``heatmap``,
    ``explanation``) are missing; a parameter that only chooses the map is refused."""
    chosen = [
        f"{name}={value!r}"
        for name, value, default in (
            ("explain", params.explain, ""),
            ("cam_layer", params.cam_layer, "auto"),
        )
        if value != default
    ]
    if chosen:
        raise UsageError(
            f"{chosen[0]} chooses the Grad-CAM map, which an exported network "
            f"({model.exported}) cannot compute (it has no gradients); run with the torch weights"
        )
    probs = probabilities(model, [_as_volume(item)[0] for item in inputs], params, device)
    note = Caption(text=EXPORTED_NOTE.format(fmt=model.exported.upper()))
    outputs: list[dict[str, Any]] = []
    for n, row in enumerate(probs):
        ctx.record_ood(n, None)  # no familiarity model reads an exported network
        top = int(row.argmax())
        values = {name: float(p) for name, p in zip(model.class_names, row, strict=True)}
        outputs.append(
            {
                "class": Caption(text=model.class_names[top], score=float(row[top]), tags=values),
                "probabilities": Metrics(values),
                "note": note,
            }
        )
        ctx.report((n + 1) / len(inputs), f"classified {n + 1} of {len(inputs)}")
    return outputs
