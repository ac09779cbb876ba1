"""What `medical.classify` and `medical.segment` hand the core's explain engine
(``vlm run TASK INPUT -p explainer=METHOD``): the number explained, on the model's own input.

**medical.classify** explains the DenseNet's *logit* of one class (``explain=CLASS``; default
the predicted class) on the network's input cube, prepared exactly as the task prepares it
(:func:`vlm_medical.classify.classify_arrays`: the intensity preset on the input's own grid,
then :func:`~vlm_medical.classify.resize_cube`). A logit, not a probability: the softmax
saturates (a "lesion 0.999" volume barely moves under deletion) and with two classes it mixes
in the other class's evidence; the logit is what Grad-CAM has always explained here. A flat
input (a 2D image, or a volume of one slice) is explained on its (size, size) plane: the
cube of such an input repeats that plane along k (the resize's trilinear step from one slice
is a copy), so the forward pass repeats it the same way (tested equal to the task's cube), a
pixel's attribution is the whole evidence of that pixel, and the perturbation methods and the
deletion curve remove image pixels, never a part of one pixel's copies. Grad-CAM's layer is the
task's (``cam_layer``, ``auto``: the deepest dense block at least 4 voxels a side); for a flat
input the layer's (C, h, w, d) output is read through its mean over d (:class:`SliceMean`:
the same numbers flow on, and the gradient reaching the mean is the sum over d).

**medical.segment** explains a region's *summed logit margin*: over the region's pixels
(voxels) p, ``logit[label(p)] - logit[background]`` of the UNet, summed. The margin and not
the lesion logit alone, because only the difference decides the label (adding a constant to
both logits changes nothing, and the lesion logit alone would credit evidence that raises
both); the label of each pixel is the task's own (multi-class weights: each region pixel's
class against the background). The region is the task's predicted mask (after its
post-processing): every lesion by default, or ``explain=N`` — the N-th connected component,
largest first, the row "lesion N" of the measurements table (``explain="NAME N"`` for a class
of multi-class weights). Nothing segmented: one line, "nothing segmented to explain".

The UNet runs once on the whole input here, not through the task's sliding windows: the
explained number is one network evaluation (Grad-CAM needs its layer seen once per input; a
gradient through blended windows would explain the blending too). An input no larger than
the task's window (``roi``, 64 by default) gets the same logits either way; a larger one
sees more context in one pass than in windows, so the region's logits can differ slightly
from those that made the mask (the mask itself, the region, is the task's). The network
takes sides that are multiples of its total stride, so the input is padded with zeros
(symmetrically, as MONAI's sliding window pads) and the logits cut back. One pass takes at
most :data:`MAX_GRID` pixels (512²) or voxels (96³); a larger input is cropped to the region's
bounding box widened by :data:`MARGIN` on every side (the context the UNet's windows see),
and an input whose region even so is larger is refused on one line (choose one lesion with
``explain=N``). The crop is in the map's details; the map is zero outside it. Inputs the task
resamples (``spacing_mm``, ``orientation``) are refused: the region lives on the resampled
grid there and the map would need the inverse of every step.

**Baseline** (what Integrated Gradients starts from, what Occlusion, KernelSHAP and LIME put
in a removed region and the deletion curve deletes to), for both tasks: the scaled input
*without its lesions* (:func:`lesion_free`): its small bright structures removed by a grey
opening (a ball of radius ``r`` after a light Gaussian smoothing) and its noise texture put
back (Gaussian noise at the input's own noise level, from a fixed seed, so a run repeats).
``r`` is wider than what is explained: for `medical.classify` a sixth of the cube's side (5
voxels at 32³: the bundled network's lesions have radii up to 4, its organs 6 and more); for
`medical.segment` one more than the largest radius of any predicted lesion (the deepest point
of the mask's distance transform). Why not 0, the presets' floor (the darkest 0.5% for
``auto``/``mr``, below the window for CT): measured on development data (generator seeds 7000,
32 volumes, and 7100, 8 images; disjoint from every seed the weights, their figures, the tests
and the benchmark use) with the core's faithfulness score, Integrated Gradients' deletion curve
beat random order on 27 of 32 volumes from 0 and on 32 of 32 from this baseline, Grad-CAM's on
14 and 21 (from 0, on none of the 18 explained as "normal"); on the 2D UNet, Integrated
Gradients from 0 missed completeness by 76% (median of 8 images, 64 steps) and beat random on
5 of 8, from this baseline by 0.3% and on 8 of 8. A removed region of zeros is a dark hole
whose rim these networks read as lesion-like edges. A constant (the median) or a plain blur
did no better in an earlier round: a smooth, noiseless patch is a texture the networks never
saw either. The assumption: lesions are brighter than their surroundings after scaling, as in
the bundled data; a dark lesion stays in this baseline, and its evidence is then not removed
by deleting it.

``layer`` (Grad-CAM): classify the task's ``cam_layer``; segment the UNet's ``model.1``, the
top skip connection (the first encoder level concatenated with the upsampled decoder: 32
channels at half the input's resolution), the last features before the output convolution
turns them into the two logits — the finest decoder grid that still has channels to weigh
(``model.2`` *is* the output: 2 channels). SwinUNETR: ``decoder1``. A 2D network run on a
volume slice by slice, or a 3D one on a single slice, has no layer with the input's grid:
Grad-CAM is refused there, the other methods work.

Nothing here is imported at plugin registration (torch and MONAI load when a target is built).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from vlm_core.errors import UsageError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from vlm_core.explain.target import ExplainTarget
    from vlm_core.tasks import RunContext
    from vlm_core.types import Image, Volume
    from vlm_medical.classify_params import ClassifyParams
    from vlm_medical.params import SegmentParams

__all__ = [
    "CLASSIFY_EXPLAINERS",
    "MARGIN",
    "MAX_GRID",
    "SEGMENT_EXPLAINERS",
    "SliceMean",
    "choose_region",
    "classify_target",
    "segment_target",
]

#: The methods both tasks support (attention rollout needs a ViT; these are convnets).
CLASSIFY_EXPLAINERS = ("gradcam", "integrated_gradients", "occlusion", "kernel_shap", "lime")
SEGMENT_EXPLAINERS = CLASSIFY_EXPLAINERS

#: The most pixels (2D) or voxels (3D) one explained forward pass takes: a 512² CT slice, a
#: 96³ volume (a 3D UNet's pass there is about 1 s of CPU; Integrated Gradients takes 64).
MAX_GRID = {2: 512 * 512, 3: 96**3}
#: Context kept on every side of the region when a larger input is cropped (pixels, voxels).
MARGIN = {2: 32, 3: 16}
#: Elements (batch x grid) per forward call of perturbed inputs: the batch is this over the
#: grid's size, between 1 and 16.
BATCH_ELEMENTS = 2**19


def _batch_for(grid: tuple[int, ...]) -> int:
    return max(1, min(16, BATCH_ELEMENTS // max(1, math.prod(grid))))


def _locked(lock: Any, call: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``call`` holding the weights' lock: the core's model cache shares the network between
    runs, whose Grad-CAM and familiarity hooks are on it only while they hold that lock, so no
    run's hook sees these passes and these passes see none of theirs."""

    def forward(x: Tensor) -> Tensor:
        with lock:
            return call(x)

    return forward


def _resize(values: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """A map resized to ``size`` (bilinear in 2D, trilinear in 3D), float32."""
    import torch
    import torch.nn.functional as F

    values = np.asarray(values, dtype=np.float32)
    if values.shape == tuple(size):
        return values
    mode = "bilinear" if len(size) == 2 else "trilinear"
    tensor = torch.from_numpy(np.ascontiguousarray(values))[None, None]
    return F.interpolate(tensor, size=size, mode=mode, align_corners=False)[0, 0].numpy()


def _onto(item: Image | Volume, plane_or_volume: np.ndarray) -> np.ndarray:
    """A map on the input's (i, j[, k]) grid as the background shows it: an image's rows are
    j and its columns i (the transpose); a one-slice volume gets its k axis back."""
    from vlm_core.types import Image

    if isinstance(item, Image):
        return np.ascontiguousarray(plane_or_volume.T)
    if plane_or_volume.ndim == 2:
        return plane_or_volume[:, :, None]
    return plane_or_volume


# --- the baseline -------------------------------------------------------------------------------


def _opening(values: np.ndarray, radius: int) -> np.ndarray:
    """Grey opening by a ball of ``radius`` (approximated: ``radius`` steps alternating the
    6- and 26-neighbourhood, 4- and 8- in 2D, whose Minkowski sum lies between the L1 and
    L-infinity balls of that radius): linear in ``radius``, where a true ball's footprint
    grows as its volume (1.6 s for radius 8 at 64³ against 0.1 s)."""
    from scipy import ndimage

    dims = values.ndim
    cube = np.ones((3,) * dims, dtype=bool)
    cross = ndimage.generate_binary_structure(dims, 1)
    steps = [cross if n % 2 == 0 else cube for n in range(radius)]
    out = values
    for footprint in steps:
        out = ndimage.grey_erosion(out, footprint=footprint, mode="nearest")
    for footprint in steps:
        out = ndimage.grey_dilation(out, footprint=footprint, mode="nearest")
    return out


def noise_level(values: np.ndarray) -> float:
    """The standard deviation of white noise in ``values``: the median absolute deviation of
    neighbour differences along the first axis over sqrt(2) (robust to edges, which are few)."""
    diff = np.diff(values.astype(np.float64), axis=0).ravel()
    if diff.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(diff - np.median(diff))) / math.sqrt(2.0))


def lesion_free(values: np.ndarray, radius: int, seed: int = 0) -> np.ndarray:
    """The baseline (module docstring): ``values`` (the scaled input on the model's grid)
    smoothed (Gaussian, sigma 1), opened by a ball of ``radius``, with Gaussian noise at the
    input's noise level added from ``seed`` and the result kept within the input's range."""
    from scipy import ndimage

    data = np.asarray(values, dtype=np.float32)
    opened = _opening(ndimage.gaussian_filter(data, 1.0), max(1, int(radius)))
    noise = np.random.default_rng(seed).normal(0.0, noise_level(data), data.shape)
    return np.clip(opened + noise, float(data.min()), float(data.max())).astype(np.float32)


def _baseline_tensor(inputs: Tensor, radius: int) -> Tensor:
    import torch

    plain = inputs[0, 0].detach().float().cpu().numpy()
    return torch.from_numpy(lesion_free(plain, radius))[None, None].to(inputs)


# --- medical.classify ---------------------------------------------------------------------------


def _module(network: nn.Module, name: str) -> nn.Module:
    modules = dict(network.named_modules())
    if name not in modules:
        raise UsageError(f"cam_layer='{name}' is not a module of the network")
    return modules[name]


def SliceMean() -> nn.Module:
    """A module giving the mean over the last axis of a (B, C, h, w, d) tensor: Grad-CAM's
    layer for a flat input, whose map lives on the image's plane. The forward hook of
    :func:`_through_plane` routes the real layer's output through it."""
    from torch import nn

    class _SliceMean(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x.mean(dim=-1)

    return _SliceMean()


def _through_plane(layer: nn.Module, plane: nn.Module) -> Any:
    """Hook ``layer`` so that its output ``out`` becomes ``plane(out)[..., None] + (out -
    out.mean(-1))``: the same values (to float rounding) flow on, and the gradient that
    reaches ``plane``'s output is the sum over d of the gradient at ``out``. Returns the
    hook's handle."""

    def hook(_module: nn.Module, _args: Any, out: Tensor) -> Tensor:
        return plane(out).unsqueeze(-1) + (out - out.mean(dim=-1, keepdim=True))

    return layer.register_forward_hook(hook)


def classify_target(
    item: Image | Volume, outputs: dict[str, Any], params: ClassifyParams, ctx: RunContext
) -> ExplainTarget:
    """The explain target of one `medical.classify` input (see the module docstring)."""
    import torch

    from vlm_core.explain.target import ExplainTarget
    from vlm_core.weights import load_model as load_trained_model
    from vlm_medical.classify import CLASSIFIER, _class_index, _classifier, resize_cube
    from vlm_medical.intensity import normalize_tensor
    from vlm_medical.segment import _as_volume

    del outputs  # the class comes from the parameters or the logits (the task's own argmax)
    device = torch.device(ctx.device)
    model = _classifier(load_trained_model(params.weights, CLASSIFIER, ctx=ctx), device)
    array, _, flat = _as_volume(item)
    preset = model.preset if params.preset == "trained" else params.preset
    size = model.size
    with torch.inference_mode(False), torch.no_grad():
        source = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)
        cube = resize_cube(normalize_tensor(source, preset)[None], size)  # (1, S, S, S)
        inputs = (cube[:, :, :, 0] if flat else cube)[None].contiguous()  # (1, 1, S, S[, S])
    network = model.network
    name = model.cam_layer if params.cam_layer == "auto" else params.cam_layer
    cam = _module(network, name)
    plane = SliceMean() if flat else None

    def logits(x: Tensor) -> Tensor:
        if plane is None:
            return network(x)
        handle = _through_plane(cam, plane)  # registered and removed under the lock
        try:
            return network(x.unsqueeze(-1).expand(*x.shape, size))
        finally:
            handle.remove()

    with torch.inference_mode(False), torch.no_grad(), model.lock:
        at_input = logits(inputs)[0]
    chosen = _class_index(model, params.explain)
    index = int(at_input.argmax()) if chosen is None else chosen
    class_name = model.class_names[index]
    grid = tuple(int(n) for n in array.shape[:2]) if flat else tuple(int(n) for n in array.shape)

    def to_background(values: np.ndarray) -> np.ndarray:
        return _onto(item, _resize(values, grid))

    radius = max(1, round(size / 6))
    return ExplainTarget(
        forward=_locked(model.lock, lambda x: logits(x)[:, index]),
        inputs=inputs,
        what=f"logit of class '{class_name}'",
        background=item,
        baseline=_baseline_tensor(inputs, radius),
        to_background=to_background,
        layer=plane if plane is not None else cam,
        batch=_batch_for(tuple(inputs.shape[2:])),
        extra={
            "explained_class": class_name,
            "class_index": index,
            "model_grid": list(inputs.shape[2:]),
            "cam_layer": name,
            "baseline": f"the input without structures narrower than {radius} voxels, noise kept",
            "preset": preset,
        },
    )


# --- medical.segment ----------------------------------------------------------------------------


def choose_region(labels: np.ndarray, explain: str, class_names: tuple[str, ...]) -> np.ndarray:
    """The (bool) region ``explain`` names in a label map: "" every labelled pixel; "N" the
    N-th connected component of all foreground labels, largest first; "NAME N" the N-th of
    class NAME — the order and connectivity (every neighbour, diagonals included) of the
    measurements table, whose row "lesion N" is ``explain=N`` for the bundled weights."""
    from scipy import ndimage

    text = explain.strip()
    if not text:
        return labels > 0
    name, _, number = text.rpartition(" ")
    if not number.isdigit() or int(number) < 1:
        raise UsageError(
            f"explain='{explain}' is not a lesion number: give N (the N-th lesion, largest "
            "first, as in the measurements table) or 'CLASS N', or leave it empty for all"
        )
    if name and name not in class_names[1:]:
        raise UsageError(f"explain='{explain}': '{name}' is not one of the segmented classes "
                         f"({', '.join(class_names[1:])})")  # fmt: skip
    mask = labels == class_names.index(name) if name else labels > 0
    components, count = ndimage.label(mask, structure=np.ones((3,) * labels.ndim, dtype=bool))
    rank = int(number)
    if rank > count:
        raise UsageError(f"explain='{explain}': the mask holds {count} lesion(s)")
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
    index = int(np.argsort(-sizes, kind="stable")[rank - 1])
    return components == index + 1


def _crop(region: np.ndarray) -> tuple[slice, ...]:
    """The whole grid when one pass takes it, else the region's box widened by the margin."""
    dims = region.ndim
    if math.prod(region.shape) <= MAX_GRID[dims]:
        return tuple(slice(0, n) for n in region.shape)
    coords = np.argwhere(region)
    low = np.maximum(coords.min(axis=0) - MARGIN[dims], 0)
    high = np.minimum(coords.max(axis=0) + 1 + MARGIN[dims], region.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
    if math.prod(b.stop - b.start for b in box) > MAX_GRID[dims]:
        shape = "x".join(str(b.stop - b.start) for b in box)
        raise UsageError(
            f"the region to explain spans {shape} with its context, more than one pass takes "
            f"({MAX_GRID[dims]} {'pixels' if dims == 2 else 'voxels'}); choose one lesion "
            "with explain=N"
        )
    return box


def _stride(arch: dict[str, Any]) -> int:
    """The multiple a side must be for the network: the UNet's total stride, SwinUNETR's 32."""
    if arch.get("name") == "swinunetr":
        return 32
    return max(1, math.prod(int(s) for s in arch.get("strides", [2, 2, 2])))


def _padded(network: nn.Module, x: Tensor, multiple: int) -> Tensor:
    """``network`` on ``x`` (B, C, *grid) zero-padded symmetrically to sides that are
    multiples of ``multiple`` (at least 16), its output cut back to the grid."""
    import torch.nn.functional as F

    grid = [int(n) for n in x.shape[2:]]
    target = [max(16, -(-n // multiple) * multiple) for n in grid]
    before = [(t - n) // 2 for n, t in zip(grid, target, strict=True)]
    pads: list[int] = []
    for n, t, b in reversed(list(zip(grid, target, before, strict=True))):
        pads += [b, t - n - b]
    out = network(F.pad(x, pads) if any(pads) else x)
    cut = tuple(slice(b, b + n) for b, n in zip(before, grid, strict=True))
    return out[(slice(None), slice(None), *cut)]


def _lesion_radius(foreground: np.ndarray) -> int:
    """The radius of the widest predicted lesion: the largest distance from a lesion pixel to
    the nearest background pixel (Euclidean), rounded up."""
    from scipy import ndimage

    if not foreground.any():
        return 0
    return math.ceil(float(ndimage.distance_transform_edt(foreground).max()))


def _segment_layer(network: nn.Module, arch: dict[str, Any]) -> nn.Module | None:
    names = {"unet": "model.1", "swinunetr": "decoder1"}
    modules = dict(network.named_modules())
    return modules.get(names.get(str(arch.get("name")), ""))


def segment_target(
    item: Image | Volume, outputs: dict[str, Any], params: SegmentParams, ctx: RunContext
) -> ExplainTarget:
    """The explain target of one `medical.segment` input (see the module docstring)."""
    import torch

    from vlm_core.explain.target import ExplainTarget
    from vlm_core.types import Image, Mask
    from vlm_core.weights import load_model as load_trained_model
    from vlm_medical.intensity import normalize_tensor
    from vlm_medical.segment import SEGMENTERS, _as_volume, _segmenter

    if params.spacing_mm > 0 or params.orientation != "native":
        raise UsageError("explaining a resampled segmentation (spacing_mm, orientation) is not "
                         "supported: run with spacing_mm=0 and orientation=native")  # fmt: skip
    mask = outputs.get("mask")
    if not isinstance(mask, Mask):
        raise UsageError("medical.segment gave no mask to explain")
    array, _, flat = _as_volume(item)
    labels = mask.labels.T if isinstance(item, Image) else mask.labels
    if flat:
        labels = labels if labels.ndim == 2 else labels[:, :, 0]
    region = choose_region(np.asarray(labels), params.explain, mask.class_names)
    if not region.any():
        raise UsageError("nothing segmented to explain")
    dims = 3 if params.weights or not flat else 2  # the task's own choice of network
    model = _segmenter(load_trained_model(params.weights, SEGMENTERS[dims], ctx=ctx))
    device = torch.device(ctx.device)
    network, arch = model.network, dict(model.card["architecture"])
    box = _crop(region)
    with torch.inference_mode(False), torch.no_grad():
        source = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)
        scaled = normalize_tensor(source, params.preset)  # over the whole input, as the task
        grid_data = scaled[:, :, 0] if flat else scaled
        inputs = grid_data[box][None, None].contiguous()
    grid = tuple(int(n) for n in inputs.shape[2:])
    classes = len(model.class_names)
    # the weight of each class logit at each pixel: +1 for the region pixel's class, -1 for
    # the background; the explained number is the weights' dot product with the logits
    cut = np.where(region[box], np.asarray(labels)[box].astype(np.int64), 0)
    weights = np.zeros((classes, *grid), np.float32)
    inside = cut > 0
    for c in range(1, classes):
        weights[c][cut == c] = 1.0
    weights[0][inside] = -1.0
    weight = torch.from_numpy(weights)[None].to(device)
    multiple = _stride(arch)
    direct = model.spatial_dims == len(grid)
    depth = min(params.roi, 16)

    def logits(x: Tensor) -> Tensor:
        if direct:
            return _padded(network, x, multiple)
        if model.spatial_dims == 3:  # a 3D network on a slice: a slab of copies, its middle
            out = _padded(network, x.unsqueeze(-1).expand(*x.shape, depth), multiple)
            return out[..., depth // 2]
        b, c, i, j, k = x.shape  # a 2D network on a volume: its slices as a batch
        out = _padded(network, x.permute(0, 4, 1, 2, 3).reshape(b * k, c, i, j), multiple)
        return out.reshape(b, k, -1, i, j).permute(0, 2, 3, 4, 1)

    def forward(x: Tensor) -> Tensor:
        out = logits(x).float()
        return (out * weight).flatten(1).sum(dim=1)

    full = tuple(int(n) for n in region.shape)

    def to_background(values: np.ndarray) -> np.ndarray:
        placed = np.zeros(full, np.float32)
        placed[box] = np.asarray(values, dtype=np.float32)
        return _onto(item, placed)

    pixels = int(region.sum())
    radius = _lesion_radius(np.asarray(labels)[box] > 0) + 1
    return ExplainTarget(
        forward=_locked(model.trained.lock if model.trained is not None else _NO_LOCK, forward),
        inputs=inputs,
        what=(
            f"summed logit margin (lesion minus background) over "
            f"{'lesion ' + params.explain if params.explain else 'every lesion'} "
            f"({pixels} {'pixels' if len(grid) == 2 else 'voxels'})"
        ),
        background=item,
        baseline=_baseline_tensor(inputs, radius),
        to_background=to_background,
        layer=_segment_layer(network, arch) if direct else None,
        batch=_batch_for(grid),
        extra={
            "region": params.explain or "all",
            "region_voxels": pixels,
            "crop": [[b.start, b.stop] for b in box],
            "model_grid": list(grid),
            "baseline": f"the input without structures narrower than {radius} "
            f"{'pixels' if len(grid) == 2 else 'voxels'}, noise kept",
            "preset": params.preset,
        },
    )


class _NullLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


_NO_LOCK = _NullLock()
