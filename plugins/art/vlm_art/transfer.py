"""`art.style_transfer`: restyle content images after a style, by one of two methods.

- ``feedforward`` (:mod:`vlm_art.feedforward`): one pass of a network trained for the style
  (Johnson et al. 2016); every built-in style has one, ``weights=`` names one the user trained.
  Under a second per image on a CPU.
- ``optimize`` (:mod:`vlm_art.optimize`): the output's pixels optimised against a feature
  network (Gatys et al. 2016); any style image, but ``steps`` forward and backward passes per
  image (a minute or more on a CPU).

``method=auto`` (the default) takes the network when one answers the request: ``weights=`` was
given, or the style is built-in and the request names the loss network its network was trained
against (``backbone``, ``backbone_weights``, ``seed``: by default the random VGG-11 of seed 0).
Otherwise it optimises. ``method=feedforward`` runs the network whatever those say; the
optimisation's own settings (``steps``, ``lr``, the losses' weights) are never read by it.
This module decides; each method imports its own modules only when it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

from vlm_art import style_images
from vlm_art.params import BUILTIN_STYLES, TransferParams
from vlm_art.style_images import Style
from vlm_core.errors import InputError, ParameterError
from vlm_core.tasks import RunContext

log = logging.getLogger(__name__)

Method = Literal["feedforward", "optimize"]


def plan(params: TransferParams) -> tuple[Method, Style | None]:
    """The method a request runs by, and its style (None: the network ``weights`` names).

    Raises:
        ParameterError: ``weights`` with ``method=optimize``.
        InputError: an unknown style name, a style image that does not exist, or
            ``method=feedforward`` with a style image (no network was trained for it).
    """
    if params.weights:
        if params.method == "optimize":
            raise ParameterError(
                "weights names a trained style network, which method=optimize does not use; "
                "give method=feedforward (or auto), or leave weights empty"
            )
        return "feedforward", None
    style = style_images.choose(params.style)
    if params.method == "optimize":
        return "optimize", style
    if not style.builtin:
        if params.method == "feedforward":
            raise InputError(
                f"method=feedforward: no trained network for style image {style.path} (the "
                f"built-in styles have one: {', '.join(BUILTIN_STYLES)}); use method=optimize, "
                f"or train one with `vlm train art.style_transfer --param style={style.path}` "
                "and give its folder as weights"
            )
        return "optimize", style
    from vlm_art.feedforward import bundled_card, loss_network_differences

    differences = loss_network_differences(params, bundled_card(style.name))
    if differences and params.method == "auto":
        log.info("%s: the %s network was trained against another loss network (%s): optimising",
                 style_images.TASK, style.name, ", ".join(differences))  # fmt: skip
        return "optimize", style
    return "feedforward", style


def run(inputs: Sequence[Any], params: TransferParams, ctx: RunContext) -> list[dict[str, Any]]:
    method, style = plan(params)
    if method == "feedforward":
        from vlm_art import feedforward

        return feedforward.run(inputs, params, style.name if style else None, ctx)
    from vlm_art import optimize

    assert style is not None  # plan gives a style to every optimisation
    return optimize.run(inputs, params, style, ctx)
