"""Knowledge distillation for `medical.classify`: a smaller student DenseNet trained from a
teacher's outputs, through the core trainer (what `vlm compress medical.classify --method
distill` calls, and what `vlm train medical.classify -p teacher=...` does by itself).

:func:`build` is medical.classify's training builder: :func:`vlm_medical.classify.build`
unchanged unless the parameters name a student network (:data:`STUDENTS`) or a ``teacher``.

The student is a MONAI DenseNet, like the teacher, not a timm network: timm's networks are
2D and these inputs are 32³ volumes, so a timm student would have to see slices or a
projection, not what the teacher sees. ``densenet121-tiny`` keeps the teacher's depth (blocks
2-4-6-4, the same receptive field and the same Grad-CAM and familiarity layers) with half the
initial features (16), two thirds of the growth (8) and a narrower bottleneck (2x
growth instead of 4x): 77,106 parameters against the slim teacher's 320,812 (24%). The card
records every DenseNet argument, so the plugin's own builder rebuilds it.

The loss is Hinton et al.'s (2015): ``alpha * T² * KL(teacher_T || student_T) + (1 - alpha) *
CE(student, label)``, with both logits softened by the temperature ``T``. The hard-label term
stays (``alpha`` 0.7 by default) because the labels of generated data are exact and the
teacher misses the faintest lesions (its held-out accuracy is 0.92): the soft targets carry
how sure the teacher is, the labels correct what it gets wrong. ``T²`` keeps the soft term's
gradients on the hard term's scale. The teacher's raw logits are used (its card's calibration
temperature is a run-time setting). Validation, and `vlm eval` of the student, use the plain
cross-entropy, so ``val_loss`` compares with the teacher's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlm_core.errors import UsageError

if TYPE_CHECKING:
    import torch

    from vlm_core.tasks import TrainContext
    from vlm_core.training import TrainSetup
    from vlm_core.weights import LoadedModel
    from vlm_medical.classify_params import ClassifyTrainParams

#: student networks by name: MONAI ``DenseNet`` arguments (see the module doc)
STUDENTS: dict[str, dict[str, Any]] = {
    "densenet121-tiny": {
        "init_features": 16,
        "growth_rate": 8,
        "block_config": [2, 4, 6, 4],
        "bn_size": 2,
    },
}
#: the network :func:`distill_classifier` trains
STUDENT = "densenet121-tiny"
#: ``-p teacher=bundled``: the weights medical.classify ships
BUNDLED = "bundled"
#: the generator seed of the distillation volumes: apart from the held-out parity and
#: calibration seeds (7_100_000, 7_200_000), the pruning fine-tune's (7_300_000) and the
#: plugin's training, validation and test seeds (0-6100, see the weights' TRAINING.md)
TRANSFER_SEED = 7_400_000
#: what :func:`distill_classifier` trains on by default: volumes per class, and trainer settings
#: (the teacher's own recipe, 4,000 steps: the student stays at chance for its first 500 and
#: was at 0.83 validation accuracy after 1,500, under the 95% of the teacher's it must reach;
#: about 10 minutes on two free CPU cores, 20 on shared ones)
PER_CLASS = 1200
SETTINGS: dict[str, Any] = {
    "max_steps": 4000,
    "batch_size": 16,
    "lr": 2e-3,
    "warmup_steps": 150,
    "ema_decay": 0.99,
    "val_every": 500,
    "seed": 0,
    "tensorboard": False,
}


def student_architecture(network: str, num_classes: int, dropout: float = 0.0) -> dict[str, Any]:
    """The card's ``architecture`` of student ``network`` (what ``classify.build_network``
    rebuilds)."""
    from vlm_medical.classify import architecture

    return architecture(network, num_classes, dropout, STUDENTS[network])


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, soft, hard): Hinton's distillation loss of ``student`` logits against the
    ``teacher``'s at ``temperature`` (KL divergence times T², weight ``alpha``) plus the
    cross-entropy with the labels (weight ``1 - alpha``)."""
    import torch.nn.functional as F

    t = temperature
    soft = F.kl_div(
        F.log_softmax(student.float() / t, 1),
        F.log_softmax(teacher.float() / t, 1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)
    hard = F.cross_entropy(student.float(), target)
    return alpha * soft + (1.0 - alpha) * hard, soft, hard


def _teacher(params: ClassifyTrainParams, card: Mapping[str, Any], device: str) -> Any:
    """The teacher's weights (the core's ``LoadedModel``, a private module in eval mode on
    ``device``), checked against the student's classes and pre-processing."""
    from vlm_core.weights import load_model
    from vlm_medical.classify import CLASSIFIER

    ref = "" if params.teacher == BUNDLED else params.teacher
    loaded = load_model(ref, CLASSIFIER, fresh=True, param="teacher")
    loaded.module.eval().requires_grad_(False).to(device)
    names = [str(c) for c in loaded.card.get("class_names") or ()]
    if names != list(card["class_names"]):
        raise ValueError(
            f"teacher {loaded.path} has classes {names} and the data {card['class_names']}"
        )
    taught = loaded.card.get("preprocessing") or {}
    for key, mine in (("size", params.size), ("intensity", params.preset)):
        if key in taught and taught[key] != mine:
            name = "size" if key == "size" else "preset"
            raise ValueError(
                f"teacher {loaded.path} sees {key} {taught[key]!r}; train the student with "
                f"-p {name}={taught[key]}"
            )
    return loaded


def build(data: Path, params: ClassifyTrainParams, ctx: TrainContext) -> TrainSetup:
    """medical.classify's training builder: ``classify.build``, with the student network
    ``params.network`` names and, with ``params.teacher``, the distillation loss."""
    import torch
    import torch.nn.functional as F

    from vlm_medical import classify

    student = params.network in STUDENTS
    base = params.model_copy(update={"network": "densenet121-slim"}) if student else params
    setup = classify.build(data, base, ctx)
    if ctx.purpose != "train":  # eval and fit rebuild the network the card records
        return setup
    card = dict(setup.card)
    changes: dict[str, Any] = {}
    if student:
        card["architecture"] = student_architecture(
            params.network, len(card["class_names"]), params.dropout
        )
        changes["model"] = classify.build_network(card["architecture"])
    if params.teacher:
        teacher = _teacher(params, card, ctx.device)
        network = teacher.module
        where = next(network.parameters()).device
        temperature, alpha = params.kd_temperature, params.kd_alpha

        def loss(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            image, target = batch["image"], batch["label"].long()
            logits = model(image)
            out = {"preds": logits.detach().softmax(1), "target": target}
            if not model.training:  # validation: the plain loss, comparable with the teacher's
                return {"loss": F.cross_entropy(logits, target), **out}
            with torch.no_grad():
                taught = network(image.to(where)).to(logits.device)
            total, soft, hard = kd_loss(logits, taught, target, temperature, alpha)
            return {"loss": total, "kd_soft": soft.detach(), "kd_hard": hard.detach(), **out}

        changes["loss"] = loss
        card["distillation"] = {
            "method": "Hinton knowledge distillation: alpha * T^2 * KL(teacher_T || "
            "student_T) + (1 - alpha) * cross-entropy with the labels",
            "teacher": str(teacher.path),
            "teacher_sha256": teacher.sha256,
            "teacher_parameters": sum(p.numel() for p in network.parameters()),
            "teacher_architecture": teacher.card.get("architecture"),
            "temperature": temperature,
            "alpha": alpha,
        }
    return dataclasses.replace(setup, card=card, **changes) if changes else setup


def distill_classifier(
    loaded: LoadedModel,
    out: Path,
    seed: int,
    *,
    per_class: int | None = None,
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Distil ``loaded`` (a `medical.classify` DenseNet, the teacher) into the student
    :data:`STUDENT` through the core trainer (`vlm train medical.classify -p teacher=...`):
    ``per_class`` generated volumes of each class (seed :data:`TRANSFER_SEED`, in a temporary
    folder removed afterwards), :data:`SETTINGS` under ``config``. Returns the best
    checkpoint's ``model.safetensors`` in ``out`` (a `vlm train` folder, resumed when it
    already holds the run's checkpoints). ``seed`` is the held-out seed the caller measures
    on; it draws no training data.

    Raises:
        UsageError: ``loaded`` is an exported network.
    """
    from vlm_medical.generated_training import train_on_generated
    from vlm_medical.synthetic_classes import write_class_dataset

    if loaded.exported:
        raise UsageError(f"{loaded.path}: distillation needs the teacher's torch weights")
    if seed == TRANSFER_SEED:
        raise UsageError(f"seed {seed} is the distillation data's; measure on another")
    taught = loaded.card.get("preprocessing") or {}
    count = per_class or PER_CLASS
    params = {
        "network": STUDENT,
        "teacher": str(loaded.path),
        "size": int(taught.get("size", 32)),
        "preset": str(taught.get("intensity", "auto")),
        "augment": True,
    }
    settings = {**SETTINGS, **dict(config or {})}
    out = Path(out)
    return train_on_generated(
        "medical.classify",
        lambda folder: write_class_dataset(folder, count, seed=TRANSFER_SEED),
        f"<write_class_dataset({count}, seed={TRANSFER_SEED})>",
        out,
        params,
        settings,
    )
