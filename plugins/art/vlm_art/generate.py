"""`art.generate`: samples and interpolations of a (class-conditional) GAN trained by
`vlm train art.generate` — by default the bundled 32 px ResNet GAN of the five procedural
styles."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from vlm_art.params import GenerateParams
from vlm_core.errors import InputError, UsageError
from vlm_core.gan import build_gan
from vlm_core.gan.models import GAN, GANArch
from vlm_core.gan.sampling import generate, slerp, to_unit, truncated_latents
from vlm_core.tasks import RunContext, package_file
from vlm_core.types import Image, ImageSet, Video
from vlm_core.weights import LoadedModel as TrainedModel
from vlm_core.weights import ModelRecipe, WeightsError, load_model

TASK = "art.generate"


def default_weights() -> str:
    return str(package_file("vlm_art", "weights", "cgan32", "model.safetensors"))


class _Styles:
    """The class names of a generator, and a style's index among them."""

    class_names: tuple[str, ...]

    def class_index(self, name: str) -> int:
        if name in self.class_names:
            return self.class_names.index(name)
        import difflib

        close = difflib.get_close_matches(name, self.class_names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        known = ", ".join(self.class_names) or "none: the weights are unconditional"
        raise InputError(f"unknown style '{name}' (the styles are {known}){hint}")


@dataclass
class Generator(_Styles):
    """A loaded GAN (its ``g_ema`` holds the weights) with its class names and weights hash."""

    gan: GAN
    class_names: tuple[str, ...]
    sha256: str

    @property
    def latent_dim(self) -> int:
        return self.gan.latent_dim

    @property
    def num_classes(self) -> int:
        return self.gan.num_classes

    def images(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] on the CPU of latents ``z`` and classes ``y``."""
        return generate(self.gan, z, y).cpu()


@dataclass
class ExportedGenerator(_Styles):
    """The sampling generator `vlm export art.generate` wrote (``program``: ``(z, y) ->
    images``), with the class names, latent size and classes of the weights it came from."""

    program: nn.Module
    class_names: tuple[str, ...]
    sha256: str
    latent_dim: int
    num_classes: int

    def images(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """:meth:`Generator.images` through the exported graph (unconditional weights take
        zeros for ``y``)."""
        labels = torch.zeros(len(z), dtype=torch.long) if y is None else y.long()
        chunks = zip(z.split(256), labels.split(256), strict=True)
        with torch.no_grad():
            return torch.cat([self.program(zb, yb).float().cpu() for zb, yb in chunks])


#: what `art.generate` samples from: the torch GAN or its export
Sampling = Generator | ExportedGenerator


def _generator_state(
    state: dict[str, torch.Tensor], card: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """The generator's tensors of a GAN checkpoint: the EMA generator's (``g_ema.*``) when it
    has them, else the trained generator's (``g.*``)."""
    prefix = "g_ema." if any(k.startswith("g_ema.") for k in state) else "g."
    found = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not found:
        raise WeightsError(
            "holds no generator weights (g_ema.* or g.*)",
            plugin="art",
            hint="give weights that `vlm train art.generate` wrote",
        )
    return found


#: The GAN of `art.generate`: built from the card's architecture, its sampling generator
#: loaded (checkpoints hold g, d and g_ema; the bundled weights ship g_ema only).
GENERATOR = ModelRecipe(
    task=TASK,
    name="generator",
    build=lambda card: build_gan(card["architecture"]),
    default=default_weights,
    adapt=_generator_state,
    part="generator",
)


def _generator(loaded: TrainedModel) -> Sampling:
    names = tuple(loaded.card.get("class_names") or ())
    if loaded.exported:  # `vlm export art.generate`'s file: the card says what it samples
        arch = GANArch.from_dict(loaded.card["architecture"])
        return ExportedGenerator(loaded.module, names, loaded.sha256, arch.latent_dim,
                                 arch.num_classes)  # fmt: skip
    gan = cast(GAN, loaded.module)  # what GENERATOR builds
    return Generator(gan, names, loaded.sha256)


def load_generator(weights: str = "", device: str = "cpu") -> Generator:
    """The torch generator of ``weights`` (a training folder, checkpoint or file; empty:
    bundled) through the core's model cache; an exported file is refused (its measurements
    need the torch GAN)."""
    gen = _generator(load_model(weights, GENERATOR, device=device))
    if not isinstance(gen, Generator):
        raise UsageError(f"{weights} is an exported generator; give the torch weights")
    return gen


def style_list(gen: Sampling, styles: str) -> list[int | None]:
    """The class index of each named style (all in turn when empty; [None]: unconditional)."""
    names = [s.strip() for s in styles.split(",") if s.strip()]
    if not gen.num_classes:
        if names:
            raise InputError(
                f"these weights are unconditional; they take no styles, got {styles!r}"
            )
        return [None]
    return [gen.class_index(n) for n in names] or list(range(gen.num_classes))


def _blended(g: nn.Module, a: int, b: int, ts: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """A copy of a class-conditional generator with ``len(ts)`` extra classes whose embeddings
    (every class-dependent table: conditional batch-norm scales and shifts, DCGAN's class
    embedding) are ``(1 - t) * E[a] + t * E[b]``; and the labels of those classes."""
    blended = copy.deepcopy(g)
    k = None
    for module in blended.modules():
        if isinstance(module, nn.Embedding):
            w = module.weight.data
            k = w.shape[0]
            mix = (1 - ts)[:, None].to(w) * w[a] + ts[:, None].to(w) * w[b]
            module.weight = nn.Parameter(torch.cat([w, mix]), requires_grad=False)
            module.num_embeddings = w.shape[0] + len(ts)
    if k is None:
        raise InputError("these weights have no class embeddings to interpolate between")
    return blended, torch.arange(k, k + len(ts))


def _blendable(gen: Sampling) -> GAN:
    """The torch GAN whose class embeddings :func:`interpolate_styles` blends; an exported
    generator holds them inside its graph and is refused."""
    if not isinstance(gen, Generator):
        raise UsageError(
            "interpolating between styles blends the class embeddings inside the generator, "
            "which an exported model cannot do; run it with the torch weights, or with "
            "between=seeds"
        )
    return gen.gan


def interpolate_styles(gen: Sampling, a: int, b: int, z: torch.Tensor, frames: int) -> torch.Tensor:
    """``frames`` images at one latent ``z`` (D,), moving from style ``a`` to style ``b``."""
    ts = torch.linspace(0, 1, frames)
    g, labels = _blended(_blendable(gen).generator, a, b, ts)
    device = next(g.parameters()).device
    with torch.no_grad():
        return g.eval()(z.expand(frames, -1).to(device), labels.to(device)).cpu()


def interpolate_seeds(
    gen: Sampling, z0: torch.Tensor, z1: torch.Tensor, style: int | None, frames: int
) -> torch.Tensor:
    """``frames`` images along the slerp from ``z0`` to ``z1`` in one style."""
    zs = slerp(z0, z1, torch.linspace(0, 1, frames))
    y = torch.full((frames,), style) if style is not None else None
    return gen.images(zs, y)


def to_images(batch: torch.Tensor, upscale: int, names: Sequence[str]) -> list[Image]:
    """(N, 3, H, W) generator output in [-1, 1] as core images, enlarged ``upscale`` times."""
    from PIL import Image as PILImage

    arrays = (to_unit(batch).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    out = []
    for array, name in zip(arrays, names, strict=True):
        if upscale > 1:
            pil = PILImage.fromarray(array)
            size = (pil.width * upscale, pil.height * upscale)
            array = np.asarray(pil.resize(size, PILImage.Resampling.LANCZOS))
        out.append(Image(np.ascontiguousarray(array), name=name))
    return out


def run(inputs: Sequence[Any], params: GenerateParams, ctx: RunContext) -> list[dict[str, Any]]:
    loaded = load_model(params.weights, GENERATOR, ctx=ctx)
    params = loaded.run_params(params)  # the card's `inference` settings the user did not set
    gen = _generator(loaded)
    if params.mode == "interpolate" and params.between == "styles":
        _blendable(gen)  # refuses an exported generator before any work
    styles = style_list(gen, params.styles)
    truncation = params.truncation or None
    label = lambda c: gen.class_names[c] if c is not None else "sample"  # noqa: E731
    latent = gen.latent_dim
    if params.mode == "samples":
        z = truncated_latents(params.count, latent, truncation=truncation, seed=params.seed)
        classes = [styles[i % len(styles)] for i in range(params.count)]
        y = torch.tensor(classes) if gen.num_classes else None
        batch = gen.images(z, y)
        # image i is latent i of the draw seeded by `seed`: style and seed say how to make it
        names = [f"{label(c)}-seed{params.seed}-{i:02d}" for i, c in enumerate(classes)]
        images = to_images(batch, params.upscale, names)
        labels = tuple(f"{label(c)}, seed {params.seed} #{i}" for i, c in enumerate(classes))
        return [{"images": ImageSet(tuple(images), labels)}]
    if params.between == "styles":
        if len(styles) < 2 or params.styles.strip() == "":
            raise InputError(
                "interpolating between styles needs two style names, e.g. 'circles,stripes'"
            )
        z = truncated_latents(1, latent, truncation=truncation, seed=params.seed)[0]
        batch = interpolate_styles(gen, styles[0], styles[1], z, params.frames)
        title = f"{label(styles[0])}-to-{label(styles[1])}-seed{params.seed}"
        caption = f"{label(styles[0])} to {label(styles[1])}, seed {params.seed}"
    else:
        z = truncated_latents(1, latent, truncation=truncation, seed=params.seed)[0]
        z1 = truncated_latents(1, latent, truncation=truncation, seed=params.seed + 1)[0]
        batch = interpolate_seeds(gen, z, z1, styles[0], params.frames)
        title = f"{label(styles[0])}-seed{params.seed}-to-seed{params.seed + 1}"
        caption = f"{label(styles[0])}, seed {params.seed} to {params.seed + 1}"
    frames = to_images(batch, params.upscale, [f"{title}-{i:02d}" for i in range(len(batch))])
    strip = np.concatenate([f.pixels for f in frames], axis=1)
    return [
        {
            "frames": ImageSet(
                tuple(frames),
                tuple(f"{caption}, t={t:.3f}" for t in np.linspace(0, 1, len(frames))),
            ),
            "strip": Image(strip, name=title),
            "animation": Video(np.stack([f.pixels for f in frames]), fps=params.fps, name=title),
        }
    ]
