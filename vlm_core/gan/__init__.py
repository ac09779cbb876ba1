"""The GAN engine any plugin can use (see ``docs/gan.md``).

- :mod:`~vlm_core.gan.models` — the seed's MLP GAN, DCGAN and a conditional spectral-norm
  ResNet GAN; :func:`build_gan` from a JSON-able architecture; the :class:`GAN` container
  with an EMA generator.
- :mod:`~vlm_core.gan.losses` — non-saturating BCE, hinge, the R1 penalty.
- :mod:`~vlm_core.gan.augment` — DiffAugment.
- :mod:`~vlm_core.gan.train` — :func:`gan_setup`, a ``TrainSetup`` for the core trainer.
- :mod:`~vlm_core.gan.monitor` — trainer callbacks: sample grids, FID/KID during training.
- :mod:`~vlm_core.gan.sampling` — seeded sampling, truncation, classes, interpolation.
- :mod:`~vlm_core.gan.metrics` — FID, KID and the Inception Score over a pluggable
  :class:`FeatureNetwork`.

Importing this package does not import torch; the names below load their module on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlm_core.lazy import lazy_exports

if TYPE_CHECKING:
    from vlm_core.gan.augment import diff_augment
    from vlm_core.gan.losses import gan_losses, r1_penalty
    from vlm_core.gan.metrics import (
        ConvFeatures,
        FeatureNetwork,
        InceptionV3Features,
        QualityReport,
        extract_features,
        fid,
        fit_classifier,
        frechet_distance,
        inception_score,
        kid,
        quality_report,
    )
    from vlm_core.gan.models import GAN, GANArch, build_gan
    from vlm_core.gan.monitor import QualityTracker, SampleGrid, save_grid
    from vlm_core.gan.sampling import interpolate, sample, to_unit, truncated_latents
    from vlm_core.gan.train import gan_setup

_EXPORTS = {
    "diff_augment": "augment",
    "gan_losses": "losses",
    "r1_penalty": "losses",
    "ConvFeatures": "metrics",
    "FeatureNetwork": "metrics",
    "InceptionV3Features": "metrics",
    "QualityReport": "metrics",
    "extract_features": "metrics",
    "fid": "metrics",
    "fit_classifier": "metrics",
    "frechet_distance": "metrics",
    "inception_score": "metrics",
    "kid": "metrics",
    "quality_report": "metrics",
    "GAN": "models",
    "GANArch": "models",
    "build_gan": "models",
    "QualityTracker": "monitor",
    "SampleGrid": "monitor",
    "save_grid": "monitor",
    "interpolate": "sampling",
    "sample": "sampling",
    "to_unit": "sampling",
    "truncated_latents": "sampling",
    "gan_setup": "train",
}

__all__ = [
    "GAN",
    "ConvFeatures",
    "FeatureNetwork",
    "GANArch",
    "InceptionV3Features",
    "QualityReport",
    "QualityTracker",
    "SampleGrid",
    "build_gan",
    "diff_augment",
    "extract_features",
    "fid",
    "fit_classifier",
    "frechet_distance",
    "gan_losses",
    "gan_setup",
    "inception_score",
    "interpolate",
    "kid",
    "quality_report",
    "r1_penalty",
    "sample",
    "save_grid",
    "to_unit",
    "truncated_latents",
]


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
