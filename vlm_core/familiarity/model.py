"""The fitted model of a training distribution in a network's feature space, and its file.

Two scores, both "higher is stranger":

- ``knn`` (default; Sun et al. 2022, "Out-of-distribution detection with deep nearest
  neighbors"): features are L2-normalised and an input's score is its Euclidean distance to
  the k-th nearest of a bank of training features. Non-parametric: it needs no covariance,
  so it works with a few hundred training items and features of any width.
- ``mahalanobis`` (Lee et al. 2018): the Mahalanobis distance of the normalised features to
  one Gaussian fitted on the training features, its covariance shrunk toward a multiple of the
  identity so that it can be inverted when items are fewer than feature dimensions.

The threshold is the ``1 - target_rate`` quantile of held-out in-domain scores: the
validation items' scores and, for ``knn``, each training item's score against the bank
without itself (leave-one-out), so that about ``target_rate`` of in-domain inputs are flagged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from vlm_core.errors import VLMError
from vlm_core.familiarity.verdict import Ood, verdict

if TYPE_CHECKING:
    import torch

#: The file beside ``model.safetensors`` that holds a network's familiarity model.
FAMILIARITY_FILE = "familiarity.safetensors"
FORMAT = "vlm-familiarity/1"
#: At most this many training items are kept in a k-NN bank (a random subset beyond it).
MAX_BANK = 4096

Method = Literal["knn", "mahalanobis"]


class FamiliarityError(VLMError):
    """A familiarity file that cannot be used, or features it cannot be fitted on."""


def _rows(features: Any) -> torch.Tensor:
    """(N, D) float32 rows scaled to unit length (non-finite values as 0, a zero row stays
    zero), on the device ``features`` are on (a numpy array: the CPU, without a copy)."""
    import torch

    x = torch.as_tensor(features).detach().float()
    if x.ndim != 2:
        raise FamiliarityError(f"features must be (items, dims), got shape {tuple(x.shape)}")
    return torch.nn.functional.normalize(torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0))


def _kth_distance(
    queries: torch.Tensor, bank: torch.Tensor, k: int, skip_self: bool = False
) -> torch.Tensor:
    """Distance of each unit-length query to its k-th nearest unit-length bank row (the
    (k+1)-th when the queries are the bank itself and their own row must not count), 1024
    queries at a time (bounded memory)."""
    import torch

    rank = min(k + 1 if skip_self else k, bank.shape[0])
    parts = []
    for start in range(0, len(queries), 1024):
        sims = queries[start : start + 1024] @ bank.T
        kth = sims.topk(rank, dim=1).values[:, -1]
        parts.append((2.0 - 2.0 * kth).clamp(0.0, 4.0).sqrt())
    return torch.cat(parts)


def _mahalanobis(x: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    d = x - mean
    return ((d @ precision) * d).sum(1).clamp(min=0.0).sqrt()


@dataclass
class Familiarity:
    """A fitted familiarity model: scores features and says which inputs are unfamiliar."""

    method: Method
    threshold: float
    #: ``knn``: ``{"bank": (N, D)}``; ``mahalanobis``: ``{"mean": (D,), "precision": (D, D)}``
    tensors: dict[str, np.ndarray]
    k: int = 1
    #: how it was fitted (items, dims, target rate, flagged rate of the calibration scores,
    #: seed, command, what the features are): recorded in the file and the sidecar
    info: dict[str, Any] = field(default_factory=dict)
    _placed: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def dims(self) -> int:
        key = "bank" if self.method == "knn" else "mean"
        return int(self.tensors[key].shape[-1])

    def scores(self, features: Any) -> np.ndarray:
        """(N,) how unusual each row of (N, D) ``features`` (a tensor or an array) is, higher
        is stranger. They are scored on their own device (the model's tensors are placed
        there once), so a GPU run does not wait on the CPU."""
        x = _rows(features)
        if x.shape[1] != self.dims:
            raise FamiliarityError(
                f"features have {x.shape[1]} dimensions; the familiarity model was fitted on "
                f"{self.dims}"
            )
        placed = self._on(x.device)
        if self.method == "knn":
            out = _kth_distance(x, placed["bank"], self.k)
        else:
            out = _mahalanobis(x, placed["mean"], placed["precision"])
        return out.cpu().numpy().astype(np.float32)

    def _on(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The model's tensors on ``device`` (kept per device; on the CPU, without a copy)."""
        import torch

        key = str(device)
        if key not in self._placed:
            self._placed[key] = {
                name: torch.as_tensor(t.astype(np.float32, copy=False), device=device)
                for name, t in self.tensors.items()
            }
        return self._placed[key]

    def judge(self, features: Any) -> list[Ood]:
        """The verdict of each row of ``features``."""
        return [verdict(float(s), self.threshold) for s in self.scores(features)]

    def summary(self) -> dict[str, Any]:
        """What the sidecar records of it (``model.json``'s ``familiarity``)."""
        return {"method": self.method, "k": self.k, "threshold": round(self.threshold, 6),
                **self.info}  # fmt: skip

    # -- the file -------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        from safetensors.numpy import save

        tensors = {
            name: (t.astype(np.float16) if name == "bank" else t.astype(np.float32))
            for name, t in self.tensors.items()
        }
        meta = {
            "format": FORMAT,
            "method": self.method,
            "k": str(self.k),
            "threshold": repr(float(self.threshold)),
            "info": json.dumps(self.info, default=str),
        }
        return bytes(save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, meta))

    def save(self, path: Path) -> Path:
        from vlm_core.fileio import atomic_write_bytes

        atomic_write_bytes(Path(path), self.to_bytes())
        return Path(path)

    @classmethod
    def load(cls, path: Path, *, sha256: str | None = None) -> Familiarity:
        """Read a familiarity file, checking its sha256 when one is given."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if sha256 is not None:
            from vlm_core.weights.hashing import sha256_of

            found = sha256_of(path)
            if found != sha256:
                raise FamiliarityError(
                    f"sha256 mismatch: {path} has sha256 {found}, not the one its model.json "
                    "records"
                )
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        except (OSError, SafetensorError) as exc:
            raise FamiliarityError(f"cannot read familiarity file {path}: {exc}") from None
        if meta.get("format") != FORMAT:
            raise FamiliarityError(f"{path} is not a vlm familiarity file ({FORMAT})")
        method = meta.get("method")
        if method not in ("knn", "mahalanobis"):
            raise FamiliarityError(f"{path}: unknown familiarity method {method!r}")
        return cls(
            method=method,
            threshold=float(meta["threshold"]),
            tensors={k: v.astype(np.float32) for k, v in tensors.items()},
            k=int(meta.get("k", "1")),
            info=json.loads(meta.get("info") or "{}"),
        )


def fit_familiarity(
    train: Any,
    calibration: Any | None = None,
    *,
    method: Method = "knn",
    k: int = 5,
    target_rate: float = 0.025,
    seed: int = 0,
    info: Mapping[str, Any] | None = None,
) -> Familiarity:
    """Fit on (N, D) in-domain ``train`` features; calibrate the threshold on held-out
    in-domain ``calibration`` features (with leave-one-out training scores for ``knn``) so
    that about ``target_rate`` of in-domain inputs are flagged.

    Raises:
        FamiliarityError: fewer than 2 training items, or features of the wrong shape.
    """
    if not 0.0 < target_rate < 0.5:
        raise FamiliarityError(f"target_rate must be in (0, 0.5), got {target_rate}")
    import torch

    x = _rows(train).cpu()
    if len(x) < 2:
        raise FamiliarityError(f"fitting needs at least 2 in-domain items, got {len(x)}")
    held = _rows(calibration).cpu() if calibration is not None and len(calibration) else None
    if held is not None and held.shape[1] != x.shape[1]:
        raise FamiliarityError(
            f"calibration features have {held.shape[1]} dimensions, training {x.shape[1]}"
        )
    rng = np.random.default_rng(seed)
    if method == "knn":
        keep = np.sort(rng.choice(len(x), MAX_BANK, False)) if len(x) > MAX_BANK else None
        bank = x if keep is None else x[torch.from_numpy(keep)]
        k = max(1, min(k, len(bank) - 1))
        parts = [_kth_distance(bank, bank, k, skip_self=True).numpy()]
        tensors = {"bank": bank.numpy()}
    elif method == "mahalanobis":
        mean = x.double().mean(0)
        centred = x.double() - mean
        cov = centred.T @ centred / max(len(x) - 1, 1)
        shrink = 0.1  # toward tr(cov)/D * I: invertible with fewer items than dimensions
        cov = (1 - shrink) * cov + shrink * cov.trace() / cov.shape[0] * torch.eye(cov.shape[0])
        precision = torch.linalg.inv(cov).float()
        tensors = {"mean": mean.float().numpy(), "precision": precision.numpy()}
        # in-sample distances are biased low: calibrate on held-out items when there are enough
        fitted = _mahalanobis(x, mean.float(), precision).numpy()
        parts = [] if held is not None and len(held) >= 20 else [fitted]
    else:
        raise FamiliarityError(f"unknown familiarity method {method!r}")
    model = Familiarity(method=method, threshold=0.0, tensors=tensors, k=k)
    if held is not None:
        parts.append(model.scores(held))
    scores = np.concatenate(parts)
    model.threshold = float(np.quantile(scores, 1.0 - target_rate, method="higher"))
    model.info = {
        "fit_items": len(x),
        "bank_items": len(tensors["bank"]) if method == "knn" else None,
        "calibration_items": len(held) if held is not None else 0,
        "dims": int(x.shape[1]),
        "target_rate": target_rate,
        "calibration_flagged_rate": round(float((scores > model.threshold).mean()), 4),
        **dict(info or {}),
    }
    return model
