"""Explainability for any backbone: attention rollout for ViTs, Grad-CAM for convnets.

:func:`explain` is the one entry point a task needs: give it a core :class:`~vlm_core.types.Image`
and a timm classifier, get back an :class:`ExplainResult` whose ``overlay`` is an ``Image`` a
task can return as an output (the dashboard renders it, the exporters write it) and whose
``heat`` is the raw map. The building blocks — :func:`preprocess`, :func:`attention_rollout`,
:func:`grad_cam`, :func:`overlay` — are public for callers that already hold a tensor.

Every function leaves the model as it found it: hooks removed, ``fused_attn`` restored, each
module's train / eval flag restored, parameter gradients untouched — also when it raises.
"""

from __future__ import annotations

from vlm_core.lazy import lazy_exports

_EXPORTS = {
    "COLORMAPS": "blend",
    "apply_colormap": "blend",
    "display_heat": "blend",
    "overlay": "blend",
    "ExplainResult": "classifier",
    "Method": "classifier",
    "explain": "classifier",
    "preprocess": "classifier",
    "find_target_layer": "gradcam",
    "grad_cam": "gradcam",
    "HeadFusion": "rollout",
    "attention_rollout": "rollout",
    "is_vit_family": "rollout",
    "rollout_matrix": "rollout",
    "ExplainTarget": "target",
    "ExplainOptions": "target",
    "METHODS": "target",
    "explain_target": "attribution",
    "faithfulness": "faithfulness",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
