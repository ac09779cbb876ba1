"""What an evaluation measured on, and why two evaluations of the same weights differ.

``vlm train`` records in every checkpoint's sidecar the data fingerprint, the seed, the
validation sample count, the device and the task parameters of the evaluation behind its
metrics; ``vlm eval`` measures under a setting of its own. When the two settings differ (other
data, another seed and so another split or other latents, fewer samples, another device's
arithmetic), the figures differ for that reason, and :func:`comparison_line` says so in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The figures of the same setting count as the same within this (relative to max(1, |value|)).
MATCH_TOLERANCE = 1e-3


@dataclass(frozen=True)
class EvalSetting:
    """The setting of one evaluation.

    ``data`` is a :func:`~vlm_core.training.data_hash.data_fingerprint` (``path``, ``sha256``,
    ``files``...); any field is None when a checkpoint written before it was recorded lacks it.
    """

    data: Mapping[str, Any] | None
    seed: int | None
    samples: int | None
    device: str | None
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def recorded(cls, sidecar: Mapping[str, Any]) -> EvalSetting:
        """The setting of the evaluation whose metrics a checkpoint's sidecar holds."""
        samples = sidecar.get("val_samples")
        seed = sidecar.get("seed")
        return cls(
            data=sidecar.get("data") or None,
            seed=int(seed) if seed is not None else None,
            samples=int(samples) if samples is not None else None,
            device=sidecar.get("device"),
            params=dict(sidecar.get("params") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": dict(self.data) if self.data else None,
            "seed": self.seed,
            "samples": self.samples,
            "device": self.device,
            "params": dict(self.params),
        }


def describe_data(data: Mapping[str, Any] | None) -> str:
    """``PATH (sha256 1a2b3c4d5e6f, N files)``, or ``unknown data``."""
    if not data:
        return "unknown data"
    files = data.get("files")
    count = f", {files} files" if isinstance(files, int) and files != 1 else ""
    return f"{data.get('path', '?')} (sha256 {str(data.get('sha256', '?'))[:12]}{count})"


def _device_type(device: str | None) -> str | None:
    return device.split(":", 1)[0] if device else None


def differences(training: EvalSetting, this: EvalSetting) -> list[str]:
    """What of ``this`` differs from ``training`` (``data``, ``samples``, ``seed``, ``device``,
    ``params``), among what both record. The device counts by its type (cuda:0 and cuda:1
    compute alike)."""
    found = []
    if training.data and this.data and training.data.get("sha256") != this.data.get("sha256"):
        found.append("data")
    if None not in (training.samples, this.samples) and training.samples != this.samples:
        found.append("samples")
    if None not in (training.seed, this.seed) and training.seed != this.seed:
        found.append("seed")
    trained_on = _device_type(training.device)
    if trained_on and trained_on != _device_type(this.device):
        found.append("device")
    if changed_params(training, this):
        found.append("params")
    return found


def changed_params(training: EvalSetting, this: EvalSetting) -> dict[str, tuple[Any, Any]]:
    """``{name: (training's value, this one's)}`` of the task parameters that differ."""
    return {
        k: (v, this.params[k])
        for k, v in training.params.items()
        if k in this.params and this.params[k] != v
    }


def _part(setting: EvalSetting, show: set[str], params: Mapping[str, Any]) -> str:
    """``N samples of DATA with seed S on DEVICE, K=V``, with only the parts ``show`` names."""
    text = f"{setting.samples} samples" if setting.samples is not None else "samples"
    if "data" in show:
        text += f" of {describe_data(setting.data)}"
    if "seed" in show and setting.seed is not None:
        text += f" with seed {setting.seed}"
    if "device" in show and setting.device:
        text += f" on {setting.device}"
    if "params" in show and params:
        text += ", " + ", ".join(f"{k}={v!r}" for k, v in params.items())
    return text


def comparison_line(
    training: EvalSetting,
    this: EvalSetting,
    *,
    step: int | None = None,
    max_rel_diff: float | None = None,
) -> str:
    """One line comparing this evaluation's setting with training's.

    Settings that differ: ``training evaluated 64 samples of DATA with seed 0; this eval used
    256 samples with seed 1: figures differ for that reason``. The same setting: that the
    figures match (or, beyond :data:`MATCH_TOLERANCE`, that they should and do not).
    """
    diff = set(differences(training, this))
    at = f" at step {step}" if step is not None else ""
    if diff:
        changed = changed_params(training, this)
        before = _part(training, {"data", "seed"} | diff, {k: v[0] for k, v in changed.items()})
        after = _part(this, diff, {k: v[1] for k, v in changed.items()})
        return (
            f"training evaluated {before}{at}; this eval used {after}: "
            "figures differ for that reason"
        )
    recorded = {"data": training.data, "sample count": training.samples, "seed": training.seed}
    unknown = [name for name, value in recorded.items() if value is None]
    count = f"{this.samples} samples of " if training.samples is not None else ""
    seed = f" with seed {this.seed}" if training.seed is not None else ""
    same = f"training evaluated {'the same ' if training.data else ''}{count}data{seed}{at}"
    match = max_rel_diff is None or max_rel_diff <= MATCH_TOLERANCE
    if unknown:
        missing = f"its {' and '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not recorded"
        if match:
            return f"{same}: the figures match ({missing})"
        return f"{same}, but {missing}: the figures may differ for that reason"
    if match:
        return f"{same}: the figures match"
    return (
        f"{same}, yet the figures differ (by up to {max_rel_diff:.3g} relative): the task's "
        "evaluation is not reproducible"
    )


__all__ = [
    "MATCH_TOLERANCE",
    "EvalSetting",
    "changed_params",
    "comparison_line",
    "describe_data",
    "differences",
]
