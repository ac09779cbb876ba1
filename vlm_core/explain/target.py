"""What a task hands the explain engine: the scalar to explain, the input, and what "absent" is.

A task that can be explained declares ``TaskSpec.explain`` (a function, or ``"module:function"``)
and the methods it supports (``TaskSpec.explainers``). For each input the run explains, the core
calls it as ``explain(item, outputs, params, ctx)`` — the input, the task's own outputs for it
(the boxes to choose from, the mask whose region is summed), the task's validated parameters
(``explain`` among them: which class, box or region) and the run context — and gets back an
:class:`ExplainTarget`. The engine (:mod:`vlm_core.explain.attribution`) then runs the chosen
method on ``target.forward`` and the optional faithfulness score
(:mod:`vlm_core.explain.faithfulness`) on the same function, so every method explains the same
number and the deletion curve measures that number.

The options every explainable task takes (``-p explainer=... -p explain_score=true
-p n_samples=N``) are the core's, validated by :class:`ExplainOptions` before a run starts; a
task's own parameter model never declares them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor, nn

    from vlm_core.types import Image, Volume

__all__ = [
    "EXPLAIN_OPTION_NAMES",
    "METHODS",
    "PERTURBATION_METHODS",
    "ExplainOptions",
    "ExplainTarget",
    "Explainer",
]

Explainer = Literal[
    "gradcam", "rollout", "integrated_gradients", "occlusion", "kernel_shap", "lime"
]

#: Every method the engine knows, in the order the docs and the dashboard list them.
METHODS: tuple[str, ...] = (
    "gradcam",
    "rollout",
    "integrated_gradients",
    "occlusion",
    "kernel_shap",
    "lime",
)

#: Methods whose cost is many forward passes of perturbed inputs (batched, with progress).
PERTURBATION_METHODS = frozenset({"occlusion", "kernel_shap", "lime"})

#: ``n_samples`` bounds: below 8 the estimates are noise; above 4096 a CPU run takes hours.
N_SAMPLES_MIN, N_SAMPLES_MAX = 8, 4096


class ExplainOptions(BaseModel):
    """The core's explain parameters (``-p`` on the CLI, the Explain control in the dashboard).

    ``explainer``: the method (None: no attribution map); ``explain_score``: add the
    deletion/insertion faithfulness score; ``n_samples``: Integrated Gradients' steps, or the
    perturbed samples of KernelSHAP and LIME (default per method, see
    :data:`vlm_core.explain.attribution.DEFAULT_SAMPLES`); Occlusion's cost is set by its window
    instead and ignores it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    explainer: Explainer | None = Field(
        None,
        description="Attribution method: gradcam, rollout, integrated_gradients, occlusion, "
        "kernel_shap or lime (none: no attribution map)",
    )
    explain_score: bool = Field(
        False,
        description="Also score the map's faithfulness: deletion and insertion AUC against a "
        "random order (Petsiuk et al. 2018)",
    )
    n_samples: int | None = Field(
        None,
        ge=N_SAMPLES_MIN,
        le=N_SAMPLES_MAX,
        description="Integrated Gradients' steps, or KernelSHAP's and LIME's perturbed "
        "samples (default: 64 steps, 256 samples)",
    )


#: The parameter names :class:`ExplainOptions` takes out of a run's parameters.
EXPLAIN_OPTION_NAMES = frozenset(ExplainOptions.model_fields)


@dataclass(frozen=True, eq=False)
class ExplainTarget:
    """One input, ready to explain.

    - ``forward``: a batch of inputs shaped like ``inputs`` (B, C, *grid) → (B,) the explained
      scalar (a class logit, a box's class score, a region's summed logit), differentiable for
      the gradient methods; the engine calls it under the core's batching.
    - ``inputs``: (1, C, H, W) or (1, C, D, H, W), on the model's device and dtype.
    - ``baseline``: the input with the evidence removed (a float fills every element, or a
      tensor shaped like ``inputs``): Integrated Gradients' starting point, the value Occlusion,
      KernelSHAP and LIME put in a removed region, and what the deletion curve deletes to.
    - ``what``: one line saying what is explained ("logit of class 'lesion'").
    - ``background``: the image or volume the map is shown over (the input as the user sees
      it); ``to_background`` maps a (H, W) / (D, H, W) map on the model's grid onto the
      background's grid (None: resize to the background's size).
    - ``layer``: the module Grad-CAM explains (None: Grad-CAM unsupported for this input);
      ``vit``: a timm ViT-family model taking ``inputs`` (rollout; None: unsupported).
    - ``batch``: how many perturbed inputs go through ``forward`` at once.
    """

    forward: Callable[[Tensor], Tensor]
    inputs: Tensor
    what: str
    background: Image | Volume
    baseline: float | Tensor = 0.0
    to_background: Callable[[np.ndarray], np.ndarray] | None = None
    layer: nn.Module | None = None
    vit: nn.Module | None = None
    batch: int = 16
    extra: dict[str, Any] | None = None  # what the task wants in the map's details (box, region)
