"""`medical.segment`: sliding-window segmentation of volumes (and 2D images), post-processing
and measurements."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlm_core.errors import InputError
from vlm_core.familiarity import FeatureTap, Ood
from vlm_core.tasks import RunContext, package_file
from vlm_core.types import File, Image, Mask, Metrics, Volume
from vlm_core.weights import LoadedModel as TrainedModel
from vlm_core.weights import ModelRecipe
from vlm_core.weights import load_model as load_trained_model
from vlm_medical._quiet import quiet_monai
from vlm_medical.features import recorded_layers, segment_layers
from vlm_medical.intensity import normalize_tensor
from vlm_medical.measure import measure, postprocess
from vlm_medical.networks import build_network, sides_of, spatial_dims
from vlm_medical.params import SegmentParams

log = logging.getLogger(__name__)

NOTICE = "Research use only: not a medical device, not for diagnosis."


@dataclass(frozen=True)
class LoadedModel:
    network: torch.nn.Module
    card: dict[str, Any]
    sha256: str
    class_names: tuple[str, ...]
    spatial_dims: int  # 3: volumes; 2: images, and volumes slice by slice
    #: the weights as the core loaded them: their familiarity model and lock (None: a bare
    #: network, as in a benchmark)
    trained: TrainedModel | None = None
    #: the layers the familiarity check reads (:mod:`vlm_medical.features`)
    layers: tuple[str, ...] = ()

    def familiarity_tap(self) -> FeatureTap | None:
        """A tap on :attr:`layers` when the weights have a familiarity model, else None
        (their results say ``ood = None`` and nothing is hooked)."""
        if self.trained is None or self.trained.familiarity is None:
            return None
        return FeatureTap(self.network, self.layers)

    def holding(self, tap: FeatureTap | None) -> contextlib.AbstractContextManager[Any]:
        """The weights' lock while ``tap`` hooks the network: the core's model cache shares
        it between runs, which wait meanwhile; nothing to hold without a tap."""
        if tap is None or self.trained is None:
            return contextlib.nullcontext()
        return self.trained.lock

    def judge(self, tap: FeatureTap | None) -> Ood | None:
        """The familiarity verdict of the one input ``tap`` saw (its windows averaged)."""
        if tap is None or self.trained is None:
            return None
        return self.trained.judge(tap.mean())[0]


def default_weights(dims: int = 3) -> str:
    """The bundled weights: the 3D UNet for volumes, the 2D UNet for images."""
    return str(package_file("vlm_medical", "weights", f"segment-unet{dims}d"))


def _network(card: Mapping[str, Any]) -> torch.nn.Module:
    return build_network(dict(card["architecture"]))


#: The segmentation networks, by the dimensions of their bundled weights (a ``weights`` the
#: request names may be either: its card says which).
SEGMENTERS: dict[int, ModelRecipe] = {
    dims: ModelRecipe(
        task="medical.segment",
        name="segment" if dims == 3 else "segment-2d",
        build=_network,
        default=functools.partial(default_weights, dims),
    )
    for dims in (2, 3)
}


def _segmenter(loaded: TrainedModel) -> LoadedModel:
    card = loaded.card
    names = tuple(card.get("class_names") or ("background", "lesion"))
    arch = card["architecture"]
    layers = recorded_layers(card, segment_layers(arch))
    return LoadedModel(loaded.module, card, loaded.sha256, names, spatial_dims(arch),
                       trained=loaded, layers=layers)  # fmt: skip


def load_model(ref: str, device: torch.device, dims: int = 3) -> LoadedModel:
    """The network of a `vlm train medical.segment` checkpoint through the core's model cache
    (empty ``ref``: the bundled ``dims``-D weights)."""
    return _segmenter(load_trained_model(ref, SEGMENTERS[dims], device=str(device)))


def _as_volume(item: Image | Volume) -> tuple[np.ndarray, np.ndarray, bool]:
    """(array i,j,k; affine; is 2D) for a volume or a 2D image (one slice, 1 mm pixels)."""
    if isinstance(item, Volume):
        array = item.array if item.array.ndim == 3 else item.array[..., 0]
        return np.asarray(array, dtype=np.float32), np.asarray(item.affine), array.shape[2] == 1
    pixels = item.pixels.astype(np.float32)
    gray = pixels if pixels.ndim == 2 else pixels[..., :3].mean(axis=2)
    # image rows are j, columns i: a (W, H, 1) volume
    return np.ascontiguousarray(gray.T[:, :, None]), np.eye(4), True


def window_logits(
    network: torch.nn.Module, batch: torch.Tensor, params: SegmentParams
) -> torch.Tensor:
    """MONAI's sliding-window inference of ``batch`` ((1, 1, i, j, k) for a 3D network;
    (slices, 1, i, j) for a 2D one) with the request's window, overlap and blending; the
    window is cut to the input and rounded to what the network takes (a UNet: a multiple of
    8, at least 16; SwinUNETR: of 32, at least 64). `vlm run` and `vlm eval` both window
    through here, so they agree on inputs smaller than the window too."""
    from monai.inferers import sliding_window_inference

    multiple, smallest = sides_of(network)
    roi = [min(params.roi, max(s, smallest)) for s in batch.shape[2:]]
    roi = [max(smallest, r - r % multiple) for r in roi]
    logits = sliding_window_inference(
        batch, roi, params.sw_batch, network, overlap=params.overlap, mode=params.blend
    )
    assert isinstance(logits, torch.Tensor)  # a network of one output gives one tensor
    return logits


def labels_of(logits: torch.Tensor) -> torch.Tensor:
    """The uint8 label of each voxel: the index of its largest class logit along dim 1 (the
    first on ties, as ``argmax``). ``max(dim=1).indices`` gives the same labels as
    ``argmax(dim=1)`` at a tenth of its CPU time on a (1, 2, 64, 64, 64) map (2 ms, not 26)."""
    return logits.max(dim=1).indices.to(torch.uint8)


def window_features(
    network: torch.nn.Module, layers: Sequence[str], batch: torch.Tensor, params: SegmentParams
) -> torch.Tensor:
    """(B, D): each item of ``batch`` (B, 1, *spatial), prepared as a run prepares an input,
    run through :func:`window_logits` as a run runs it, its tapped rows averaged over its
    windows. What ``vlm train`` fits the familiarity model on."""
    rows = []
    for item in batch:
        with FeatureTap(network, layers) as tap:
            window_logits(network, item[None], params)
        rows.append(tap.mean())
    return torch.cat(rows)


def segment_array(
    model: LoadedModel, array: np.ndarray, affine: np.ndarray, params: SegmentParams,
    device: torch.device, flat: bool, tap: FeatureTap | None = None,
) -> np.ndarray:  # fmt: skip
    """The label map of ``array`` (i, j, k) in its own grid.

    The volume goes to the device first; intensity scaling, the sliding window (bf16 autocast
    on CUDA) and the argmax all run there, and only the uint8 labels come back. A ``tap`` is
    on during the sliding window only: it sees every window of the input once.
    """
    from monai.data import MetaTensor
    from monai.transforms import Compose, Orientation, Spacing

    depth = array.shape[2]
    source = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if device.type == "cuda":
        source = source.pin_memory()
    data = normalize_tensor(source.to(device, non_blocking=True), params.preset)
    if flat and model.spatial_dims == 3:  # a slab of copies gives a 3D network context
        data = data.expand(-1, -1, min(params.roi, 16)).contiguous()
    image: torch.Tensor = data[None]
    steps: list[Any] = []
    if params.orientation != "native" and not flat:
        steps.append(
            Orientation(axcodes=params.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S")))
        )
    if params.spacing_mm > 0 and not flat:
        steps.append(Spacing(pixdim=(params.spacing_mm,) * 3, mode="bilinear"))
    resample = Compose(steps) if steps else None
    if resample is not None:  # MONAI records each step so that the labels can go back
        image = resample(MetaTensor(image, affine=torch.as_tensor(affine)))
    dims = model.spatial_dims
    amp = device.type == "cuda"
    with torch.inference_mode(), torch.autocast(device.type, enabled=amp, dtype=torch.bfloat16):
        if dims == 3:
            batch = torch.as_tensor(image)[None]  # (1, 1, i, j, k)
        else:  # every slice k is an image of the batch: (k, 1, i, j)
            batch = torch.as_tensor(image).permute(3, 0, 1, 2)
        with tap if tap is not None else contextlib.nullcontext():
            logits = window_logits(model.network, batch, params)
        labels = labels_of(logits)
        if dims == 2:
            labels = labels.permute(1, 2, 0)[None]  # (k, i, j) → (1, i, j, k)
    if resample is not None:
        assert isinstance(image, MetaTensor)
        out = MetaTensor(labels.float(), meta=image.meta,
                         applied_operations=image.applied_operations)  # fmt: skip
        with torch.inference_mode():
            labels = resample.inverse(out).round().to(torch.uint8)
        if tuple(labels.shape[1:]) != array.shape:  # guard against off-by-one inverses
            raise RuntimeError(
                f"inverting {steps} gave {tuple(labels.shape[1:])}, not {array.shape}"
            )
    result = labels[0].cpu().numpy()
    if flat and depth == 1 and result.shape[2] > 1:  # the middle of the 3D network's slab
        result = result[:, :, result.shape[2] // 2][:, :, None]
    return result


def _dicom_sources(inputs: Sequence[Image | Volume]) -> list[list[tuple[Path, int]]]:
    """The source (file, frame) of every slice of every input, or a one-line error."""
    from vlm_medical import dicom_seg

    dicom_seg.require()
    sources = []
    for item in inputs:
        if not isinstance(item, Volume):
            raise InputError(
                f"{item.name or 'input'}: dicom_seg=true needs DICOM input, not an image"
            )
        sources.append(dicom_seg.source_slices(item))
    return sources


def _dicom_seg(
    volume: Volume, labels: np.ndarray, model: LoadedModel, slices: list[tuple[Path, int]]
) -> File:
    from vlm_medical import __version__, dicom_seg

    return dicom_seg.dicom_seg(
        volume,
        labels,
        model.class_names,
        algorithm="vlm medical.segment",
        version=model.sha256[:16],
        software_version=f"vlm-medical {__version__}",
        slices=slices,
    )


def run(
    inputs: Sequence[Image | Volume], params: SegmentParams, ctx: RunContext
) -> list[dict[str, Any]]:
    quiet_monai()
    # refuse before any work: with dicom_seg, every input must have a DICOM series
    sources = _dicom_sources(inputs) if params.dicom_seg else []
    device = torch.device(ctx.device)
    models: dict[int, tuple[LoadedModel, SegmentParams]] = {}

    def model_for(flat: bool) -> tuple[LoadedModel, SegmentParams]:
        """The ``weights`` model; without one, the bundled 2D UNet for a single slice and the
        3D UNet for a volume; with the window its card records unless the request sets one."""
        dims = 3 if params.weights or not flat else 2
        if dims not in models:
            loaded = load_trained_model(params.weights, SEGMENTERS[dims], ctx=ctx)
            models[dims] = _segmenter(loaded), loaded.run_params(params)
        return models[dims]

    outputs: list[dict[str, Any]] = []
    for n, item in enumerate(inputs):
        array, affine, flat = _as_volume(item)
        model, settings = model_for(flat)
        tap = model.familiarity_tap()
        with model.holding(tap):
            labels = segment_array(model, array, affine, settings, device, flat, tap=tap)
        ctx.record_ood(n, model.judge(tap))
        labels = postprocess(
            labels,
            largest_only=params.largest_only,
            fill_holes=params.fill_holes,
            min_voxels=params.min_voxels,
        )
        spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
        summary, table = measure(labels, spacing, model.class_names)
        if isinstance(item, Image):
            mask = Mask(
                labels=np.ascontiguousarray(labels[:, :, 0].T), class_names=model.class_names
            )
        else:
            mask = Mask(labels=labels, class_names=model.class_names, affine=affine)
        output: dict[str, Any] = {"mask": mask, "measurements": Metrics(summary, per_class=table)}
        if sources and isinstance(item, Volume):
            output["dicom_seg"] = _dicom_seg(item, labels, model, sources[n])
        outputs.append(output)
        ctx.report((n + 1) / max(len(inputs), 1), f"segmented {n + 1} of {len(inputs)}")
    return outputs
