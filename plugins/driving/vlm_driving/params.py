"""Parameter models of the driving tasks (light: pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from vlm_core.tasks import TaskParams

_WEIGHTS = Field(
    "",
    max_length=1000,
    description="Detector weights: a `vlm train driving.detect` output folder, checkpoint or "
    "model file (empty: the bundled detector of generated road scenes).",
)
CocoModel = Literal[
    "",
    "fcos_resnet50_fpn",
    "retinanet_resnet50_fpn_v2",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
]
_COCO_MODEL = Field(
    "",
    description="A COCO-pretrained torchvision detector to use instead of `weights`, its "
    "classifier mapped onto the driving classes (needs coco_weights).",
)
#: The smallest ``input_size`` besides 0: below it the detector's resize leaves the shorter side of
#: a wide image under one pixel (torchvision cannot resize to that) and finds nothing anyway.
MIN_INPUT_SIZE = 64
_COCO_WEIGHTS = Field(
    "",
    max_length=1000,
    description="The COCO detector's weights: the .pth file torchvision downloads, or "
    "`torchvision` to download it (online only).",
)


class DetectorParams(TaskParams):
    """The camera detector's parameters, shared by every task that runs it."""

    score_threshold: float = Field(0.4, ge=0.0, le=1.0, description="Lowest score reported.")
    nms_iou: float = Field(
        0.5, gt=0.0, le=1.0, description="IoU above which NMS drops the lower-scored box."
    )
    classes: str = Field(
        "",
        max_length=500,
        description="Comma-separated classes to report, e.g. `car, pedestrian` (empty: all).",
    )
    input_size: int = Field(
        0,
        ge=0,
        le=2048,
        description=f"Shorter side the detector sees, in pixels: 0 (the weights' own) or "
        f"{MIN_INPUT_SIZE} to 2048 (larger finds smaller objects, slower).",
    )
    max_detections: int = Field(100, ge=1, le=1000, description="Most boxes per image or frame.")
    track: bool = Field(True, description="Track objects through videos (ByteTrack ids).")
    track_seconds: float = Field(
        1.2, ge=0.0, le=30.0, description="How long a tracker keeps a lost object's id, seconds."
    )
    weights: str = _WEIGHTS
    coco_model: CocoModel = _COCO_MODEL
    coco_weights: str = _COCO_WEIGHTS

    @field_validator("input_size")
    @classmethod
    def _input_size(cls, value: int) -> int:
        if 0 < value < MIN_INPUT_SIZE:
            raise ValueError(
                f"input_size must be 0 (the weights' own) or at least {MIN_INPUT_SIZE} pixels, "
                f"got {value}"
            )
        return value

    @model_validator(mode="after")
    def _one_detector(self) -> DetectorParams:
        """``coco_model`` and ``coco_weights`` go together, and replace ``weights``: a
        parameter that would be ignored is refused, not dropped."""
        if self.coco_weights and not self.coco_model:
            raise ValueError(
                "coco_weights is given without coco_model; name the COCO detector the weights "
                "belong to (e.g. -p coco_model=fasterrcnn_resnet50_fpn_v2) or drop coco_weights"
            )
        if self.coco_model and not self.coco_weights:
            raise ValueError(
                "coco_model needs coco_weights (the torchvision .pth file, or `torchvision` to "
                "download it)"
            )
        if self.coco_model and self.weights:
            raise ValueError("weights and coco_model are two different detectors; give one of them")
        return self


class DetectParams(DetectorParams):
    """`driving.detect`: the detector's parameters and the box an explainer explains."""

    explain: str = Field(
        "",
        max_length=10,
        description="With -p explainer=...: the box whose score is explained, by its number in "
        "the detections as listed (0, 1, ...; empty or 0: the highest-scoring box). Images only.",
    )

    @field_validator("explain")
    @classmethod
    def _explain(cls, value: str) -> str:
        text = value.strip()
        if text and not (text.isdigit() and text.isascii()):
            raise ValueError(f"explain must be a box number (0, 1, ...), got {value!r}")
        return text


#: the fewest LiDAR points (ground removed) in a box for it to get a distance
MIN_POINTS = 5


class FuseParams(DetectorParams):
    """`driving.fuse`: the detector's parameters and how LiDAR points become distances."""

    min_points: int = Field(
        MIN_POINTS,
        ge=1,
        le=1000,
        description="Fewest LiDAR points (ground removed) in a box for it to get a distance; "
        "fewer: no distance (null).",
    )
    ground_tolerance: float = Field(
        0.2,
        ge=0.0,
        le=2.0,
        description="Points within this many metres of the fitted ground plane (or below it) "
        "are ground and not counted.",
    )
    box_shrink: float = Field(
        0.05,
        ge=0.0,
        le=0.4,
        description="Share of a box's width and height cut from each side before its points "
        "are counted (box edges bleed onto the background).",
    )


class DetectTrainParams(TaskParams):
    family: Literal["fcos", "retinanet", "fasterrcnn"] = Field(
        "fcos",
        description="torchvision detector family: fcos, retinanet or fasterrcnn.",
    )
    backbone: str = Field(
        "timm:lcnet_100",
        max_length=200,
        description="timm:<model> (through an FPN) or torchvision:resnet50 / "
        "torchvision:mobilenet_v3_large.",
    )
    backbone_weights: str = Field(
        "",
        max_length=1000,
        description="ImageNet weights of a timm backbone (a file, timm:<tag> or hf-hub:...; "
        "empty: random).",
    )
    coco_weights: str = Field(
        "",
        max_length=1000,
        description="Start from torchvision's COCO detector (a .pth file, or `torchvision`): "
        "its classifier rows of the data's classes (driving names) are kept.",
    )
    init_weights: str = Field(
        "",
        max_length=1000,
        description="Fine-tune trained detector weights (a file or folder, or `bundled`).",
    )
    image_width: int = Field(400, ge=64, le=2048, description="Training image width, pixels.")
    image_height: int = Field(224, ge=64, le=2048, description="Training image height, pixels.")
    fpn_channels: int = Field(64, ge=32, le=512, multiple_of=32, description="FPN width.")
    head_convs: int = Field(2, ge=1, le=4, description="Convolutions in each head branch.")
    augment: bool = Field(True, description="Photometric, zoom-out, scale and flip augmentation.")
    val_fraction: float = Field(
        0.1, ge=0.0, lt=0.9, description="Share held out for validation (without a val split)."
    )
    eval_all: bool = Field(
        False,
        description="`vlm eval` on every image of --data (a held-out set) instead of the "
        "validation split training made of it.",
    )
