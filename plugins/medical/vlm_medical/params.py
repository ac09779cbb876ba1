"""Parameter models of the medical tasks (light: pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vlm_core.tasks import TaskParams

Preset = Literal["auto", "mr", "ct-abdomen", "ct-lung", "ct-bone", "ct-brain", "ct-liver", "none"]


class SegmentParams(TaskParams):
    weights: str = Field(
        "",
        max_length=4096,
        description="A `vlm train medical.segment` output folder or checkpoint (empty: the "
        "bundled UNets trained on synthetic lesions, 3D for volumes and 2D for images).",
    )
    preset: Preset = Field(
        "auto", description="Intensity preset: percentile scaling (auto, mr) or a CT window."
    )
    roi: int = Field(64, ge=16, le=512, description="Sliding-window side in voxels.")
    overlap: float = Field(0.25, ge=0.0, le=0.9, description="Overlap of sliding windows.")
    sw_batch: int = Field(4, ge=1, le=256, description="Windows per forward pass.")
    blend: Literal["gaussian", "constant"] = Field(
        "gaussian", description="How overlapping windows are blended."
    )
    orientation: Literal["native", "RAS", "LPS"] = Field(
        "native", description="Reorient before inference (the mask returns to the input grid)."
    )
    spacing_mm: float = Field(
        0.0, ge=0.0, le=10.0, description="Resample to this isotropic spacing first (0: native)."
    )
    fill_holes: bool = Field(True, description="Fill holes inside each segmented region.")
    largest_only: bool = Field(False, description="Keep only the largest region of each label.")
    min_voxels: int = Field(
        10, ge=0, le=10_000_000, description="Drop regions smaller than this many voxels."
    )
    dicom_seg: bool = Field(
        False,
        description="Also write the mask as a DICOM SEG that refers to the input series (DICOM "
        "input only; needs the dicom-seg extra). It carries the series' geometry and UIDs, "
        "with the patient and study names, IDs and dates left empty.",
    )
    explain: str = Field(
        "",
        max_length=128,
        description="With explainer=...: the region whose summed logit is explained (empty: "
        "every predicted lesion; N: the N-th lesion, largest first, as in the measurements "
        "table; 'CLASS N' for a class of multi-class weights).",
    )


class SegmentTrainParams(TaskParams):
    network: Literal["unet", "swinunetr"] = Field(
        "unet", description="MONAI network: UNet, or SwinUNETR (attention-based)."
    )
    spatial_dims: int = Field(
        3,
        ge=2,
        le=3,
        description="3: a 3D network trained on volumes; 2: a 2D network trained on 2D images "
        "(NIfTI or PNG), which segments images, and volumes slice by slice.",
    )
    patch: int = Field(
        48,
        ge=16,
        le=256,
        description="Training patch side in voxels (UNet: a multiple of 8; SwinUNETR: of 32, "
        "at least 64).",
    )
    samples_per_volume: int = Field(
        2, ge=1, le=32, description="Random patches per volume per step (half on lesions)."
    )
    val_fraction: float = Field(
        0.2, ge=0.05, le=0.5, description="Share held out when dataset.json lists no validation."
    )
    preset: Preset = Field("auto", description="Intensity preset used in training and inference.")
    cache_rate: float = Field(1.0, ge=0.0, le=1.0, description="Share of volumes cached in RAM.")
    roi: int = Field(64, ge=16, le=512, description="Sliding-window side for validation.")
    augment: Literal["flip", "wide"] = Field(
        "wide",
        description="Training augmentation: 'flip' (flips, small intensity scale and shift), or "
        "'wide' (those, plus MONAI's random zoom, bias field, contrast, blur and Gaussian "
        "noise, so the network holds up on noisier scans and smaller lesions than it saw).",
    )
    init: str = Field(
        "",
        max_length=4096,
        description="Start from these weights (a `vlm train medical.segment` folder, "
        "checkpoint or file): the network their card describes, e.g. a pruned one, with their "
        "tensors, fine-tuned; network and spatial_dims must match them (empty: a new network).",
    )
