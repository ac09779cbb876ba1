"""The GPU check's registry: its suites in priority order and every GPU line with its goal.

A line's goal comes from the issue or the docs that set it (docs/benchmarks.md); a ratio is
always measured in the same run (engine and raw library alternating), and the raw side is also
held against the H200 anchor (``benchmarks/anchors_h200.json``, a copy of
``shared/anchors/h200-raw-libraries-2026-11-28.json``, which does not travel to the GPU
machine). Estimates are seconds on one H100/H200 (planning under ``--budget``); caps are the
seconds after which a suite is killed.
"""

from __future__ import annotations

import json
from pathlib import Path

import gpu_check_engines as engines
import gpu_check_tasks as tasks
from gpu_check import Line, Suite

ANCHORS = {
    row["name"]: row["items_per_s"]
    for row in json.loads((Path(__file__).with_name("anchors_h200.json")).read_text())["rows"]
    if "items_per_s" in row
}


def anchor(name: str) -> tuple[str, float]:
    return name, ANCHORS[name]


#: imported once by the check before it forks the suites (CUDA is not initialised by importing)
PRELOAD = ("numpy", "PIL.Image", "torch", "torchvision", "timm", "pydantic", "vlm_core.plugins")

# name, function, cap, estimate on a GPU, estimate in a dry run on 2 CPU cores
SUITES = [
    Suite("environment", tasks.environment, 60, 8, 3),
    Suite("backbone", engines.backbone, 120, 22, 6),
    Suite("fastpath", engines.fastpath, 180, 55, 4),
    Suite("clip", engines.clip, 120, 22, 6),
    Suite("medical", engines.medical, 120, 22, 5),
    Suite("training_engines", engines.training_engines, 120, 35, 7),
    Suite("detect", engines.detect, 150, 40, 10),
    Suite("executor", engines.executor, 150, 35, 7),
    Suite("gpu_tests", tasks.gpu_tests, 180, 45, 8),
    Suite("ddp", tasks.ddp, 120, 25, 9),
    Suite("train_tasks", tasks.train_tasks, 180, 40, 15),
    Suite("dashboard", tasks.dashboard, 120, 20, 8),
    Suite("pipeline", engines.pipeline, 120, 20, 3),
    Suite("runtime", engines.runtime, 90, 15, 5),
    Suite("deploy", tasks.deploy, 240, 30, 4),
    Suite("optional", tasks.optional, 90, 15, 4),
]

RATIO = (">=", 0.95)
SAME = "engine/raw ≥ 0.95 (same run, alternating)"

LINES = [
    Line("env.cuda", "environment", "torch sees the GPU", "CUDA available"),
    Line(
        "env.plugins", "environment", "the 4 built-in plugins load with their tasks", "all healthy"
    ),
    Line(
        "backbone.vit_b16",
        "backbone",
        "vit_base_patch16_224 bf16 bs256: engine vs raw timm",
        SAME,
        "speed",
        RATIO,
        anchor("timm vit_base_patch16_224 infer bf16 bs256"),
    ),
    Line(
        "backbone.resnet50",
        "backbone",
        "resnet50 bf16 channels-last bs256: engine vs raw timm",
        SAME,
        "speed",
        RATIO,
        anchor("timm resnet50 infer bf16 bs256 cl"),
    ),
    Line(
        "fastpath.speedup",
        "fastpath",
        "ViT-B/16 fast path (bf16 weights, compile reduce-overhead / CUDA graphs) vs raw eager",
        "≥ 1.30x raw eager timm",
        "speed",
        (">=", 1.30),
        anchor("timm vit_base_patch16_224 infer bf16 bs256"),
    ),
    Line(
        "fastpath.mfu",
        "fastpath",
        "ViT-B/16 fast path MFU vs the measured bf16 matmul ceiling",
        "MFU ≥ 60%",
        "speed",
        (">=", 0.60),
    ),
    Line(
        "clip.image",
        "clip",
        "open_clip ViT-B-32 encode_image bf16 bs1024: engine vs raw",
        SAME,
        "speed",
        RATIO,
        anchor("open_clip ViT-B-32 encode_image bf16 bs1024"),
    ),
    Line(
        "clip.text",
        "clip",
        "open_clip ViT-B-32 encode_text bf16 bs1024: engine vs raw",
        SAME,
        "speed",
        RATIO,
        anchor("open_clip ViT-B-32 encode_text bf16 bs1024"),
    ),
    Line(
        "medical.sliding_window",
        "medical",
        "MONAI 3D UNet sliding window 320x320x160, roi 96, sw-batch 8, bf16: plugin vs raw MONAI",
        "plugin/raw ≥ 0.95",
        "speed",
        RATIO,
        anchor("monai UNet3D sliding_window 320x320x160 roi96 sw8 bf16 (Mvox)"),
    ),
    Line(
        "medical.same_labels",
        "medical",
        "the plugin's sliding-window labels equal raw MONAI's",
        "identical",
    ),
    Line(
        "gan.dcgan",
        "training_engines",
        "DCGAN 64x64 train step bf16 bs256: GAN engine vs raw loop",
        SAME,
        "speed",
        RATIO,
        anchor("DCGAN 64x64 train step bf16 bs256 (img/s)"),
    ),
    Line(
        "trainer.resnet50",
        "training_engines",
        "resnet50 train step bf16 bs256: the trainer vs a hand-written loop",
        SAME,
        "speed",
        RATIO,
        anchor("timm resnet50 train bf16 bs256 AdamW"),
    ),
    Line(
        "detect.fcos",
        "detect",
        "FCOS ResNet-50 FPN 720p fp32 bs8: driving.detect vs torchvision",
        "plugin/raw ≥ 1.0",
        "speed",
        (">=", 1.0),
        anchor("torchvision fcos_resnet50_fpn 720p fp32 bs8 (img/s)"),
    ),
    Line(
        "detect.fasterrcnn",
        "detect",
        "Faster R-CNN ResNet-50 FPN v2 720p fp32 bs8: driving.detect vs torchvision",
        "plugin/raw ≥ 1.0",
        "speed",
        (">=", 1.0),
        anchor("torchvision fasterrcnn_resnet50_fpn_v2 720p fp32 bs8 (img/s)"),
    ),
    Line(
        "executor.end_to_end",
        "executor",
        "files → results, nvJPEG decode on the GPU, resnet50 bf16 bs256: vs model only",
        "end to end ≥ 0.80 x model only",
        "speed",
        (">=", 0.80),
    ),
    Line(
        "executor.bounded_memory",
        "executor",
        "host memory flat over the folder, no errors",
        "RSS at the end ≤ RSS at a quarter + 5%",
    ),
    Line(
        "pipeline.driving",
        "pipeline",
        "vlm run driving.detect over 100 images vs the detector alone (wall)",
        "pipeline ≥ 0.80 x model only",
        "speed",
        (">=", 0.80),
    ),
    Line(
        "pipeline.classify",
        "pipeline",
        "vlm run medical.classify over 100 volumes vs Grad-CAM forward+backward alone (wall)",
        "pipeline ≥ 0.80 x model only",
        "speed",
        (">=", 0.80),
    ),
    Line(
        "gpu_tests.oom",
        "gpu_tests",
        "a real CUDA out-of-memory is backed off (test_runtime)",
        "test passes",
    ),
    Line("gpu_tests.all", "gpu_tests", "every `gpu`-marked test", "all pass"),
    Line(
        "ddp.torchrun",
        "ddp",
        "`torchrun --nproc-per-node 1` training on the GPU (art.generate)",
        "completes",
    ),
    Line(
        "ddp.nccl",
        "ddp",
        "the torchrun run's process group is NCCL, the model under DDP",
        "NCCL + DDP",
    ),
    *(
        Line(
            f"train.{task}",
            "train_tasks",
            f"{task}: a few AMP (bf16) training steps, tiny settings",
            "completes, finite loss, checkpoint",
        )
        for task in (
            "art.generate",
            "caption.describe",
            "driving.detect",
            "medical.classify",
            "medical.segment",
        )
    ),
    Line(
        "dashboard.run",
        "dashboard",
        "the dashboard runs driving.detect on its sample on CUDA",
        "run recorded ok on cuda",
    ),
    Line(
        "cache.budget",
        "runtime",
        "model cache cycling 5 models under a 2-model budget",
        "never over budget",
    ),
    Line(
        "attention.sdpa",
        "runtime",
        "attention on SDPA vs nn.MultiheadAttention (worst mask)",
        "raw/engine time ≥ 0.95",
        "speed",
        RATIO,
    ),
    Line(
        "familiarity.cost",
        "optional",
        "familiarity check (tap + k-NN verdict) on resnet50 bf16 bs32 vs its bare forward",
        "≤ 5% of the forward pass",
        "speed",
        ("<=", 0.05),
    ),
    Line(
        "explain.time",
        "optional",
        "explain engine per image on resnet50 224px: Grad-CAM, Integrated Gradients, Occlusion",
        "measured",
    ),
    Line(
        "export.vit",
        "deploy",
        "vit_base_patch16_224 bf16 bs32: torch.export program and AOTInductor package vs eager",
        "measured",
    ),
    Line(
        "export.detector",
        "deploy",
        "driving.detect's exported network bf16 bs8: torch.export and AOTInductor vs eager",
        "measured",
    ),
    Line("onnx.cuda", "optional", "onnxruntime-CUDA latency vs eager", "≤ eager"),
    Line("onnx.tensorrt", "optional", "TensorRT latency vs eager", "≤ eager"),
    Line(
        "ray.one_gpu",
        "optional",
        "driving.detect on 64 scenes: `--engine ray` (1 actor, 1 GPU) against the local run",
        "completes, files identical to the local run's",
    ),
]
