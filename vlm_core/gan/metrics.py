"""Sample-quality metrics: FID, KID and the Inception Score, over a pluggable feature network.

Every metric is computed from features that a :class:`FeatureNetwork` extracts batch by batch
on its own device; the statistics (means, covariances, kernels) are computed there too, in
float64. A report always names the feature network, because figures from different networks
are not comparable: :class:`InceptionV3Features` (torchvision's ImageNet Inception-v3, when
its weights are present) gives figures comparable in kind to published ones (not identical:
published FIDs use the TensorFlow Inception graph); a :class:`ConvFeatures` network (a small
CNN the caller provides, seeds or trains with :func:`fit_classifier`) gives figures
comparable only with each other.

Images given to the metrics are (N, C, H, W) floats in [0, 1]: one tensor, or an iterable
of such batches (e.g. a generator of GAN samples).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.nn import functional as F

from vlm_core.errors import UsageError

Images = torch.Tensor | Iterable[torch.Tensor]

#: torchvision's ImageNet Inception-v3 weights (resolved through :mod:`vlm_core.weights`).
INCEPTION_WEIGHTS = "torchvision:Inception_V3_Weights.IMAGENET1K_V1"


@runtime_checkable
class FeatureNetwork(Protocol):
    """What the metrics need of a feature network.

    Attributes:
        name: names the network (and its weights) in every report.
        dims: the size of a feature vector.
        num_classes: the size of the classifier head's logits (0: none; no Inception Score).
    """

    name: str
    dims: int
    num_classes: int

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images in [0, 1] on the network's device -> (N, dims)."""
        ...

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images in [0, 1] -> (N, num_classes) class logits."""
        ...


def _match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    if images.shape[1] == channels:
        return images
    if images.shape[1] == 1:
        return images.expand(-1, channels, -1, -1)
    if channels == 1:
        return images.mean(dim=1, keepdim=True)
    raise UsageError(
        f"cannot feed {images.shape[1]}-channel images to a {channels}-channel network"
    )


class ConvFeatures(nn.Module):
    """A small CNN feature network: three stride-2 3x3 convolutions with ReLU, global average
    pooling to ``dims`` features, and (``num_classes > 0``) a linear classifier head.

    Its ``forward`` returns the features, so it can be handed to torchmetrics' FID/KID as
    ``feature=`` too. Use it seeded (``seed``: fixed random weights, a reproducible feature
    space) or trained (:func:`fit_classifier`); ``name`` should say which, since it is what the
    reports show.

    Args:
        in_channels: channels the network takes (other counts are converted: grey is repeated,
            colour averaged).
        dims: feature size (default 64).
        num_classes: classifier head size (default 0: none).
        width: channels of the first convolution (default 16).
        input_size: images are resized to this side first (None: as given).
        seed: initialise the weights from this seed (None: the global generator).
        name: the name reports show (default ``conv-features-<dims>d``, with the seed).
    """

    def __init__(
        self,
        in_channels: int = 3,
        dims: int = 64,
        *,
        num_classes: int = 0,
        width: int = 16,
        input_size: int | None = None,
        seed: int | None = 0,
        name: str | None = None,
    ) -> None:
        super().__init__()
        state = torch.random.get_rng_state()
        if seed is not None:
            torch.manual_seed(seed)
        try:
            self.body = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, 2, 1),
                nn.ReLU(),
                nn.Conv2d(width, 2 * width, 3, 2, 1),
                nn.ReLU(),
                nn.Conv2d(2 * width, dims, 3, 2, 1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
            self.head = nn.Linear(dims, num_classes) if num_classes else None
        finally:
            if seed is not None:
                torch.random.set_rng_state(state)
        self.in_channels, self.dims, self.num_classes = in_channels, dims, num_classes
        self.input_size = input_size
        self.name = name or f"conv-features-{dims}d" + (
            f" (seed {seed})" if seed is not None else ""
        )

    @property
    def num_features(self) -> int:  # what torchmetrics reads
        return self.dims

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = _match_channels(images.float(), self.in_channels)
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=True)  # fmt: skip
        return x * 2 - 1

    def features(self, images: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.body(self._prepare(images))
        return result

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise UsageError(f"feature network '{self.name}' has no classifier head")
        result: torch.Tensor = self.head(self.features(images))
        return result

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)


def fit_classifier(
    network: ConvFeatures,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int = 200,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> float:
    """Train ``network``'s body and head as a classifier of ``images`` ([0, 1]) into
    ``labels`` (cross-entropy, Adam), so that its features describe the data's classes;
    returns the final training accuracy. Leaves the network in eval mode."""
    if network.head is None:
        raise UsageError("fit_classifier needs a ConvFeatures built with num_classes > 0")
    device = next(network.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(network.parameters(), lr=lr)
    network.train()
    for _ in range(steps):
        idx = torch.randint(0, len(images), (batch_size,), generator=gen)
        x, y = images[idx].to(device), labels[idx].to(device)
        loss = F.cross_entropy(network.logits(x), y.long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    network.eval()
    with torch.no_grad():
        preds = extract_logits(network, images).argmax(dim=1).cpu()
    return float((preds == labels.cpu()).float().mean())


class InceptionV3Features(nn.Module):
    """torchvision's ImageNet Inception-v3: 2048 pooled features, 1000 logits (for the
    Inception Score). Images are resized to 299x299 (bilinear) and scaled to [-1, 1], the
    input its weights were trained on.

    The weights are resolved through :mod:`vlm_core.weights` (a local path, the store or the
    torch hub cache; downloaded only when online). Offline and absent, construction fails at
    once with a :class:`~vlm_core.weights.WeightsError` naming the file.
    """

    def __init__(self, weights: str | Path = INCEPTION_WEIGHTS, *, plugin: str = "core") -> None:
        super().__init__()
        from torchvision.models import inception_v3

        from vlm_core.weights import load_state_dict, resolve

        path = resolve(str(weights), plugin=plugin)
        state = load_state_dict(path, plugin=plugin)
        net = inception_v3(weights=None, aux_logits=True, init_weights=False,
                           transform_input=False)  # fmt: skip
        net.load_state_dict(state)
        net.AuxLogits = None
        net.aux_logits = False
        self.fc = net.fc
        net.fc = nn.Identity()
        self.net = net.eval()
        self.name = f"torchvision-inception-v3 ({Path(str(weights)).name})"
        self.dims, self.num_classes = 2048, 1000

    @property
    def num_features(self) -> int:
        return self.dims

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = _match_channels(images.float(), 3)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        result: torch.Tensor = self.net(x * 2 - 1)
        return result

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.fc(self.features(images))
        return result

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)


# -- extraction --------------------------------------------------------------------------------


def _device_of(network: Any) -> torch.device:
    if isinstance(network, nn.Module):
        for p in network.parameters():
            return p.device
    return torch.device("cpu")


def _batches(images: Images, batch_size: int) -> Iterator[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        for start in range(0, len(images), batch_size):
            yield images[start : start + batch_size]
    else:
        yield from images


@torch.no_grad()
def _extract(
    network: FeatureNetwork, images: Images, batch_size: int, logits: bool
) -> torch.Tensor:
    device = _device_of(network)
    was = network.training if isinstance(network, nn.Module) else False
    if isinstance(network, nn.Module):
        network.eval()
    out = []
    try:
        for batch in _batches(images, batch_size):
            if batch.ndim != 4:
                raise UsageError(f"images must be (N, C, H, W), got shape {tuple(batch.shape)}")
            x = batch.to(device, non_blocking=True)
            out.append((network.logits(x) if logits else network.features(x)).float())
    finally:
        if isinstance(network, nn.Module):
            network.train(was)
    if not out:
        raise UsageError("no images to measure")
    return torch.cat(out)


def extract_features(
    network: FeatureNetwork, images: Images, *, batch_size: int = 256
) -> torch.Tensor:
    """Features (N, dims) of ``images`` ([0, 1]), batch by batch on the network's device."""
    return _extract(network, images, batch_size, logits=False)


def extract_logits(
    network: FeatureNetwork, images: Images, *, batch_size: int = 256
) -> torch.Tensor:
    """Classifier logits (N, num_classes) of ``images``, batch by batch on the device."""
    if network.num_classes == 0:
        raise UsageError(f"feature network '{network.name}' has no classifier head")
    return _extract(network, images, batch_size, logits=True)


# -- the metrics -------------------------------------------------------------------------------


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64."""
    if len(features) < 2:
        raise UsageError(f"statistics need at least 2 samples, got {len(features)}")
    f = features.double()
    mu = f.mean(dim=0)
    centred = f - mu
    return mu, centred.T @ centred / (len(f) - 1)


def frechet_distance(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> float:
    """The Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + tr(s1) + tr(s2) - 2 tr((s1 s2)^(1/2))``, in float64.

    ``tr((s1 s2)^(1/2))`` is the sum of the square roots of the eigenvalues of ``s1 s2``
    (real and non-negative for covariance matrices; round-off is clamped away).
    """
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    diff = (mu1 - mu2).square().sum()
    eig = torch.linalg.eigvals(sigma1 @ sigma2)
    covmean_trace = eig.real.clamp_min(0).sqrt().sum()
    value = diff + sigma1.trace() + sigma2.trace() - 2 * covmean_trace
    return float(value)


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two sets of features (N, D) and (M, D)."""
    return frechet_distance(*feature_stats(real), *feature_stats(fake))


def fid(real: Images, fake: Images, network: FeatureNetwork, *, batch_size: int = 256) -> float:
    """The Fréchet Inception Distance between ``real`` and ``fake`` images ([0, 1]) in the
    feature space of ``network`` (lower is better)."""
    return fid_from_features(
        extract_features(network, real, batch_size=batch_size),
        extract_features(network, fake, batch_size=batch_size),
    )


def _poly_kernel(
    a: torch.Tensor, b: torch.Tensor, degree: int, gamma: float | None, coef: float
) -> torch.Tensor:
    g = 1.0 / a.shape[1] if gamma is None else gamma
    return (a @ b.T * g + coef) ** degree


def _mmd2_unbiased(k_xx: torch.Tensor, k_xy: torch.Tensor, k_yy: torch.Tensor) -> torch.Tensor:
    m = k_xx.shape[0]
    xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    yy = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return xx + yy - 2 * k_xy.sum() / (m * m)


def kid_from_features(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: the unbiased squared MMD with the polynomial kernel
    ``(gamma <x, y> + coef) ** degree`` (``gamma`` default 1/D), averaged over ``subsets``
    random subsets of ``subset_size`` samples of each set (capped at the smaller set's size);
    returns (mean, standard deviation over subsets)."""
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise UsageError(f"KID needs subsets of at least 2 samples, got {size}")
    gen = torch.Generator().manual_seed(seed)
    r, f = real.double(), fake.double()
    values = []
    for _ in range(subsets):
        ir = torch.randperm(len(r), generator=gen)[:size].to(r.device)
        jf = torch.randperm(len(f), generator=gen)[:size].to(f.device)
        x, y = r[ir], f[jf]
        k_xx = _poly_kernel(x, x, degree, gamma, coef)
        k_yy = _poly_kernel(y, y, degree, gamma, coef)
        k_xy = _poly_kernel(x, y, degree, gamma, coef)
        values.append(_mmd2_unbiased(k_xx, k_xy, k_yy))
    stacked = torch.stack(values)
    std = float(stacked.std(unbiased=False)) if subsets > 1 else 0.0
    return float(stacked.mean()), std


def kid(
    real: Images,
    fake: Images,
    network: FeatureNetwork,
    *,
    batch_size: int = 256,
    **options: Any,
) -> tuple[float, float]:
    """The Kernel Inception Distance (mean, std) between ``real`` and ``fake`` images
    ([0, 1]) in ``network``'s feature space; ``options`` as :func:`kid_from_features`."""
    return kid_from_features(
        extract_features(network, real, batch_size=batch_size),
        extract_features(network, fake, batch_size=batch_size),
        **options,
    )


def inception_score_from_logits(logits: torch.Tensor, *, splits: int = 10) -> tuple[float, float]:
    """``exp(E_x KL(p(y|x) || p(y)))`` over ``splits`` equal parts of the logits (in order);
    (mean, std over the splits). Higher is better; at most ``num_classes``."""
    if len(logits) < splits:
        raise UsageError(f"{len(logits)} images cannot be split into {splits} parts")
    log_p = logits.double().log_softmax(dim=1)
    scores = []
    for part in log_p.chunk(splits):
        log_py = part.exp().mean(dim=0, keepdim=True).log()
        kl = (part.exp() * (part - log_py)).sum(dim=1).mean()
        scores.append(kl.exp())
    stacked = torch.stack(scores)
    return float(stacked.mean()), float(stacked.std()) if splits > 1 else 0.0


def inception_score(
    images: Images, network: FeatureNetwork, *, splits: int = 10, batch_size: int = 256
) -> tuple[float, float]:
    """The Inception Score (mean, std) of ``images`` ([0, 1]) under ``network``'s classifier
    head (Inception-v3's for the published kind of score)."""
    return inception_score_from_logits(
        extract_logits(network, images, batch_size=batch_size), splits=splits
    )


# -- reports -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityReport:
    """FID and KID of a set of generated images against real ones, naming the features."""

    feature_network: str
    fid: float
    kid: float
    kid_std: float
    n_real: int
    n_fake: int
    inception_score: float | None = None
    inception_score_std: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        text = f"FID {self.fid:.4g}, KID {self.kid:.4g} ± {self.kid_std:.2g}"
        if self.inception_score is not None:
            text += f", IS {self.inception_score:.4g}"
        return f"{text} ({self.feature_network}; {self.n_real} real, {self.n_fake} generated)"


def quality_report(
    real_features: torch.Tensor,
    fake_images: Images,
    network: FeatureNetwork,
    *,
    batch_size: int = 256,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    with_inception_score: bool = False,
    splits: int = 10,
) -> QualityReport:
    """FID, KID (and, with a classifier head, IS) of ``fake_images`` against real features
    already extracted with the same ``network`` (extract them once for many reports)."""
    if isinstance(fake_images, torch.Tensor):
        fake_images = [
            fake_images[i : i + batch_size] for i in range(0, len(fake_images), batch_size)
        ]
    fake_list = list(fake_images)
    fake = extract_features(network, fake_list)
    if fake.shape[1] != real_features.shape[1]:
        raise UsageError(
            f"real features have {real_features.shape[1]} dims, '{network.name}' gives "
            f"{fake.shape[1]}: extract both with the same network"
        )
    kid_mean, kid_std = kid_from_features(
        real_features.to(fake.device), fake, subsets=kid_subsets, subset_size=kid_subset_size
    )
    is_mean = is_std = None
    if with_inception_score and network.num_classes:
        is_mean, is_std = inception_score(fake_list, network, splits=splits)
    value = fid_from_features(real_features.to(fake.device), fake)
    return QualityReport(network.name, value, kid_mean, kid_std, len(real_features), len(fake),
                         is_mean, is_std)  # fmt: skip
