"""The trainer's settings: one validated model shared by the CLI, the dashboard and Python."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Settings that may change when a run is resumed; every other one must match the checkpoint.
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "max_steps",
        "val_every",
        "save_every",
        "log_every",
        "keep_last",
        "patience",
        "num_workers",
        "device",
        "nonfinite",
        "max_nonfinite",
        "tensorboard",
        "familiarity",
    }
)


class TrainConfig(BaseModel):
    """How to train; the task decides what (model, data, loss, metrics).

    Exactly one of ``epochs`` and ``max_steps`` sets the length (``epochs=1`` when neither is
    given). ``batch_size`` is the global batch: under ``torchrun`` each of N processes takes
    ``batch_size / N`` samples per step, so one and N processes take the same optimisation steps.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int | None = Field(None, ge=1, le=100_000, description="Passes over the data.")
    max_steps: int | None = Field(None, ge=1, le=100_000_000, description="Optimizer steps.")
    batch_size: int = Field(32, ge=1, le=65_536, description="Global samples per step.")
    grad_accum: int = Field(1, ge=1, le=1024, description="Micro-batches per optimizer step.")
    lr: float = Field(1e-3, gt=0.0, le=10.0, description="Peak learning rate.")
    weight_decay: float = Field(0.01, ge=0.0, le=1.0, description="Decoupled weight decay.")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="Optimizer.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    schedule: Literal["constant", "cosine", "linear"] = Field(
        "cosine", description="Learning-rate decay after warm-up."
    )
    warmup_steps: int = Field(0, ge=0, le=1_000_000, description="Linear warm-up steps.")
    clip_grad_norm: float | None = Field(
        1.0, gt=0.0, le=1e6, description="Clip the global gradient norm (None: off)."
    )
    ema_decay: float | None = Field(
        None, gt=0.0, lt=1.0, description="EMA of weights, validated and exported (None: off)."
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 elsewhere."
    )
    nonfinite: Literal["skip", "stop"] = Field(
        "skip", description="On a NaN/inf loss or gradient: skip the step, or stop as diverged."
    )
    max_nonfinite: int = Field(
        20, ge=1, le=100_000, description="Consecutive skipped steps before the run diverges."
    )
    val_every: int | None = Field(
        None, ge=1, le=100_000_000, description="Validate every N steps (None: each epoch)."
    )
    save_every: int | None = Field(
        None, ge=1, le=100_000_000, description="Save every N steps (None: at each validation)."
    )
    keep_last: int = Field(2, ge=1, le=1000, description="Recent checkpoints kept besides best.")
    patience: int | None = Field(
        None, ge=1, le=100_000, description="Stop after N validations without improvement."
    )
    log_every: int = Field(10, ge=1, le=1_000_000, description="Log training loss every N steps.")
    seed: int = Field(
        0, ge=0, le=2**32 - 1, description="Seed of weights, data order, augmentation, dropout."
    )
    deterministic: bool = Field(False, description="Deterministic kernels (slower; bitwise).")
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes.")
    device: str = Field("auto", max_length=32, description="auto, cpu, cuda, cuda:N or mps.")
    sync_batchnorm: bool = Field(False, description="SyncBatchNorm across processes under DDP.")
    tensorboard: bool = Field(True, description="Also log to TensorBoard when it is installed.")
    familiarity: bool = Field(
        True,
        description="Fit the familiarity model of the best checkpoint at the end (the task's "
        "features on its data), so runs flag inputs unlike the training data.",
    )

    @model_validator(mode="after")
    def _one_length(self) -> TrainConfig:
        if self.epochs is not None and self.max_steps is not None:
            raise ValueError("give epochs or max_steps, not both")
        return self

    @property
    def length(self) -> str:
        if self.max_steps is not None:
            return f"{self.max_steps} steps"
        return f"{self.epochs or 1} epochs"

    def changed_on_resume(self, saved: dict[str, object]) -> list[str]:
        """Settings that differ from ``saved`` but must not change on a resume."""
        now = self.model_dump(mode="json")
        return sorted(
            k for k, v in now.items() if k not in RESUMABLE_CHANGES and k in saved and saved[k] != v
        )
