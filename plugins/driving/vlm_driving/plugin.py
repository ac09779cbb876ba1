"""The driving plugin's entry module: task specs and the MP4 reader (no torch import here)."""

from __future__ import annotations

from vlm_core import hookimpl
from vlm_core.io.readers import InputReader
from vlm_core.kinds import Capability, Kind
from vlm_core.tasks import (
    ImageLimits,
    Sample,
    TaskSpec,
    TinySettings,
    WeightsRef,
    package_file,
)
from vlm_driving.params import DetectParams, DetectTrainParams

#: Road photographs and video frames: the detector scales the shorter side to its input size
#: (224 px for the bundled weights) within a cap on the longer one (400 px), so a strip more
#: elongated than 8:1 would reach it under 28 px tall, and an image under 32 px holds no object
#: it was trained to find.
IMAGE_LIMITS = ImageLimits(min_side=32, max_aspect=8)


def _detect() -> TaskSpec:
    return TaskSpec(
        id="driving.detect",
        title="Road-scene detection and tracking",
        description=(
            "Finds cars, trucks, buses, motorcycles, bicycles, pedestrians, traffic lights and "
            "traffic signs in road photographs and videos with a torchvision detector (FCOS, "
            "RetinaNet or Faster R-CNN): boxes with classes and scores, overlays, COCO JSON and "
            "YOLO txt; for videos also ByteTrack track ids, an annotated MP4 and per-frame "
            "JSONL. The bundled detector was trained on the plugin's generated road scenes; "
            "a COCO-pretrained torchvision detector is used with `coco_model` and "
            "`coco_weights`. Trains on COCO or YOLO data with `vlm train driving.detect`."
        ),
        domain="driving",
        run="vlm_driving.detect:run",
        train="vlm_driving.train:build",
        params=DetectParams,
        train_params=DetectTrainParams,
        inputs=(Kind.IMAGE, Kind.VIDEO),
        image_limits=IMAGE_LIMITS,
        outputs=(Kind.BOXES, Kind.TRACKS, Kind.METRICS),
        weights=(
            WeightsRef(
                name="fcos-lcnet",
                filename=str(
                    package_file("vlm_driving", "weights", "detector", "model.safetensors")
                ),
            ),
        ),
        samples=(
            Sample(
                "generated street",
                (package_file("vlm_driving", "samples", "street.png"),),
                description="A road scene from the plugin's generator (held out of training).",
            ),
            Sample(
                "generated drive (2 s)",
                (package_file("vlm_driving", "samples", "drive.mp4"),),
                description="Two seconds of a generated drive at 640x360: tracks and an MP4.",
            ),
        ),
        memory_mb=600,
        bench="vlm_driving.pipeline_bench:case",
        # one box's score of an image (-p explain=N picks the box); videos are not explained
        explain="vlm_driving.explain_target:detect_target",
        explainers=("gradcam", "integrated_gradients", "occlusion", "kernel_shap", "lime"),
        # `vlm export`: backbone + FCOS head convolutions; decoding and NMS stay in Python
        deploy="vlm_driving.deploy:deploy_spec",
        capabilities=frozenset({Capability.RUN, Capability.TRAIN, Capability.EVAL}),
        # the trainer settings of the default weights (weights/detector/TRAINING.md)
        train_defaults={
            "max_steps": 4000,
            "batch_size": 8,
            "lr": 2e-3,
            "schedule": "cosine",
            "warmup_steps": 200,
            "clip_grad_norm": 10.0,
            "weight_decay": 1e-4,
            "val_every": 500,
        },
        # a small input size; and a slim FCOS trained 2 steps on 6 scenes of 64 px, for the
        # conformance check
        tiny=TinySettings(
            params={"input_size": 96},
            train_data="vlm_driving.scenes:write_dataset",
            train_data_args={"count": 6, "size": (64, 64), "seed": 50},
            train_params={
                "backbone": "timm:lcnet_050",
                "image_width": 64,
                "image_height": 64,
                "fpn_channels": 64,
                "head_convs": 1,
                "val_fraction": 0.25,
            },
            train_config={"max_steps": 2, "batch_size": 2, "val_every": 2},
        ),
    )


@hookimpl
def register_tasks(register):  # type: ignore[no-untyped-def]
    register(_detect())


@hookimpl
def register_readers(register):  # type: ignore[no-untyped-def]
    register(
        InputReader(
            format="mp4",
            probe="vlm_driving.video:probe",
            load="vlm_driving.video:load",
            description="MP4 video (PyAV): every frame as RGB",
        )
    )
