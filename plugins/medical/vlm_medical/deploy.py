"""`vlm export` and `vlm compress` for the medical tasks: what their networks take and give,
and the held-out generated data their parity is measured on.

- ``medical.segment``: the UNet (3D by default; a 2D one when ``--weights`` names 2D weights:
  the card's ``spatial_dims`` decides) maps a window ``(B, 1, i, j[, k])`` of scaled
  intensities to class logits of the same size. The batch and every side are dynamic (a side:
  16 to 512 voxels, a multiple of the UNet's total stride, 8 for the bundled ones), so one
  file takes every window the run's sliding window cuts. Intensity scaling, the sliding
  window and its blending, the argmax, post-processing and the measurements stay in Python.
- ``medical.classify``: the DenseNet maps ``(B, 1, s, s, s)`` cubes (``s`` from the card, 32
  for the bundled weights) to class logits; the batch is dynamic. Scaling, the resize to the
  cube and the softmax with the weights' temperature stay in Python; Grad-CAM needs the torch
  weights (gradients), so a run of the exported file gives the class and probabilities only.

Held-out data: :mod:`vlm_medical.synthetic` (segment) and :mod:`vlm_medical.synthetic_classes`
(classify) drawn from the seed the core passes (``PARITY_SEED`` 7,100,000, calibration
7,200,000), far from every seed the bundled weights and their tests used (0-6100, see each
``weights/*/TRAINING.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlm_core.deploy.spec import Axis, DeploySpec, ParityCases, TensorSpec

if TYPE_CHECKING:
    import numpy as np
    import torch

    from vlm_core.deploy.spec import Network
    from vlm_core.tasks import TaskParams
    from vlm_core.weights import LoadedModel

#: held-out examples the segment metric (mean Dice) is computed on: 64³ volumes for a 3D
#: network, 128² images for a 2D one
SEGMENT_VOLUMES = 8
SEGMENT_IMAGES = 24
#: held-out 32³ volumes (half "lesion", half "normal") the classify metric (accuracy) uses
CLASSIFY_VOLUMES = 64
#: a window side: the run's smallest (16) to its largest ``roi`` (512)
SIDE_MIN, SIDE_MAX = 16, 512
#: the most windows (segment) or volumes (classify) one call passes
BATCH = Axis("batch", 1, 256)

SEGMENT_NOTE = (
    "intensity scaling, the sliding window and its blending, the argmax, post-processing and "
    "measurements run in Python"
)
CLASSIFY_NOTE = (
    "intensity scaling, the resize to the network's cube and the softmax (with the weights' "
    "temperature) run in Python; a run of the exported file gives the class and "
    "probabilities without the Grad-CAM heat map, which needs the torch weights"
)


# --- medical.segment ----------------------------------------------------------------------------


def unet_stride(arch: Mapping[str, Any]) -> int:
    """What every side of a window must be a multiple of: a UNet's total stride (the product
    of its strides; MONAI's UNet concatenates each level's skip with its upsampled output,
    which only fit when every side halves exactly), 32 for SwinUNETR."""
    if arch.get("name") == "swinunetr":
        return 32
    total = 1
    for stride in arch.get("strides") or ():
        total *= int(stride)
    return total


def window_inputs(loaded: LoadedModel) -> tuple[TensorSpec, ...]:
    """The UNet's window as the exported input: the batch, and one side per spatial axis
    (``i``, ``j``, and ``k`` for a 3D network), each a multiple of the network's stride."""
    from vlm_medical.networks import spatial_dims

    arch = dict(loaded.card.get("architecture") or {})
    multiple = unet_stride(arch)
    sides = {
        2 + n: Axis(name, SIDE_MIN, SIDE_MAX, multiple)
        for n, name in enumerate("ijk"[: spatial_dims(arch)])
    }
    return (TensorSpec("image", {0: BATCH, **sides}),)


def _load_segmenter(weights: str, params: TaskParams) -> LoadedModel:
    """The weights as `vlm run medical.segment -p weights=...` loads them (so that the run
    takes the export), on the CPU; empty: the bundled 3D UNet."""
    from vlm_core.weights import load_model
    from vlm_medical.segment import SEGMENTERS

    del params  # the network does not depend on the run's parameters
    return load_model(weights, SEGMENTERS[3], device="cpu")


def _segment_example(loaded: LoadedModel) -> tuple[torch.Tensor, ...]:
    """Two windows of the side a run of these weights uses (its ``roi``, from their card
    unless set), rounded to the stride."""
    import torch

    from vlm_medical.networks import spatial_dims
    from vlm_medical.params import SegmentParams

    arch = loaded.card["architecture"]
    multiple = unet_stride(arch)
    side = max(multiple, loaded.run_params(SegmentParams()).roi // multiple * multiple)
    return (torch.zeros((2, 1) + (side,) * spatial_dims(arch)),)


#: the network input shapes of the parity cases, in turn: (batch, sides...) as the sliding
#: window cuts them (a whole window batch, the last partial one, a window cut to a small
#: volume)
WINDOWS_3D = ((2, 64, 64, 64), (1, 48, 48, 48), (1, 64, 48, 32), (4, 32, 32, 32))
WINDOWS_2D = ((4, 64, 64), (1, 128, 128), (2, 64, 48), (3, 32, 32))


def _held_out(rng: np.random.RandomState, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """One held-out ``(image, label)``: a 64³ volume or a 128² image."""
    from vlm_medical.synthetic import make_image, make_volume

    return make_volume(rng) if dims == 3 else make_image(rng)


def _windows(
    rng: np.random.RandomState, dims: int, count: int, multiple: int
) -> list[tuple[torch.Tensor, ...]]:
    """``count`` window batches of held-out data, scaled as the run scales (``auto``), each
    window cut at a random place of a volume (image) of its own."""
    import numpy as np
    import torch

    from vlm_medical.intensity import normalize

    shapes = WINDOWS_3D if dims == 3 else WINDOWS_2D
    batches = []
    for n in range(count):
        batch, *sides = shapes[n % len(shapes)]
        sides = [max(multiple, s // multiple * multiple) for s in sides]
        windows = []
        for _ in range(batch):
            image = normalize(_held_out(rng, dims)[0], "auto")
            cut = tuple(
                slice(start, start + side)
                for size, side in zip(image.shape, sides, strict=True)
                for start in [int(rng.randint(0, size - side + 1))]
            )
            windows.append(np.ascontiguousarray(image[cut])[None])
        batches.append((torch.from_numpy(np.stack(windows)),))
    return batches


def _segment_cases(loaded: LoadedModel, count: int, seed: int) -> ParityCases:
    """``count`` held-out window batches, and the metric: mean Dice of the lesion label over
    :data:`SEGMENT_VOLUMES` held-out 64³ volumes (3D network) or :data:`SEGMENT_IMAGES` 128²
    images (2D) through the run's own inference (default parameters: scaling, sliding window,
    argmax, post-processing) with the network given."""
    import dataclasses

    import numpy as np
    import torch

    from vlm_medical.measure import dice_score, postprocess
    from vlm_medical.networks import spatial_dims
    from vlm_medical.params import SegmentParams
    from vlm_medical.segment import _segmenter, segment_array

    arch = loaded.card["architecture"]
    dims = spatial_dims(arch)
    rng = np.random.RandomState(seed)
    held = [_held_out(rng, dims) for _ in range(SEGMENT_VOLUMES if dims == 3 else SEGMENT_IMAGES)]
    if dims == 2:  # as the run reads an image: one slice
        held = [(image[:, :, None], label[:, :, None]) for image, label in held]
    inputs = _windows(rng, dims, count, unet_stride(arch))
    model = _segmenter(loaded)
    params = loaded.run_params(SegmentParams())  # a run of these weights at its defaults

    def mean_dice(network: Network) -> float:
        candidate = dataclasses.replace(model, network=network, trained=None)
        scores = []
        for image, truth in held:
            labels = segment_array(
                candidate, image, np.eye(4), params, torch.device("cpu"), flat=dims == 2
            )
            labels = postprocess(
                labels,
                largest_only=params.largest_only,
                fill_holes=params.fill_holes,
                min_voxels=params.min_voxels,
            )
            scores.append(dice_score(labels, truth))
        return float(np.mean(scores))

    return ParityCases(
        inputs=inputs,
        metric=mean_dice,
        metric_name="mean Dice (lesion)",
        metric_count=len(held),
    )


def _prune_segmenter(loaded: LoadedModel, amount: float, out: Path, seed: int) -> Path:
    """`vlm compress medical.segment --method prune`: :func:`vlm_medical.prune.prune_segmenter`
    (imported here: it needs torch-pruning, and the spec must stay light)."""
    from vlm_medical.prune import prune_segmenter

    return prune_segmenter(loaded, amount, out, seed)


def segment_spec() -> DeploySpec:
    """``medical.segment``'s :class:`~vlm_core.deploy.spec.DeploySpec` (``TaskSpec.deploy``)."""
    return DeploySpec(
        load=_load_segmenter,
        inputs=window_inputs,
        outputs=("logits",),
        example=_segment_example,
        cases=_segment_cases,
        note=SEGMENT_NOTE,
        prune=_prune_segmenter,
    )


# --- medical.classify ---------------------------------------------------------------------------


def _load_classifier(weights: str, params: TaskParams) -> LoadedModel:
    from vlm_core.weights import load_model
    from vlm_medical.classify import CLASSIFIER

    del params
    return load_model(weights, CLASSIFIER, device="cpu")


def _cube(loaded: LoadedModel) -> int:
    return int((loaded.card.get("preprocessing") or {}).get("size", 32))


def _classify_example(loaded: LoadedModel) -> tuple[torch.Tensor, ...]:
    """Two cubes of the card's size (the run's network input)."""
    import torch

    return (torch.zeros((2, 1) + (_cube(loaded),) * 3),)


#: the batch sizes of the parity cases, in turn (the run's batch is up to 8 volumes)
CLASSIFY_BATCHES = (8, 1, 3, 2)


def _classify_cases(loaded: LoadedModel, count: int, seed: int) -> ParityCases:
    """``count`` held-out cube batches, prepared as the run prepares them, and the metric:
    accuracy over :data:`CLASSIFY_VOLUMES` held-out volumes (alternately "lesion" and
    "normal") through the run's own scaling, resize and softmax with the network given. Weights
    whose classes are not the synthetic "lesion" and "normal" get no metric (outputs only)."""
    import dataclasses

    import numpy as np
    import torch

    from vlm_medical.classify import _classifier, network_input, probabilities
    from vlm_medical.classify_params import ClassifyParams
    from vlm_medical.synthetic_classes import CLASSES, make_case

    cpu = torch.device("cpu")
    model = _classifier(loaded, cpu)
    params = ClassifyParams()
    rng = np.random.RandomState(seed)
    held = [make_case(rng, lesion=n % 2 == 0) for n in range(CLASSIFY_VOLUMES)]
    truth = [CLASSES[n % 2] for n in range(CLASSIFY_VOLUMES)]
    inputs = []
    for n in range(count):
        size = CLASSIFY_BATCHES[n % len(CLASSIFY_BATCHES)]
        arrays = [make_case(rng, lesion=bool(rng.randint(2)))[0] for _ in range(size)]
        inputs.append((network_input(model, arrays, params, cpu)[1],))

    def accuracy(network: Network) -> float:
        candidate = dataclasses.replace(model, network=network, trained=None)
        right = 0
        for start in range(0, len(held), 8):  # the run's batch
            arrays = [image for image, _ in held[start : start + 8]]
            probs = probabilities(candidate, arrays, params, cpu)
            names = [model.class_names[int(i)] for i in probs.argmax(1)]
            right += sum(a == b for a, b in zip(names, truth[start : start + 8], strict=True))
        return right / len(held)

    known = set(CLASSES) <= set(model.class_names)
    return ParityCases(
        inputs=inputs,
        metric=accuracy if known else None,
        metric_name="accuracy (lesion vs normal)" if known else "",
        metric_count=len(held) if known else 0,
    )


def _distill_classifier(loaded: LoadedModel, out: Path, seed: int) -> Path:
    """`vlm compress medical.classify --method distill`:
    :func:`vlm_medical.distill.distill_classifier` (imported here: the spec must stay light)."""
    from vlm_medical.distill import distill_classifier

    return distill_classifier(loaded, out, seed)


def classify_spec() -> DeploySpec:
    """``medical.classify``'s :class:`~vlm_core.deploy.spec.DeploySpec` (``TaskSpec.deploy``)."""
    return DeploySpec(
        load=_load_classifier,
        inputs=(TensorSpec("image", {0: BATCH}),),
        outputs=("logits",),
        example=_classify_example,
        cases=_classify_cases,
        note=CLASSIFY_NOTE,
        distill=_distill_classifier,
    )
