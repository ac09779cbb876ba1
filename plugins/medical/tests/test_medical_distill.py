"""Knowledge distillation for medical.classify (vlm_medical.distill): the student's size, the
loss, training from a teacher through the core trainer (`-p teacher=`), bit-for-bit resume,
and the student loading through the one weights path and `vlm eval`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import monai.networks.nets  # noqa: F401  # at collection: seconds that a first test would pay
import pytest
import torch
import torch.nn.functional as F
from vlm_medical import distill
from vlm_medical.classify import CLASSIFIER, build_network, default_weights
from vlm_medical.distill import STUDENT, distill_classifier, kd_loss, student_architecture
from vlm_medical.synthetic_classes import write_class_dataset

from vlm_core.training import checkpoint as ckpt
from vlm_core.training.api import TrainRequest, evaluate_task, train_task
from vlm_core.training.loop import TrainError
from vlm_core.training.resume_check import ResumeCheck
from vlm_core.weights import load_model

TINY = {"batch_size": 2, "device": "cpu", "tensorboard": False, "familiarity": False}
STUDENT_PARAMS = {"network": STUDENT, "teacher": "bundled", "augment": False}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_the_student_has_at_most_a_quarter_of_the_teachers_parameters() -> None:
    teacher = load_model(default_weights(), CLASSIFIER)
    student = build_network(student_architecture(STUDENT, 2))
    assert _count(student) == 77_106
    assert _count(student) <= _count(teacher.module) / 4
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert student.eval()(x).shape == teacher.module(x).shape == (1, 2)


def test_kd_loss_is_hintons() -> None:
    student, teacher = torch.randn(8, 2), torch.randn(8, 2)
    target = torch.randint(0, 2, (8,))
    total, soft, hard = kd_loss(student, teacher, target, 4.0, 0.0)  # labels only
    torch.testing.assert_close(total, F.cross_entropy(student, target))
    _, same, _ = kd_loss(teacher, teacher, target, 4.0, 1.0)  # nothing left to learn
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    total, soft, hard = kd_loss(student, teacher, target, 4.0, 0.7)
    expected = F.kl_div(F.log_softmax(student / 4, 1), F.softmax(teacher / 4, 1),
                        reduction="batchmean") * 16  # fmt: skip
    torch.testing.assert_close(soft, expected)
    torch.testing.assert_close(total, 0.7 * soft + 0.3 * hard)


def test_distillation_trains_a_student_that_loads_and_evaluates(tmp_path: Path) -> None:
    data = write_class_dataset(tmp_path / "data", 3, seed=7, size=12)
    out = tmp_path / "run"
    config = {**TINY, "max_steps": 1, "val_every": 1}
    result = train_task(TrainRequest("medical.classify", data, out, STUDENT_PARAMS, config))
    assert {"train_kd_soft", "train_kd_hard"} <= set(result.last_values)
    best = ckpt.find_checkpoint(out, "best")
    assert best is not None
    taught = best.sidecar["card"]["distillation"]
    assert taught["teacher"] == str(Path(default_weights()) / "model.safetensors")
    assert (taught["temperature"], taught["alpha"]) == (4.0, 0.7)
    student = load_model(str(out), CLASSIFIER)  # built from the card, loaded strictly
    assert _count(student.module) <= taught["teacher_parameters"] / 4
    # `vlm eval` rebuilds the student from the card too (and no teacher is loaded)
    evaluated = evaluate_task("medical.classify", data, weights=str(out), device="cpu")
    assert evaluated.max_abs_diff is not None and evaluated.max_abs_diff < 1e-5


def test_distillation_resumes_bitwise(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    vlm_resume_check: Callable[..., ResumeCheck],
) -> None:
    """Killed and resumed with augmentation: the same weights as a run never interrupted (the
    teacher is deterministic, so its targets are replayed exactly)."""
    # a smaller student (the real DenseNet code) so that the test takes seconds
    monkeypatch.setitem(distill.STUDENTS, STUDENT, {"init_features": 4, "growth_rate": 4,
                                                    "block_config": [1, 1]})  # fmt: skip
    data = write_class_dataset(tmp_path / "data", 5, seed=7, size=12)
    config = {**TINY, "max_steps": 6, "save_every": 2, "val_every": 6, "lr": 1e-2}
    request = TrainRequest("medical.classify", data, tmp_path / "runs",
                           {**STUDENT_PARAMS, "augment": True}, config)  # fmt: skip
    check = vlm_resume_check(request)
    assert check.resumed_from in (2, 4), check.summary()
    assert check.identical, check.summary()


def test_a_teacher_of_another_input_size_is_refused(tmp_path: Path) -> None:
    data = write_class_dataset(tmp_path / "data", 2, seed=7, size=12)
    request = TrainRequest("medical.classify", data, tmp_path / "run",
                           {**STUDENT_PARAMS, "size": 48}, {**TINY, "max_steps": 1})  # fmt: skip
    with pytest.raises(TrainError, match="train the student with -p size=32"):
        train_task(request)


def test_a_missing_teacher_is_one_line_exit_2(
    tmp_path: Path, vlm_cli: Callable[..., CompletedProcess[str]]
) -> None:
    data = write_class_dataset(tmp_path / "data", 2, seed=7, size=12)
    proc = vlm_cli(
        "train", "medical.classify", "--data", str(data), "--steps", "1",
        "--param", f"network={STUDENT}", "--param", f"teacher={tmp_path / 'nothing'}",
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "teacher" in lines[0], proc.stderr


@pytest.mark.slow
def test_distill_classifier_writes_a_vlm_train_folder(tmp_path: Path) -> None:
    """The whole path, briefly: 8 generated volumes, 2 steps, and the best checkpoint loads
    through load_model with its model.json (task, card, file sha256)."""
    teacher = load_model(default_weights(), CLASSIFIER)
    out = tmp_path / "out"
    made = distill_classifier(teacher, out, 7_100_000, per_class=4,
                              config={**TINY, "max_steps": 2, "val_every": 2})  # fmt: skip
    assert made.name == "model.safetensors" and made.is_relative_to(out)
    sidecar = json.loads((made.parent / "model.json").read_text())
    assert sidecar["task"] == "medical.classify"
    assert sidecar["params"]["teacher"] == str(teacher.path)
    student = load_model(str(made), CLASSIFIER)
    assert student.sha256 == sidecar["files"]["model.safetensors"]
    assert _count(student.module) <= _count(teacher.module) / 4
