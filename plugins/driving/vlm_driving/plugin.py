"""The driving plugin's entry module: task specs and the MP4 reader (no torch import here)."""

from __future__ import annotations

from vlm_core import hookimpl
from vlm_core.io.readers import InputReader
from vlm_core.kinds import Capability, Kind
from vlm_core.outputs import OutputKind
from vlm_core.tasks import (
    EvalShifts,
    ImageLimits,
    Sample,
    TaskSpec,
    TinySettings,
    WeightsRef,
    package_file,
)
from vlm_driving.params import DetectParams, DetectTrainParams, FuseParams
from vlm_driving.shifts import EVAL_SEED, SHIFTS

#: Road photographs and video frames: the detector scales the shorter side to its input size
#: (224 px for the bundled weights) within a cap on the longer one (400 px), so a strip more
#: elongated than 8:1 would reach it under 28 px tall, and an image under 32 px holds no object
#: it was trained to find.
IMAGE_LIMITS = ImageLimits(min_side=32, max_aspect=8)

#: the output kind of driving.fuse: objects with their distances (vlm_driving.fuse_outputs)
RANGES = "driving.ranges"


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
        weights=_detector_weights(),
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
        # `vlm eval driving.detect --shift NAME`: held-out scenes of the generator under a
        # shift, every one measured (eval_all: not the validation split of them)
        shifts=EvalShifts(
            write="vlm_driving.shift_data:write_eval_set",
            names=SHIFTS,
            seed=EVAL_SEED,
            count=500,
            params={"eval_all": True},
        ),
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


def _detector_weights() -> tuple[WeightsRef, ...]:
    return (
        WeightsRef(
            name="fcos-lcnet",
            filename=str(package_file("vlm_driving", "weights", "detector", "model.safetensors")),
        ),
    )


def _fuse() -> TaskSpec:
    return TaskSpec(
        id="driving.fuse",
        title="Camera + LiDAR: the distance to every object",
        description=(
            "Finds road objects in the camera images of a camera + LiDAR scene (a KITTI-layout "
            "frame or sequence: a Velodyne .bin, PCD, LAS or LAZ sweep with its camera image "
            "and calibration) with driving.detect's detector and parameters (a sequence "
            "tracked with ByteTrack), and gives each box the distance to the object from the "
            "LiDAR points in it (ground removed), their count, a confidence and a 3D location: "
            "KITTI result files, JSON, labelled overlays (an MP4 for a sequence), the points on "
            "the image and a bird's-eye view."
        ),
        domain="driving",
        run="vlm_driving.fuse:run",
        params=FuseParams,
        inputs=(Kind.SCENE,),
        image_limits=IMAGE_LIMITS,
        outputs=(RANGES,),
        weights=_detector_weights(),
        samples=(
            Sample(
                "generated KITTI frames",
                # the sweeps; each reader finds its image_2/ and calib/ files in the layout
                tuple(
                    package_file("vlm_driving", "samples", "kitti", "velodyne", f"{i:06d}.bin")
                    for i in range(3)
                ),
                description="Three camera + LiDAR frames from the plugin's generator in KITTI's "
                "layout (image_2, velodyne, calib, label_2), with ground-truth distances in "
                "distances.json.",
            ),
        ),
        memory_mb=800,
        capabilities=frozenset({Capability.RUN}),
        tiny=TinySettings(params={"input_size": 96}),
    )


@hookimpl
def register_tasks(register):  # type: ignore[no-untyped-def]
    register(_detect())
    register(_fuse())


@hookimpl
def register_output_kinds(register):  # type: ignore[no-untyped-def]
    functions = "vlm_driving.fuse_outputs"
    register(
        OutputKind(
            name=RANGES,
            type=f"{functions}:Ranges",
            summary=f"{functions}:summary",
            exporters={
                "kitti": f"{functions}:export_kitti",
                "json": f"{functions}:export_json",
                "overlay": f"{functions}:export_overlay",
                "points": f"{functions}:export_points",
                "bev": f"{functions}:export_bev",
            },
            cli_line=f"{functions}:cli_line",
            render=f"{functions}:render",
            history="vlm_dashboard.history_views:json_history",
            description="detected objects with their LiDAR distances, per frame",
        )
    )


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
    clouds = {
        "kitti-bin": "KITTI Velodyne sweep (.bin)",
        "pcd": "PCD point cloud (pypcd4: ascii, binary, binary_compressed)",
        "las": "LAS point cloud (laspy)",
        "laz": "LAZ point cloud (laspy with lazrs)",
    }
    for fmt, what in clouds.items():
        register(
            InputReader(
                format=fmt,
                probe="vlm_driving.scene_reader:probe",
                load="vlm_driving.scene_reader:load",
                group="vlm_driving.scene_reader:group",
                description=f"{what} with its camera image and calibration beside it "
                "(KITTI object or tracking layout, or NAME.png + NAME.txt)",
            )
        )
