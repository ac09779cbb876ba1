"""The medical plugin's entry module: task specs only (no torch or MONAI import here)."""

from __future__ import annotations

from vlm_core import hookimpl
from vlm_core.kinds import Capability, Kind
from vlm_core.tasks import EvalShifts, Sample, TaskSpec, TinySettings, WeightsRef, package_file
from vlm_medical import bundle
from vlm_medical.classify_params import IMAGE_LIMITS
from vlm_medical.classify_params import spec as classify_spec
from vlm_medical.params import SegmentParams, SegmentTrainParams
from vlm_medical.shifts import EVAL_SEED, SHIFTS


def _segment() -> TaskSpec:
    sample = package_file("vlm_medical", "samples", "synthetic-lesions.nii.gz")
    return TaskSpec(
        id="medical.segment",
        title="Lesion segmentation and measurement",
        description=(
            "Segments lesions in CT/MR volumes (NIfTI, DICOM) and 2D images with MONAI 3D and "
            "2D UNets and sliding-window inference, then measures each lesion: voxels, volume "
            "in ml, bounding box, largest diameter in mm. Research use only: not a medical "
            "device, not for diagnosis."
        ),
        domain="medical",
        run="vlm_medical.segment:run",
        train="vlm_medical.train:build",
        params=SegmentParams,
        train_params=SegmentTrainParams,
        inputs=(Kind.VOLUME, Kind.IMAGE),
        outputs=(Kind.MASK, Kind.METRICS, Kind.FILE),
        weights=(
            WeightsRef(
                name="segment-unet3d",
                filename=str(
                    package_file("vlm_medical", "weights", "segment-unet3d", "model.safetensors")
                ),
            ),
            WeightsRef(
                name="segment-unet2d",
                filename=str(
                    package_file("vlm_medical", "weights", "segment-unet2d", "model.safetensors")
                ),
            ),
        ),
        samples=(Sample("synthetic lesions", (sample,), description="A 64³ synthetic volume."),),
        memory_mb=600,
        # volumes are segmented one at a time whatever the batch (measured: the same CPU time
        # at 1, 2 and 8), so one per call: the runner then holds two volumes (the one being
        # segmented and the one read ahead), not two batches of them
        batch_size=1,
        bench="vlm_medical.pipeline_bench:segment_case",
        # -p explainer=...: a predicted region's summed logit margin (-p explain=N: one lesion)
        explain="vlm_medical.explain_targets:segment_target",
        explainers=("gradcam", "integrated_gradients", "occlusion", "kernel_shap", "lime"),
        # `vlm export` / `vlm compress`: the UNet (3D, or 2D weights' 2D one) with dynamic
        # batch and sides
        deploy="vlm_medical.deploy:segment_spec",
        notice="Research use only: not a medical device, not for diagnosis.",
        image_limits=IMAGE_LIMITS,
        capabilities=frozenset({Capability.RUN, Capability.TRAIN, Capability.EVAL}),
        # `vlm eval medical.segment --shift noise|small|both|none`: volumes (images for 2D
        # weights) drawn past the training ranges from held-out seeds
        shifts=EvalShifts(
            write="vlm_medical.shift_data:write_eval_set", names=SHIFTS, seed=EVAL_SEED
        ),
        # 32-voxel windows; and the 3D UNet trained 2 steps on 16-voxel patches of 4 volumes of
        # 24 voxels, for the conformance check
        tiny=TinySettings(
            params={"roi": 32},
            train_data="vlm_medical.synthetic:write_dataset",
            train_data_args={"n": 4, "seed": 5, "size": 24},
            train_params={"patch": 16, "roi": 16, "samples_per_volume": 1, "val_fraction": 0.25},
            train_config={"max_steps": 2, "batch_size": 2, "val_every": 2},
        ),
    )


@hookimpl
def register_tasks(register):  # type: ignore[no-untyped-def]
    register(_segment())
    register(bundle.spec())
    register(classify_spec())


# the DICOM input reader (its @hookimpl is in dicom.py; pydicom is imported on first use)
from vlm_medical.dicom import register_readers  # noqa: E402, F401
