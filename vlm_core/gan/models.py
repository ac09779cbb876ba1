"""Generator/discriminator families and the :class:`GAN` container that trains and samples them.

Three families, chosen by ``arch["family"]`` (see :class:`GANArch`):

- ``mlp`` — the seed's baseline: fully connected G and D on flattened images (28x28 by default),
  trained with the non-saturating BCE loss.
- ``dcgan`` — Radford et al.'s transposed-convolution G and strided-convolution D with batch
  norm, for square power-of-two images (16/32/64 px).
- ``resnet`` — the stronger SNGAN/BigGAN-style pair for 32-128 px: residual up-blocks with
  class-conditional batch norm in G; a spectrally normalised residual D with a projection head
  for classes (Miyato & Koyama 2018). Train it with the hinge loss and an EMA generator.

Every generator maps ``(z, y)`` with ``z`` of shape (N, latent_dim) and ``y`` of shape (N,)
(class indices, ignored by unconditional models) to images (N, C, H, W) in [-1, 1]; every
discriminator maps ``(x, y)`` to logits of shape (N,).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from vlm_core.errors import UsageError, check_fields, did_you_mean

Family = Literal["mlp", "dcgan", "resnet"]
FAMILIES: tuple[str, ...] = ("mlp", "dcgan", "resnet")


@dataclass(frozen=True)
class GANArch:
    """A GAN's architecture as data: what a checkpoint's card stores to rebuild it."""

    family: Family = "dcgan"  # mlp | dcgan | resnet
    image_size: int = 32  # side of the square images, in pixels
    channels: int = 3  # image channels (1 grey, 3 RGB)
    latent_dim: int = 128  # size of the latent vector z
    num_classes: int = 0  # 0: unconditional; otherwise G and D take class labels
    width: int = 64  # base width: hidden units (mlp) or channels of the widest-resolution layer
    ema: bool = True  # keep an exponential moving average of G, which sampling uses
    aux_classes: bool = False  # D also predicts the class (an AC-GAN head; dcgan and resnet)

    @classmethod
    def from_dict(cls, arch: Mapping[str, Any]) -> GANArch:
        check_fields(arch, (f.name for f in fields(cls)), "GAN architecture")
        made = cls(**dict(arch))
        made.check()
        return made

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> None:
        if self.family not in FAMILIES:
            raise UsageError(
                f"unknown GAN family '{self.family}' (choose one of {', '.join(FAMILIES)})"
                f"{did_you_mean(self.family, FAMILIES)}"
            )
        if self.channels < 1 or self.latent_dim < 1 or self.width < 1 or self.num_classes < 0:
            raise UsageError(f"GAN architecture has a non-positive size: {self.to_dict()}")
        if self.family != "mlp":
            side = self.image_size
            if side < 8 or side & (side - 1):
                raise UsageError(
                    f"the {self.family} family needs a power-of-two image_size of at least 8, "
                    f"got {side}"
                )
        if self.aux_classes and (self.num_classes < 2 or self.family == "mlp"):
            raise UsageError(
                "aux_classes needs num_classes >= 2 and the dcgan or resnet family, got "
                f"{self.num_classes} classes and family {self.family}"
            )
        if self.family == "resnet" and self.image_size > 256:
            raise UsageError(f"the resnet family goes up to 256 px, got {self.image_size}")


def _one_hot(y: torch.Tensor | None, num_classes: int, n: int, like: torch.Tensor) -> torch.Tensor:
    if num_classes == 0:
        return like.new_zeros(n, 0)
    if y is None:
        raise UsageError(f"this model is conditional on {num_classes} classes; pass labels y")
    return nn.functional.one_hot(y.long(), num_classes).to(like.dtype)


def _with_classes(
    logits: torch.Tensor, features: torch.Tensor, classifier: nn.Module | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(real/fake logits, class logits)`` of a discriminator with an AC-GAN head."""
    if classifier is None:
        raise UsageError("this discriminator has no class head (build it with aux_classes=True)")
    return logits, classifier(features)


# -- the seed's MLP GAN ------------------------------------------------------------------------


class MLPGenerator(nn.Module):
    """The seed's fully connected generator: z (and a one-hot class) to a flattened image."""

    def __init__(self, arch: GANArch) -> None:
        super().__init__()
        self.arch = arch
        out = arch.channels * arch.image_size**2
        w = arch.width
        self.net = nn.Sequential(
            nn.Linear(arch.latent_dim + arch.num_classes, w),
            nn.LeakyReLU(0.2),
            nn.Linear(w, 2 * w),
            nn.LeakyReLU(0.2),
            nn.Linear(2 * w, out),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        a = self.arch
        h = torch.cat([z, _one_hot(y, a.num_classes, z.shape[0], z)], dim=1)
        return self.net(h).unflatten(1, (a.channels, a.image_size, a.image_size))


class MLPDiscriminator(nn.Module):
    """The seed's fully connected discriminator (logits; the BCE lives in the loss)."""

    def __init__(self, arch: GANArch) -> None:
        super().__init__()
        self.arch = arch
        w = arch.width
        self.net = nn.Sequential(
            nn.Linear(arch.channels * arch.image_size**2 + arch.num_classes, 2 * w),
            nn.LeakyReLU(0.2),
            nn.Linear(2 * w, w),
            nn.LeakyReLU(0.2),
            nn.Linear(w, 1),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.cat([x.flatten(1), _one_hot(y, self.arch.num_classes, len(x), x)], dim=1)
        return self.net(h).squeeze(1)


# -- DCGAN -------------------------------------------------------------------------------------


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """z (4x4 by a transposed convolution) doubled by stride-2 transposed convolutions with
    batch norm and ReLU to ``image_size``; ``tanh`` output. A class, when conditional, is an
    embedding concatenated to z."""

    def __init__(self, arch: GANArch) -> None:
        super().__init__()
        self.arch = arch
        ups = int(math.log2(arch.image_size)) - 2
        widths = [arch.width * 2 ** (ups - 1 - i) for i in range(ups)]  # e.g. 256, 128, 64
        self.embed = nn.Embedding(arch.num_classes, arch.latent_dim) if arch.num_classes else None
        z_in = arch.latent_dim * (2 if arch.num_classes else 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_in, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for c_in, c_out in itertools.pairwise(widths):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(widths[-1], arch.channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        _dcgan_init(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if y is None:
                raise UsageError(f"this model is conditional on {self.arch.num_classes} classes")
            z = torch.cat([z, self.embed(y.long())], dim=1)
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """Stride-2 convolutions with LeakyReLU (batch norm after the first) down to 4x4, then a
    4x4 convolution to one logit; a projection term ``<embed(y), h>`` when conditional."""

    def __init__(self, arch: GANArch) -> None:
        super().__init__()
        self.arch = arch
        downs = int(math.log2(arch.image_size)) - 2
        widths = [arch.width * 2**i for i in range(downs)]
        layers: list[nn.Module] = [
            nn.Conv2d(arch.channels, widths[0], 4, 2, 1),
            nn.LeakyReLU(0.2, True),
        ]
        for c_in, c_out in itertools.pairwise(widths):
            layers += [
                nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2, True),
            ]
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(widths[-1], 1, 4, 1, 0)
        self.embed = nn.Embedding(arch.num_classes, widths[-1]) if arch.num_classes else None
        self.classifier = nn.Linear(widths[-1], arch.num_classes) if arch.aux_classes else None
        _dcgan_init(self)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, with_classes: bool = False
    ) -> Any:
        h = self.features(x)
        out = self.head(h).flatten()
        pooled = h.sum(dim=(2, 3))
        if self.embed is not None:
            if y is None:
                raise UsageError(f"this model is conditional on {self.arch.num_classes} classes")
            out = out + (self.embed(y.long()) * pooled).sum(dim=1)
        return _with_classes(out, pooled, self.classifier) if with_classes else out


# -- the conditional spectral-norm ResNet GAN --------------------------------------------------


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift come from the class (plain batch norm when there are
    no classes)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=num_classes == 0)
        self.gamma = nn.Embedding(num_classes, channels) if num_classes else None
        self.beta = nn.Embedding(num_classes, channels) if num_classes else None
        if self.gamma is not None and self.beta is not None:
            # near the identity, yet different per class from the start (BigGAN-PyTorch's way)
            nn.init.normal_(self.gamma.weight, 1.0, 0.02)
            nn.init.normal_(self.beta.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = self.bn(x)
        if self.gamma is None or self.beta is None:
            return h
        if y is None:
            raise UsageError("this model is conditional; pass labels y")
        return h * self.gamma(y.long())[:, :, None, None] + self.beta(y.long())[:, :, None, None]


class GBlock(nn.Module):
    """A generator residual block: CBN-ReLU-upsample-conv3-CBN-ReLU-conv3 plus an upsampled 1x1
    shortcut."""

    def __init__(self, c_in: int, c_out: int, num_classes: int) -> None:
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(c_in, num_classes)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.bn2 = ConditionalBatchNorm2d(c_out, num_classes)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        up = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
        h = nn.functional.relu(self.bn1(x, y))
        h = self.conv1(nn.functional.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.conv2(nn.functional.relu(self.bn2(h, y)))
        return h + self.skip(up)


class DBlock(nn.Module):
    """A spectrally normalised discriminator residual block, down-sampling by 2 (``down``)."""

    def __init__(self, c_in: int, c_out: int, *, down: bool, first: bool) -> None:
        super().__init__()
        self.first, self.down = first, down
        self.conv1 = spectral_norm(nn.Conv2d(c_in, c_out, 3, 1, 1))
        self.conv2 = spectral_norm(nn.Conv2d(c_out, c_out, 3, 1, 1))
        self.skip = spectral_norm(nn.Conv2d(c_in, c_out, 1)) if c_in != c_out or down else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else nn.functional.relu(x)
        h = self.conv2(nn.functional.relu(self.conv1(h)))
        if self.down:
            h = nn.functional.avg_pool2d(h, 2)
        s = x
        if self.skip is not None:
            if self.first:  # the optimised first block: pool, then project
                s = self.skip(nn.functional.avg_pool2d(x, 2) if self.down else x)
            else:
                s = self.skip(x)
                s = nn.functional.avg_pool2d(s, 2) if self.down else s
        return h + s


class ResNetGenerator(nn.Module):
    """SNGAN/BigGAN-style generator: a linear map of z to 4x4, residual up-blocks with
    class-conditional batch norm to ``image_size``, BN-ReLU-conv3-tanh."""

    def __init__(self, arch: GANArch) -> None:
        super().__init__()
        self.arch = arch
        ups = int(math.log2(arch.image_size)) - 2
        widths = [arch.width * min(2 ** (ups - i), 8) for i in range(ups + 1)]
        self.linear = nn.Linear(arch.latent_dim, widths[0] * 16)
        self.blocks = nn.ModuleList(
            GBlock(c_in, c_out, arch.num_classes) for c_in, c_out in itertools.pairwise(widths)
        )
        self.out_bn = nn.BatchNorm2d(widths[-1])
        self.out_conv = nn.Conv2d(widths[-1], arch.channels, 3, 1, 1)
        self._c0 = widths[0]

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        # unflatten, not view(len(z), ...): len() is a Python int that tracing fixes to the
        # example's batch, so an exported generator would take one batch size only
        h = self.linear(z).unflatten(1, (self._c0, 4, 4))
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.out_conv(nn.functional.relu(self.out_bn(h))))


class ResNetDiscriminator(nn.Module):
    """Spectrally normalised residual discriminator: down-blocks to 4x4 (one more block
    without down-sampling), ReLU, global sum pooling, a linear logit, plus the projection
    ``<embed(y), h>`` for classes."""

    def __init__(self, arch: GANArch) -> None:
        super().__init__()
        self.arch = arch
        downs = int(math.log2(arch.image_size)) - 2
        widths = [arch.width * min(2**i, 8) for i in range(downs + 1)]
        blocks: list[nn.Module] = [DBlock(arch.channels, widths[0], down=True, first=True)]
        for c_in, c_out in itertools.pairwise(widths[:-1]):
            blocks.append(DBlock(c_in, c_out, down=True, first=False))
        blocks.append(DBlock(widths[-2], widths[-1], down=False, first=False))
        self.blocks = nn.Sequential(*blocks)
        self.linear = spectral_norm(nn.Linear(widths[-1], 1))
        self.embed = (
            spectral_norm(nn.Embedding(arch.num_classes, widths[-1])) if arch.num_classes else None
        )
        self.classifier = (
            spectral_norm(nn.Linear(widths[-1], arch.num_classes)) if arch.aux_classes else None
        )

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, with_classes: bool = False
    ) -> Any:
        h = nn.functional.relu(self.blocks(x)).sum(dim=(2, 3))
        out = self.linear(h).squeeze(1)
        if self.embed is not None:
            if y is None:
                raise UsageError(f"this model is conditional on {self.arch.num_classes} classes")
            out = out + (self.embed(y.long()) * h).sum(dim=1)
        return _with_classes(out, h, self.classifier) if with_classes else out


_FAMILY_MODULES: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "mlp": (MLPGenerator, MLPDiscriminator),
    "dcgan": (DCGANGenerator, DCGANDiscriminator),
    "resnet": (ResNetGenerator, ResNetDiscriminator),
}


# -- the container -----------------------------------------------------------------------------


class GAN(nn.ModuleDict):
    """A generator ``g``, a discriminator ``d`` and, with ``arch.ema``, ``g_ema``: an
    exponential moving average of ``g`` (no gradients) that sampling uses.

    It is the ``nn.ModuleDict`` the core trainer expects of a task with its own step: each part
    is wrapped in DistributedDataParallel on its own under torchrun (``g_ema`` is not, having
    nothing to train), and a checkpoint's weights hold all three.
    """

    def __init__(self, arch: GANArch, g: nn.Module, d: nn.Module) -> None:
        parts: dict[str, nn.Module] = {"g": g, "d": d}
        if arch.ema:
            parts["g_ema"] = copy.deepcopy(g).requires_grad_(False).eval()
        super().__init__(parts)
        self.arch = arch
        self.ema_stats_stale = False  # g_ema's batch-norm statistics are g's, not its own
        # updates g_ema has had: the decay warms up with it (saved, so a resume continues it)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    @property
    def latent_dim(self) -> int:
        return self.arch.latent_dim

    @property
    def num_classes(self) -> int:
        return self.arch.num_classes

    @property
    def generator(self) -> nn.Module:
        """The generator to sample from: the EMA one when there is one."""
        return self["g_ema"] if "g_ema" in self else self["g"]

    @torch.no_grad()
    def update_ema(self, decay: float, *, warmup: bool = True) -> None:
        """``g_ema <- d * g_ema + (1 - d) * g`` with ``d = min(decay, (1 + n) / (10 + n))``
        after ``n`` updates (``warmup``; otherwise ``d = decay``): the warm-up keeps the
        average from holding on to the random initial weights in short runs (at decay 0.999
        they would still weigh 0.999^n, 37 % after 1,000 steps). Buffers (batch-norm
        statistics) are copied and marked stale: they describe ``g``'s activations, not the
        averaged weights', and :meth:`refresh_ema_stats` recomputes them before ``g_ema`` is
        sampled or saved. A no-op without ``g_ema``."""
        if "g_ema" not in self:
            return
        g, ema = self["g"], self["g_ema"]
        count: torch.Tensor = self.ema_updates  # type: ignore[assignment]
        n = int(count)
        if warmup:
            decay = min(decay, (1.0 + n) / (10.0 + n))
        count.add_(1)
        for p_ema, p in zip(ema.parameters(), g.parameters(), strict=True):
            p_ema.lerp_(p.detach(), 1.0 - decay)
        for b_ema, b in zip(ema.buffers(), g.buffers(), strict=True):
            b_ema.copy_(b)
        self.ema_stats_stale = True

    @torch.no_grad()
    def refresh_ema_stats(self, batches: int = 16, batch_size: int = 64, seed: int = 0) -> None:
        """Recompute ``g_ema``'s batch-norm running statistics from its own activations on
        ``batches`` batches of seeded latents (classes in turn): BigGAN's "standing
        statistics". Without it an EMA generator in eval mode normalises with statistics of the
        raw generator's weights, and its images wash out. Uses its own random generator (the
        global RNG, and so a resumed run, is untouched). A no-op without ``g_ema`` or
        batch norm."""
        self.ema_stats_stale = False
        if "g_ema" not in self:
            return
        ema = self["g_ema"]
        norms = [m for m in ema.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        device = next(ema.parameters()).device
        rng = torch.Generator(device=device).manual_seed(seed)
        momenta = [m.momentum for m in norms]
        was_training = ema.training
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
        ema.train()
        try:
            for i in range(batches):
                z = torch.randn(batch_size, self.latent_dim, generator=rng, device=device)
                y = None
                if self.num_classes:
                    start = i * batch_size
                    y = (torch.arange(batch_size, device=device) + start) % self.num_classes
                ema(z, y)
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
            ema.train(was_training)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False) -> Any:  # fmt: skip
        """Load a checkpoint's weights; or sampling-only weights (``g_ema.*`` alone, as
        plugins ship them), which go into ``g_ema`` and ``g`` and leave ``d`` as it is."""
        keys = set(state_dict)
        if "g_ema" in self and keys and all(k.startswith("g_ema.") for k in keys):
            g_state = {k[len("g_ema.") :]: v for k, v in state_dict.items()}
            result = self["g_ema"].load_state_dict(g_state, strict=strict, assign=assign)
            self["g"].load_state_dict(g_state, strict=strict, assign=assign)
            self.ema_stats_stale = False
            return result
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        # weights saved before the update count existed load with the count at zero
        state_dict.setdefault(prefix + "ema_updates", torch.zeros((), dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The weights of ``g``, ``d`` and ``g_ema``, with ``g_ema``'s batch-norm statistics
        refreshed first when stale (so that every checkpoint samples as trained)."""
        if self.ema_stats_stale:
            self.refresh_ema_stats()
        return super().state_dict(*args, **kwargs)


def build_gan(arch: Mapping[str, Any] | GANArch) -> GAN:
    """Build a :class:`GAN` from its architecture (a :class:`GANArch` or the dict a
    checkpoint's card stores under ``architecture``).

    Raises:
        UsageError: an unknown family or field, or sizes the family cannot build.
    """
    spec = arch if isinstance(arch, GANArch) else GANArch.from_dict(arch)
    spec.check()
    g_cls, d_cls = _FAMILY_MODULES[spec.family]
    return GAN(spec, g_cls(spec), d_cls(spec))
