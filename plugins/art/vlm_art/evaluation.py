"""Measuring generators of the procedural styles: style accuracy (judged by the bundled style
classifier, trained only on real samples) and FID/KID against real samples in that
classifier's feature space. Used by `benchmarks/evaluate.py` and the tests."""

from __future__ import annotations

import torch

from vlm_art import classifier
from vlm_art.generate import load_generator
from vlm_art.styles import STYLES
from vlm_core.gan import to_unit
from vlm_core.gan.metrics import extract_features, fid_from_features, kid_from_features
from vlm_core.gan.sampling import generate, truncated_latents


def baseline_weights() -> str:
    """The bundled DCGAN baseline (unconditional) the default weights are compared with."""
    from vlm_core.tasks import package_file

    return str(package_file("vlm_art", "weights", "dcgan32-baseline", "model.safetensors"))


def real_features(per_style: int, *, seed: int = 1) -> torch.Tensor:
    """The classifier's features of ``per_style`` real images of each style (data seed 1:
    held out from every training set)."""
    real, _ = classifier.real_set(per_style, seed=seed)
    return extract_features(classifier.load(), real).double()


def style_accuracy(
    ref: str, per_style: int, seed: int = 1000, truncation: float | None = None
) -> dict[str, float]:
    """Share of ``per_style`` generated images of each style the classifier puts in it (latents
    truncated at ``truncation`` as `art.generate` does; None: not truncated)."""
    gen = load_generator(ref)
    net = classifier.load()
    result = {}
    for k, style in enumerate(STYLES):
        z = truncated_latents(per_style, gen.gan.latent_dim, truncation=truncation, seed=seed + k)
        images = generate(gen.gan, z, torch.full((per_style,), gen.class_index(style)))
        result[style] = float((classifier.predict(net, images) == k).float().mean())
    result["mean"] = sum(result.values()) / len(STYLES)
    return result


def quality(
    ref: str, real_features: torch.Tensor, per_style: int, seed: int = 2000
) -> dict[str, float]:
    """FID and KID of ``per_style * 5`` generated images (class-balanced when conditional)."""
    gen = load_generator(ref)
    n = per_style * len(STYLES)
    z = truncated_latents(n, gen.gan.latent_dim, seed=seed)
    y = None
    if gen.gan.num_classes:
        y = torch.tensor([gen.class_index(STYLES[i % len(STYLES)]) for i in range(n)])
    fake = to_unit(generate(gen.gan, z, y))
    fake_features = extract_features(classifier.load(), fake).double()
    kid_mean, kid_std = kid_from_features(real_features, fake_features, subsets=100,
                                          subset_size=max(2, min(1000, n // 2)))  # fmt: skip
    return {"fid": fid_from_features(real_features, fake_features), "kid": kid_mean,
            "kid_std": kid_std}  # fmt: skip
