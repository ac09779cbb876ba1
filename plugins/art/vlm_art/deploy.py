"""`vlm export art.generate`: the GAN's sampling generator (the EMA one) as ONNX or ``.pt2``.

The exported graph is ``(z (B, latent) float32, y (B,) int64) -> images (B, 3, S, S)`` in
[-1, 1], B a shared dynamic batch axis; ``y`` is the style's class index (unconditional weights
ignore it). Everything else stays in Python, as `art.generate` does it for the torch weights:
drawing the latents from ``seed`` (and their truncation), choosing the styles, the slerp between
two seeds, and turning the images into uint8 pixels and upscaling them. Interpolating between
styles blends the class-embedding tables inside the network, which an exported graph cannot
do: `art.generate` refuses it with an exported model.

Parity: held-out latents and classes drawn from the export's ``seed``; the metric is the style
accuracy of generated samples as judged by the plugin's style classifier
(:data:`vlm_art.classifier.CLASSIFIER`), the measure of `benchmarks/evaluate.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from vlm_core.deploy.spec import Axis, DeploySpec, ParityCases, TensorSpec
from vlm_core.errors import UsageError

if TYPE_CHECKING:
    from vlm_core.gan.models import GAN
    from vlm_core.tasks import TaskParams
    from vlm_core.weights import LoadedModel

#: the batch axis z and y share (`art.generate` asks for at most 64 images or frames a run)
BATCH = Axis("batch", min=1, max=256)
#: samples of each style the parity metric judges (5 styles: 100 samples)
PER_STYLE = 20
#: the batch sizes the parity inputs cycle through (the dynamic axis at several sizes)
CASE_BATCHES = (1, 2, 3, 5)


class Sampler(nn.Module):
    """The sampling generator as the exported graph: ``(z, y) -> images`` in [-1, 1]; ``y``
    is passed to conditional generators only."""

    def __init__(self, generator: nn.Module, conditional: bool) -> None:
        super().__init__()
        from vlm_core.gan.models import DCGANGenerator, ResNetGenerator

        if not isinstance(generator, (ResNetGenerator, DCGANGenerator)):
            raise UsageError(
                f"art.generate exports ResNet and DCGAN generators, not {type(generator).__name__}"
            )
        self.generator = generator
        self.conditional = conditional

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.generator(z, y if self.conditional else None))


def _load(weights: str, params: TaskParams) -> LoadedModel:
    from vlm_art.generate import GENERATOR
    from vlm_core.weights import load_model

    return load_model(weights, GENERATOR)


def _gan(loaded: LoadedModel) -> GAN:
    from vlm_core.gan.models import GAN

    gan = loaded.module
    if not isinstance(gan, GAN):
        raise UsageError(f"{loaded.path} is not a GAN of art.generate")
    if gan.ema_stats_stale:  # as vlm_core.gan.sampling.generate does before sampling
        gan.refresh_ema_stats()
    return gan


def network(loaded: LoadedModel) -> nn.Module:
    """The exported module: the sampling generator (the EMA one when the weights have it)."""
    gan = _gan(loaded)
    return Sampler(gan.generator, gan.num_classes > 0).eval()


def _labels(gan: GAN, n: int, seed: int) -> torch.Tensor:
    """``n`` class indices drawn with ``seed`` (zeros for unconditional weights: unused)."""
    if not gan.num_classes:
        return torch.zeros(n, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, gan.num_classes, (n,), generator=gen)


def example(loaded: LoadedModel) -> tuple[torch.Tensor, ...]:
    """Two latents and two classes, the sizes a run uses."""
    from vlm_core.gan.sampling import truncated_latents

    gan = _gan(loaded)
    return truncated_latents(2, gan.latent_dim, seed=0), _labels(gan, 2, 0)


def judged_styles(loaded: LoadedModel) -> list[int] | None:
    """The style classifier's index of each class of the weights (None when a class is not one
    of the procedural styles the classifier knows: no metric)."""
    from vlm_art.styles import STYLES

    names = list(loaded.card.get("class_names") or ())
    if not names or any(name not in STYLES for name in names):
        return None
    return [STYLES.index(name) for name in names]


def style_accuracy(
    network: Any, latent_dim: int, styles: list[int], seed: int, per_style: int = PER_STYLE
) -> float:
    """The share of ``per_style`` samples of each class that the style classifier puts in its
    style; the samples are ``network(z, y)`` of latents drawn with ``seed`` (classes in turn),
    so the torch generator and its export see the same ones."""
    from vlm_art import classifier
    from vlm_core.gan.sampling import truncated_latents

    n = per_style * len(styles)
    z = truncated_latents(n, latent_dim, seed=seed)
    y = torch.arange(n) % len(styles)
    judge = classifier.load()
    with torch.no_grad():
        images = torch.cat(
            [network(zb, yb).float().cpu() for zb, yb in zip(z.split(50), y.split(50), strict=True)]
        )
    truth = torch.tensor(styles)[y]
    return float((classifier.predict(judge, images) == truth).float().mean())


def cases(loaded: LoadedModel, count: int, seed: int) -> ParityCases:
    """``count`` batches of latents and classes (1, 2, 3, 5, ... samples) drawn with
    ``seed + 1``; the metric's samples with ``seed`` (both far from the seeds the plugin's
    evaluation uses, 1000-1004 and 2000)."""
    from vlm_core.gan.sampling import truncated_latents

    gan = _gan(loaded)
    sizes = [CASE_BATCHES[i % len(CASE_BATCHES)] for i in range(count)]
    z = truncated_latents(sum(sizes), gan.latent_dim, seed=seed + 1)
    y = _labels(gan, sum(sizes), seed + 1)
    inputs = list(zip(z.split(sizes), y.split(sizes), strict=True))
    styles = judged_styles(loaded)
    if styles is None:
        return ParityCases(inputs=inputs)
    latent = gan.latent_dim
    return ParityCases(
        inputs=inputs,
        metric=lambda net: style_accuracy(net, latent, styles, seed),
        metric_name="style accuracy",
        metric_count=PER_STYLE * len(styles),
    )


def spec() -> DeploySpec:
    """`art.generate`'s deploy spec (``TaskSpec.deploy``)."""
    return DeploySpec(
        load=_load,
        inputs=(TensorSpec("z", {0: BATCH}), TensorSpec("y", {0: BATCH})),
        outputs=("images",),
        example=example,
        cases=cases,
        network=network,
        note=(
            "the sampling generator only: latents, truncation, styles, the slerp between seeds "
            "and the uint8 images run in Python; between=styles interpolation needs the torch "
            "weights"
        ),
    )
