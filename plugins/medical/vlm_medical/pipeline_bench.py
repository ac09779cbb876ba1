"""`medical.classify` and `medical.segment` in `vlm bench --pipeline`: generated volumes as
the NIfTI files a user would have, against each task's network passes alone on the decoded,
scaled volumes (:data:`CLASSIFY_NOTE`, :data:`SEGMENT_NOTE`).

The inputs come from the generators the bundled weights were trained on, from seeds no
training, fitting or test uses (:data:`SEED_OFFSET` is added to the bench's seed): 32³
"lesion" and "normal" volumes alternating (:mod:`vlm_medical.synthetic_classes`) for
classification, 64³ lesion volumes, the bundled sample's size (:mod:`vlm_medical.synthetic`),
for segmentation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlm_core.bench.pipeline import PipelineCase

#: Added to the bench's seed (1234 by default): 9234 and up are none of the seeds the weights,
#: the familiarity models, the calibration or the tests use (0, 2000-4502; README).
SEED_OFFSET = 8000

CLASSIFY_NOTE = (
    "the DenseNet's Grad-CAM forward and backward pass per batch (the default outputs' "
    "probabilities and heat maps need both) and the softmax, on volumes already scaled and "
    "resized to the network's cube; not the familiarity tap"
)
SEGMENT_NOTE = (
    "the 3D UNet through MONAI's sliding-window inference at the run's roi, sw_batch, overlap "
    "and blending, and the labels (the argmax), one volume at a time as the task runs them, "
    "on volumes already scaled; not the familiarity tap, post-processing or measurements"
)


def _write(folder: Path, count: int, seed: int, make: Callable[[Any, int], Any]) -> None:
    import nibabel as nib
    import numpy as np

    for i in range(count):
        image = make(np.random.RandomState(seed + SEED_OFFSET + i), i)
        nib.save(nib.Nifti1Image(image, np.eye(4)), folder / f"case-{i:05d}.nii.gz")


def make_classify_inputs(folder: Path, count: int, seed: int) -> None:
    """``count`` 32³ volumes, "lesion" and "normal" alternating."""
    from vlm_medical.synthetic_classes import make_case

    _write(folder, count, seed, lambda rng, i: make_case(rng, lesion=i % 2 == 0)[0])


def make_segment_inputs(folder: Path, count: int, seed: int) -> None:
    """``count`` 64³ lesion volumes, the bundled sample's size."""
    from vlm_medical.synthetic import make_volume

    _write(folder, count, seed, lambda rng, _i: make_volume(rng)[0])


def _arrays(files: list[Path]) -> list[Any]:
    """The files decoded as a run decodes them (the core's reader, then the task's view)."""
    from vlm_core.io import load_input, probe_input
    from vlm_core.kinds import Kind
    from vlm_medical.segment import _as_volume

    return [_as_volume(load_input(probe_input(f, (Kind.VOLUME, Kind.IMAGE))))[0] for f in files]


def classify_model(files: list[Path], params: Any, batch: int, device: str) -> Callable[[], Any]:
    import torch

    from vlm_core.explain.gradcam import run_grad_cam_batch
    from vlm_medical.classify import _class_index, load_model, prepare

    where = torch.device(device)
    model = load_model(params.weights, where)
    preset = model.preset if params.preset == "trained" else params.preset
    cubes = [prepare(torch.from_numpy(a).to(where), preset, model.size) for a in _arrays(files)]
    batches = [torch.stack(cubes[i : i + batch]) for i in range(0, len(cubes), batch)]
    layer = model.cam_layer if params.cam_layer == "auto" else params.cam_layer
    explain = _class_index(model, params.explain)

    def run() -> None:
        for pixels in batches:
            for s in run_grad_cam_batch(model.network, pixels, explain, layer):
                (s.logits.double() / model.temperature).softmax(0)

    return run


def segment_model(files: list[Path], params: Any, batch: int, device: str) -> Callable[[], Any]:
    del batch  # the task runs its volumes one at a time, whatever the batch
    import torch

    from vlm_medical.intensity import normalize_tensor
    from vlm_medical.segment import labels_of, load_model, window_logits

    where = torch.device(device)
    model = load_model(params.weights, where, dims=3)
    volumes = [
        normalize_tensor(torch.from_numpy(a).to(where), params.preset)[None, None]
        for a in _arrays(files)
    ]
    amp = where.type == "cuda"

    def run() -> None:
        with torch.inference_mode(), torch.autocast(where.type, enabled=amp, dtype=torch.bfloat16):
            for volume in volumes:
                labels_of(window_logits(model.network, volume, params)).cpu()

    return run


def classify_case() -> PipelineCase:
    return PipelineCase(make_classify_inputs, classify_model, note=CLASSIFY_NOTE)


def segment_case() -> PipelineCase:
    return PipelineCase(make_segment_inputs, segment_model, note=SEGMENT_NOTE)
