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
from typing import Any, Literal

import numpy as np

from vlm_core.errors import VLMError
from vlm_core.familiarity.verdict import Ood, verdict

#: The file beside ``model.safetensors`` that holds a network's familiarity model.
FAMILIARITY_FILE = "familiarity.safetensors"
FORMAT = "vlm-familiarity/1"
#: At most this many training items are kept in a k-NN bank (a random subset beyond it).
MAX_BANK = 4096

Method = Literal["knn", "mahalanobis"]


class FamiliarityError(VLMError):
    """A familiarity file that cannot be used, or features it cannot be fitted on."""


def _normalised(features: Any) -> np.ndarray:
    """(N, D) float32 rows scaled to unit length (a zero row stays zero)."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise FamiliarityError(f"features must be (items, dims), got shape {x.shape}")
    if not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _on_accelerator(features: Any) -> bool:
    """Whether ``features`` is a torch tensor on a device other than the CPU (checked without
    importing torch)."""
    device = getattr(features, "device", None)
    return device is not None and getattr(device, "type", "cpu") != "cpu"


def _kth_distance(queries: np.ndarray, bank: np.ndarray, k: int, skip_self: bool) -> np.ndarray:
    """Distance of each unit-length query to its k-th nearest unit-length bank row (the
    (k+1)-th when the queries are the bank itself and their own row must not count)."""
    out = np.empty(len(queries), dtype=np.float32)
    rank = k if skip_self else k - 1
    for start in range(0, len(queries), 1024):  # bounded memory: 1024 x bank similarities
        sims = queries[start : start + 1024] @ bank.T
        kth = -np.partition(-sims, min(rank, bank.shape[0] - 1), axis=1)[
            :, min(rank, bank.shape[0] - 1)
        ]
        out[start : start + 1024] = np.sqrt(np.clip(2.0 - 2.0 * kth, 0.0, 4.0))
    return out


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
        """(N,) how unusual each row of (N, D) ``features`` is (higher is stranger). Features
        that are a torch tensor on an accelerator are scored there (the model's tensors are
        copied to that device once), so a GPU run does not wait on the CPU."""
        if _on_accelerator(features):
            return self._scores_on_device(features)
        x = _normalised(features)
        self._check_dims(x.shape[1])
        if self.method == "knn":
            return _kth_distance(
                x, self.tensors["bank"].astype(np.float32, copy=False), self.k, False
            )
        d = x - self.tensors["mean"]
        m = np.einsum("nd,de,ne->n", d, self.tensors["precision"], d)
        return np.sqrt(np.maximum(m, 0.0)).astype(np.float32)

    def _check_dims(self, dims: int) -> None:
        if dims != self.dims:
            raise FamiliarityError(
                f"features have {dims} dimensions; the familiarity model was fitted on {self.dims}"
            )

    def _scores_on_device(self, features: Any) -> np.ndarray:
        import torch

        x = torch.nn.functional.normalize(features.detach().float(), dim=1)
        x = torch.nan_to_num(x)
        self._check_dims(int(x.shape[1]))
        key = str(x.device)
        placed = self._placed.get(key)
        if placed is None:
            placed = {n: torch.as_tensor(t, device=x.device) for n, t in self.tensors.items()}
            self._placed[key] = placed
        if self.method == "knn":
            bank = placed["bank"]
            sims = x @ bank.T
            rank = min(self.k, bank.shape[0])
            kth = sims.topk(rank, dim=1).values[:, -1]
            out = (2.0 - 2.0 * kth).clamp(0.0, 4.0).sqrt()
        else:
            d = x - placed["mean"]
            out = ((d @ placed["precision"]) * d).sum(1).clamp(min=0.0).sqrt()
        return out.cpu().numpy().astype(np.float32)

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
    x = _normalised(train)
    if len(x) < 2:
        raise FamiliarityError(f"fitting needs at least 2 in-domain items, got {len(x)}")
    held = _normalised(calibration) if calibration is not None and len(calibration) else None
    if held is not None and held.shape[1] != x.shape[1]:
        raise FamiliarityError(
            f"calibration features have {held.shape[1]} dimensions, training {x.shape[1]}"
        )
    rng = np.random.default_rng(seed)
    if method == "knn":
        bank = x if len(x) <= MAX_BANK else x[np.sort(rng.choice(len(x), MAX_BANK, False))]
        k = max(1, min(k, len(bank) - 1))
        parts = [_kth_distance(bank, bank, k, skip_self=True)]
        tensors = {"bank": bank}
    elif method == "mahalanobis":
        mean = x.mean(0)
        centred = x - mean
        cov = centred.T @ centred / max(len(x) - 1, 1)
        shrink = 0.1  # toward tr(cov)/D * I: invertible with fewer items than dimensions
        target = np.trace(cov) / cov.shape[0]
        cov = (1 - shrink) * cov + shrink * target * np.eye(cov.shape[0], dtype=np.float32)
        precision = np.linalg.inv(cov.astype(np.float64)).astype(np.float32)
        tensors = {"mean": mean.astype(np.float32), "precision": precision}
        # in-sample distances are biased low: calibrate on held-out items when there are enough
        d = centred
        fitted = np.sqrt(np.maximum(np.einsum("nd,de,ne->n", d, precision, d), 0.0))
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
