"""The explain engine: one attribution method on one :class:`ExplainTarget`, over captum.

Every method explains the same number, ``target.forward`` of the input:

- ``gradcam``: Grad-CAM (Selvaraju et al. 2017) at ``target.layer``, through the core's own
  Grad-CAM (:func:`vlm_core.explain.gradcam.grad_cam_of`), one forward and one backward pass;
- ``rollout``: attention rollout of ``target.vit`` (:mod:`vlm_core.explain.rollout`), ViTs only;
- ``integrated_gradients``: captum's ``IntegratedGradients`` from ``target.baseline``
  (Gauss-Legendre), with its completeness error: ``n_samples`` steps when given; by default 64,
  doubled while the error is over 1% of f(input) - f(baseline), up to 512 (a ReLU network's
  integrand is piecewise constant, so a fixed step count is complete on some inputs only);
- ``occlusion``: captum's ``Occlusion``, a window of 1/8 of each side (1/4 for volumes) sliding
  at half its size, filled with the baseline;
- ``kernel_shap``: captum's ``KernelShap`` over SLIC superpixels (scikit-image; 64 segments),
  ``n_samples`` coalitions (default 256);
- ``lime``: captum's ``Lime`` over the same superpixels, ``n_samples`` perturbations, a ridge
  regression as the interpretable model (the ``lime`` package's own default, ``Ridge(alpha=1)``;
  captum's default lasso zeroes most superpixels at these sample counts).

Perturbation methods go through ``target.forward`` ``target.batch`` inputs at a time and
report progress per batch. captum, scikit-image and scikit-learn are the ``explain`` extra
(``pip install 'vlm-core[explain]'``); Grad-CAM and rollout need none of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vlm_core.errors import UsageError
from vlm_core.explain.target import METHODS, PERTURBATION_METHODS, ExplainTarget

__all__ = [
    "DEFAULT_SAMPLES",
    "SUPERPIXELS",
    "RawAttribution",
    "attribute",
    "explain_target",
    "superpixels",
]

#: ``n_samples`` when the user gives none: Integrated Gradients' steps, SHAP's and LIME's
#: perturbed samples.
DEFAULT_SAMPLES = {"integrated_gradients": 64, "kernel_shap": 256, "lime": 256}

#: Integrated Gradients' completeness goal (|sum of attributions - (f(x) - f(baseline))| relative
#: to |f(x) - f(baseline)|) and the most steps the default doubles to while it is missed
COMPLETENESS_GOAL = 0.01
MAX_IG_STEPS = 512

#: SLIC segments asked for (scikit-image returns about as many).
SUPERPIXELS = 64

Progress = Callable[[float, str], None]


@dataclass(frozen=True, eq=False)
class RawAttribution:
    """A method's answer on the model's input grid: ``values`` (H, W) or (D, H, W), signed,
    channels summed, float64; ``score`` the explained number at the input; ``details`` what
    the method reports (forward passes, seconds, completeness)."""

    values: Tensor
    score: float
    details: dict[str, Any] = field(default_factory=dict)


def _need_captum() -> Any:
    try:
        import captum.attr
    except ImportError:
        raise UsageError(
            "this explainer needs captum, scikit-image and scikit-learn: "
            "pip install 'vlm-core[explain]'"
        ) from None
    return captum.attr


def _baseline(target: ExplainTarget) -> Tensor:
    """The baseline as a tensor shaped like the input."""
    if isinstance(target.baseline, Tensor):
        return target.baseline.to(target.inputs).expand_as(target.inputs)
    return torch.full_like(target.inputs, float(target.baseline))


class _Counted:
    """``forward`` counting its inputs and reporting progress against an expected total."""

    def __init__(
        self,
        forward: Callable[[Tensor], Tensor],
        expected: int,
        progress: Progress | None,
        method: str,
    ) -> None:
        self.forward, self.expected = forward, expected
        self.progress, self.method = progress, method
        self.inputs = 0

    def __call__(self, x: Tensor) -> Tensor:
        out = self.forward(x)
        self.inputs += int(x.shape[0])
        if self.progress is not None and self.expected > 0:
            done = min(self.inputs / self.expected, 1.0)
            self.progress(done, f"{self.method}: {self.inputs} of ~{self.expected} passes")
        return out


def superpixels(inputs: Tensor, segments: int = SUPERPIXELS) -> Tensor:
    """SLIC superpixels of one input (1, C, *grid) as a (1, 1, *grid) long tensor of segment ids
    0..n-1: scikit-image's ``slic`` on the input scaled to [0, 1], in Lab for 3-channel images,
    on intensity for 1-channel images and for volumes; a regular grid of about as many cells
    where SLIC finds fewer than a quarter of them (noise-like inputs)."""
    try:
        from skimage.segmentation import slic
    except ImportError:
        _need_captum()  # the same install line
        raise
    array = inputs[0].detach().float().cpu().numpy()
    low, high = float(array.min()), float(array.max())
    array = (array - low) / max(high - low, 1e-12)
    if array.shape[0] == 3 and array.ndim == 3:
        labels = slic(np.moveaxis(array, 0, -1), n_segments=segments, compactness=10.0,
                      start_label=0, channel_axis=-1)  # fmt: skip
    else:
        labels = slic(array.mean(axis=0), n_segments=segments, compactness=0.1, start_label=0,
                      channel_axis=None)  # fmt: skip
    _, dense = np.unique(labels, return_inverse=True)  # ids 0..n-1 with no gaps
    if dense.max() + 1 < max(2, segments // 4):  # noise-like input: SLIC merges it into few
        from vlm_core.explain.faithfulness import cells

        per_side = max(2, round(segments ** (1 / labels.ndim)))
        dense = cells(labels.shape, per_side)
    mask = torch.from_numpy(dense.reshape(labels.shape).astype(np.int64))
    return mask[None, None].to(inputs.device)


def _occlusion_window(grid: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    parts = 8 if len(grid) == 2 else 4
    window = tuple(max(1, round(s / parts)) for s in grid)
    stride = tuple(max(1, w // 2) for w in window)
    return window, stride


def _occlusion_passes(grid: tuple[int, ...]) -> int:
    window, stride = _occlusion_window(grid)
    return math.prod((s - w) // t + 1 + (1 if (s - w) % t else 0) for s, w, t in
                     zip(grid, window, stride, strict=True))  # fmt: skip


def attribute(
    target: ExplainTarget,
    method: str,
    n_samples: int | None = None,
    progress: Progress | None = None,
) -> RawAttribution:
    """Run ``method`` on ``target``; see the module docstring for each method's settings."""
    if method not in METHODS:
        raise UsageError(f"unknown explainer {method!r}; choose one of {', '.join(METHODS)}")
    grid = tuple(int(n) for n in target.inputs.shape[2:])
    started = time.perf_counter()
    if method not in PERTURBATION_METHODS:
        _check_gradients(target, method)
    with torch.no_grad():
        score = float(target.forward(target.inputs)[0])
    if method == "gradcam":
        raw = _gradcam(target, grid)
    elif method == "rollout":
        raw = _rollout(target, grid)
    else:
        raw = _captum(target, method, n_samples, grid, progress)
    details = dict(raw.details)
    details["seconds"] = round(time.perf_counter() - started, 4)
    return RawAttribution(raw.values, score, details)


def _check_gradients(target: ExplainTarget, method: str) -> None:
    """Refuse a gradient method on a model that gives no gradients (an exported network,
    run by onnxruntime or as a ``torch.export`` program), naming the methods that work."""
    x = target.inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = target.forward(x)
    if not out.requires_grad:
        raise UsageError(
            f"explainer '{method}' needs the network's gradients, which this model does not "
            "give (an exported network runs without them); use one of: "
            + ", ".join(m for m in METHODS if m in PERTURBATION_METHODS)
        )


def _resize(coarse: Tensor, grid: tuple[int, ...]) -> Tensor:
    """A coarse map resized to the input grid (bilinear / trilinear), not rescaled."""
    if tuple(coarse.shape) == grid:
        return coarse.double()
    mode = "bilinear" if len(grid) == 2 else "trilinear"
    return F.interpolate(coarse.double()[None, None], size=grid, mode=mode,
                         align_corners=False)[0, 0]  # fmt: skip


def _gradcam(target: ExplainTarget, grid: tuple[int, ...]) -> RawAttribution:
    from vlm_core.explain.gradcam import grad_cam_of

    if target.layer is None:
        raise UsageError("this input has no layer for Grad-CAM")
    coarse, _ = grad_cam_of(target.forward, target.layer, target.inputs)
    return RawAttribution(
        _resize(coarse, grid),
        0.0,
        {"forward_passes": 1, "backward_passes": 1, "layer_grid": list(coarse.shape)},
    )


def _rollout(target: ExplainTarget, grid: tuple[int, ...]) -> RawAttribution:
    from vlm_core.explain.rollout import run_rollout

    if target.vit is None:
        raise UsageError("attention rollout needs a ViT; this input's model has none")
    saliency = run_rollout(target.vit, target.inputs)
    return RawAttribution(_resize(saliency.coarse, grid), 0.0, {"forward_passes": 1})


def _captum(
    target: ExplainTarget,
    method: str,
    n_samples: int | None,
    grid: tuple[int, ...],
    progress: Progress | None,
) -> RawAttribution:
    attr = _need_captum()
    inputs, baseline = target.inputs.detach(), _baseline(target)
    batch = max(1, int(target.batch))
    details: dict[str, Any] = {}
    if method == "integrated_gradients":
        counted = _Counted(target.forward, n_samples or DEFAULT_SAMPLES[method], progress, method)
        with torch.no_grad():
            change = float(target.forward(inputs)[0] - target.forward(baseline)[0])
        steps = n_samples or DEFAULT_SAMPLES[method]
        while True:
            with torch.inference_mode(False), torch.enable_grad():
                values, delta = attr.IntegratedGradients(counted).attribute(
                    inputs, baselines=baseline, n_steps=steps, internal_batch_size=batch,
                    return_convergence_delta=True,
                )  # fmt: skip
            delta_value = float(delta.reshape(-1)[0])
            relative = abs(delta_value) / max(abs(change), 1e-12)
            # the user's steps are kept; the default doubles until complete within 1%
            if n_samples or relative <= COMPLETENESS_GOAL or steps >= MAX_IG_STEPS:
                break
            steps = min(steps * 2, MAX_IG_STEPS)
            counted.expected += steps
        details.update(
            steps=steps,
            output_minus_baseline=change,
            completeness_error=delta_value,
            completeness_relative=relative,
        )
    elif method == "occlusion":
        window, stride = _occlusion_window(grid)
        channels = int(inputs.shape[1])
        counted = _Counted(target.forward, _occlusion_passes(grid), progress, method)
        with torch.no_grad():
            values = attr.Occlusion(counted).attribute(
                inputs, sliding_window_shapes=(channels, *window), strides=(channels, *stride),
                baselines=baseline, perturbations_per_eval=batch,
            )  # fmt: skip
        details.update(window=list(window), stride=list(stride))
    else:
        samples = n_samples or DEFAULT_SAMPLES[method]
        mask = superpixels(inputs)
        counted = _Counted(target.forward, samples, progress, method)
        if method == "kernel_shap":
            explainer = attr.KernelShap(counted)
        else:
            from captum._utils.models.linear_model import SkLearnRidge

            explainer = attr.Lime(counted, interpretable_model=SkLearnRidge(alpha=1.0))
        with torch.no_grad():
            values = explainer.attribute(
                inputs, baselines=baseline, feature_mask=mask, n_samples=samples,
                perturbations_per_eval=batch,
            )  # fmt: skip
        details.update(samples=samples, superpixels=int(mask.max()) + 1)
    details["forward_passes"] = counted.inputs
    summed = values.detach()[0].double().sum(dim=0)
    return RawAttribution(summed, 0.0, details)


def explain_target(
    target: ExplainTarget,
    method: str,
    *,
    n_samples: int | None = None,
    score_faithfulness: bool = False,
    progress: Progress | None = None,
) -> Any:
    """``method`` on ``target`` as the core's output kind: an
    :class:`~vlm_core.types.Attribution` whose heat (the positive evidence, scaled to [0, 1])
    lies on the target's background, with the faithfulness score when asked for."""
    from vlm_core.explain._common import to_heat
    from vlm_core.explain.faithfulness import faithfulness
    from vlm_core.types import Attribution, Image

    raw = attribute(target, method, n_samples, progress)
    positive = raw.values.clamp(min=0)
    background = target.background
    if target.to_background is not None:
        heat = np.asarray(target.to_background(to_heat(positive, tuple(positive.shape))))
        span = float(heat.max() - heat.min()) if heat.size else 0.0
        heat = ((heat - heat.min()) / span if span > 0 else np.zeros_like(heat)).astype(np.float32)
    else:
        grid = (
            (background.height, background.width)
            if isinstance(background, Image)
            else tuple(background.array.shape[:3])
        )
        heat = to_heat(positive, grid)
    scores: dict[str, Any] = {}
    if score_faithfulness:
        if progress is not None:
            progress(1.0, "faithfulness: deletion and insertion curves")
        scores = faithfulness(target, raw.values)
    return Attribution(
        heat=heat,
        values=raw.values.to(torch.float32).cpu().numpy(),
        background=background,
        method=method,
        target=target.what,
        score=raw.score,
        faithfulness=scores,
        details={**raw.details, **(target.extra or {})},
    )
