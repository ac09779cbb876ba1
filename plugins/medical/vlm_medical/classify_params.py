"""`medical.classify`: its parameter models and task spec (light: pydantic and the core's
task types only; torch and MONAI are imported when the task first runs or trains)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from vlm_core.kinds import Capability, Kind
from vlm_core.tasks import (
    EvalShifts,
    ImageLimits,
    Sample,
    TaskParams,
    TaskSpec,
    TinySettings,
    WeightsRef,
    package_file,
)
from vlm_medical.classify_shifts import EVAL_SEED, SHIFTS
from vlm_medical.params import Preset

NOTICE = "Research use only: not a medical device, not for diagnosis."
#: Folder of the bundled default weights under ``vlm_medical/weights``.
DEFAULT_WEIGHTS = "classify-densenet"
SAMPLE = "synthetic-lesion-32.nii.gz"
#: The 2D images medical.classify and medical.segment take: classify resizes the whole image
#: to the network's square, segment's 2D UNet halves it four times, so a side under 16 px or a
#: strip more elongated than 8:1 (no medical image is) would be mostly padding or distortion.
IMAGE_LIMITS = ImageLimits(min_side=16, max_aspect=8)
#: An intensity preset at run time: "trained" (the checkpoint's own) or any training preset.
RunPreset = Literal[
    "trained", "auto", "mr", "ct-abdomen", "ct-lung", "ct-bone", "ct-brain", "ct-liver", "none"
]


class ClassifyParams(TaskParams):
    weights: str = Field(
        "",
        max_length=4096,
        description="A `vlm train medical.classify` output folder or checkpoint "
        "(empty: the bundled slim DenseNet trained on synthetic lesion/normal volumes).",
    )
    preset: RunPreset = Field(
        "trained",
        description="Intensity preset: 'trained' uses the one the weights were trained with; "
        "else percentile scaling (auto, mr) or a CT window.",
    )
    explain: str = Field(
        "",
        max_length=128,
        description="Class whose evidence the Grad-CAM map (and -p explainer=...'s map) shows "
        "(empty: the predicted class).",
    )
    cam_layer: str = Field(
        "auto",
        max_length=128,
        description="Module Grad-CAM explains, as in model.named_modules() (auto: the deepest "
        "dense block whose grid is at least 4 voxels a side).",
    )
    opacity: float = Field(0.45, ge=0.0, le=1.0, description="Weight of the heat map colours.")
    colormap: Literal["jet", "hot", "gray"] = Field(
        "jet", description="Colours of the Grad-CAM overlay (jet: blue low, red high)."
    )


class ClassifyTrainParams(TaskParams):
    @field_validator("augment", mode="before")
    @classmethod
    def _augment_flag(cls, value: object) -> object:
        """Weights trained before 'wide' record ``augment`` as true / false."""
        return {True: "flip", False: "none"}.get(value, value) if isinstance(value, bool) else value

    network: Literal["densenet121", "densenet121-slim", "densenet121-tiny"] = Field(
        "densenet121",
        description="MONAI DenseNet121 (64 initial features, growth 32, blocks 6-12-24-16), "
        "a slim one (32, growth 12, blocks 2-4-6-4) for small data and CPUs, or a tiny one "
        "(16, growth 8, blocks 2-4-6-4, bottleneck 2; a quarter of the slim one's "
        "parameters), the student of -p teacher=.",
    )
    size: int = Field(
        32,
        ge=32,
        le=256,
        description="Every volume is resized to this cube side in voxels (DenseNet's four "
        "blocks divide it by 32).",
    )
    val_fraction: float = Field(
        0.2,
        ge=0.05,
        le=0.5,
        description="Share of each class held out for validation when the data names no split.",
    )
    preset: Preset = Field("auto", description="Intensity preset used in training and inference.")
    augment: Literal["none", "flip", "wide"] = Field(
        "flip",
        description="Training augmentation: 'flip' (random flips, 90° rotations, intensity "
        "jitter; true means it, false 'none'), or 'wide' (those, plus MONAI's random zoom, "
        "bias field, contrast, blur and Gaussian noise, so the network holds up on noisier "
        "scans and smaller lesions than it saw).",
    )
    dropout: float = Field(0.0, ge=0.0, le=0.9, description="Dropout after each dense layer.")
    cache_rate: float = Field(1.0, ge=0.0, le=1.0, description="Share of volumes cached in RAM.")
    init: str = Field(
        "",
        max_length=4096,
        description="Start from these weights (a `vlm train medical.classify` folder, "
        "checkpoint or file; 'bundled': the shipped ones), fine-tuned: the network their card "
        "describes, with their tensors; their classes must be the data's (empty: a new "
        "network).",
    )
    teacher: str = Field(
        "",
        max_length=4096,
        description="Distil from these medical.classify weights ('bundled': the shipped "
        "ones): the loss becomes kd_alpha x T² x KL(teacher || network) at temperature T = "
        "kd_temperature, plus (1 - kd_alpha) x cross-entropy with the labels (empty: no "
        "teacher).",
    )
    kd_temperature: float = Field(
        4.0, ge=1.0, le=20.0, description="Temperature softening both logits in distillation."
    )
    kd_alpha: float = Field(
        0.7,
        ge=0.0,
        le=1.0,
        description="Weight of the teacher's soft targets in distillation (the labels get the "
        "rest).",
    )


def spec() -> TaskSpec:
    """The `medical.classify` task spec (registered by the plugin's ``register_tasks``)."""
    sample = package_file("vlm_medical", "samples", SAMPLE)
    weights = package_file("vlm_medical", "weights", DEFAULT_WEIGHTS, "model.safetensors")
    return TaskSpec(
        id="medical.classify",
        title="Volume classification with Grad-CAM",
        description=(
            "Classifies CT/MR volumes (NIfTI, DICOM) and 2D images with a MONAI DenseNet121 "
            "and shows where the evidence is: class probabilities, the predicted class, and a "
            "3D Grad-CAM heat map (NIfTI with the input's geometry, and the most salient "
            "slice as an overlay). Research use only: not a medical device, not for diagnosis."
        ),
        domain="medical",
        run="vlm_medical.classify:run",
        # classify.build, with the student networks and distillation from a teacher
        train="vlm_medical.distill:build",
        params=ClassifyParams,
        train_params=ClassifyTrainParams,
        inputs=(Kind.VOLUME, Kind.IMAGE),
        outputs=(Kind.CAPTION, Kind.METRICS, Kind.IMAGE, Kind.VOLUME),
        weights=(WeightsRef(name=DEFAULT_WEIGHTS, filename=str(weights)),),
        samples=(
            Sample(
                "synthetic lesion",
                (sample,),
                description="A 32³ synthetic volume with one faint lesion.",
            ),
        ),
        memory_mb=400,
        # one Grad-CAM forward and backward pass per 8 inputs (the network sees 32³ cubes)
        batch_size=8,
        bench="vlm_medical.pipeline_bench:classify_case",
        # -p explainer=...: the logit of the explained class on the network's input cube
        explain="vlm_medical.explain_targets:classify_target",
        explainers=("gradcam", "integrated_gradients", "occlusion", "kernel_shap", "lime"),
        # `vlm export` / `vlm compress`: the DenseNet with a dynamic batch
        deploy="vlm_medical.deploy:classify_spec",
        notice=NOTICE,
        image_limits=IMAGE_LIMITS,
        capabilities=frozenset({Capability.RUN, Capability.TRAIN, Capability.EVAL}),
        # `vlm eval medical.classify --shift none|noise|small|both`: volumes drawn past the
        # training noise and lesion sizes from held-out seeds (7,700,000 on)
        shifts=EvalShifts(
            write="vlm_medical.classify_shifts_data:write_eval_set", names=SHIFTS, seed=EVAL_SEED
        ),
        # the slim DenseNet at its smallest size, trained 2 steps on 6 volumes of 12 voxels, for
        # the conformance check
        tiny=TinySettings(
            train_data="vlm_medical.synthetic_classes:write_class_dataset",
            train_data_args={"per_class": 3, "seed": 7, "size": 12},
            train_params={"network": "densenet121-slim", "size": 32, "augment": "none"},
            train_config={"max_steps": 2, "batch_size": 2, "val_every": 2},
        ),
    )
