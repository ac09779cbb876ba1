"""What identifies an embedding space: the architecture, the weights and the width.

Embeddings from different models (or from the same architecture with different weights) live
in different spaces and must never be compared; an index records the identity of the model that
built it and refuses queries from another. This module imports neither torch nor open_clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlm_core.errors import UsageError


@dataclass(frozen=True)
class ModelIdentity:
    """The model behind a set of embeddings.

    ``weights_sha256`` is the sha256 of the weights file; None for a randomly initialised
    model, which ``seed`` then identifies (random weights are reproducible from the
    architecture and the seed).
    """

    arch: str  # open_clip architecture name, e.g. "ViT-B-32"
    weights_sha256: str | None  # 64 hex digits; None: random initialisation
    dim: int  # embedding width
    seed: int | None = None  # the seed of a random initialisation (None with weights)

    def describe(self) -> str:
        """One short human-readable line, e.g. ``ViT-B-32 (weights 3f2a9c1e…, dim 512)``."""
        weights = (
            f"weights {self.weights_sha256[:12]}…"
            if self.weights_sha256
            else f"random init, seed {self.seed}"
        )
        return f"{self.arch} ({weights}, dim {self.dim})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "weights_sha256": self.weights_sha256,
            "dim": self.dim,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ModelIdentity:
        """The identity written by :meth:`as_dict`.

        Raises:
            UsageError: ``data`` is not such a mapping.
        """
        try:
            arch, sha, dim, seed = data["arch"], data["weights_sha256"], data["dim"], data["seed"]
        except (KeyError, TypeError):
            raise UsageError(f"not a model identity: {data!r}") from None
        if not isinstance(arch, str) or not isinstance(dim, int) or dim < 1:
            raise UsageError(f"not a model identity: {data!r}")
        if sha is not None and not isinstance(sha, str):
            raise UsageError(f"not a model identity: {data!r}")
        if seed is not None and not isinstance(seed, int):
            raise UsageError(f"not a model identity: {data!r}")
        return cls(arch, sha, dim, seed)
