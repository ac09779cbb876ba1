"""GPU check suites of the core's engines and the plugins' inference, each beside the raw library
doing the same work in the same process (``vlm_core.bench`` and the plugin benchmarks).

Every suite takes a :class:`~gpu_check.Ctx` and returns ``rows`` (what the benchmark measured),
``values`` (one per GPU line: the figure judged against the line's goal, or None when it was
not measured), ``notes`` (the figure in words, or why it was not measured) and ``raw`` (the raw
library's figure, held against the H200 anchor). A dry run takes the same code path at tiny
sizes on the CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpu_check import Ctx

NEEDS_CUDA = "needs CUDA; not measured in a dry run on the CPU"


class Measured:
    """What a suite found, in the shape every suite JSON has."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.values: dict[str, Any] = {}
        self.notes: dict[str, str] = {}
        self.raw: dict[str, float] = {}

    def set(self, line: str, value: Any, note: str, raw: float | None = None) -> None:
        self.values[line] = value
        self.notes[line] = note
        if raw is not None:
            self.raw[line] = raw

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "values": self.values, "notes": self.notes, "raw": self.raw}


def _ceiling(ctx: Ctx) -> float | None:
    if ctx.dry_run:
        return None
    import torch

    from vlm_core.bench.timing import matmul_ceiling_flops

    return matmul_ceiling_flops(torch.device("cuda"))


def backbone(ctx: Ctx) -> dict[str, Any]:
    """Engine vs raw timm, ViT-B/16 and ResNet-50, bf16, batch 256, alternating rounds."""
    from vlm_core.bench.backbones import bench_backbone

    m = Measured()
    ceiling = _ceiling(ctx)
    if ceiling:
        m.rows.append({"bench": "matmul_ceiling", "tflop_s": round(ceiling / 1e12, 1)})
    models = (
        ("backbone.vit_b16", "vit_base_patch16_224", "test_vit"),
        ("backbone.resnet50", "resnet50", "test_resnet"),
    )
    for line, name, tiny in models:
        if ctx.dry_run:
            row = bench_backbone(tiny, device="cpu", batch_size=1, rounds=1, warmup=1)
        else:
            row = bench_backbone(
                name, device=ctx.device, batch_size=256, rounds=10, matmul_flops=ceiling
            )
        m.rows.append(row)
        m.set(
            line,
            row["ratio"],
            f"{row['model']} {row['dtype']} bs{row['batch']}: engine "
            f"{row['engine_img_s']:,.0f} vs raw {row['raw_img_s']:,.0f} img/s = "
            f"{row['ratio']:.3f}",
            raw=row["raw_img_s"],
        )
    return m.as_dict()


def fastpath(ctx: Ctx) -> dict[str, Any]:
    """ViT-B/16 with bf16 weights, channels-last and torch.compile (CUDA graphs) against raw
    eager timm; MFU against the matmul ceiling measured here."""
    from vlm_core.bench.backbones import bench_backbone

    m = Measured()
    if ctx.dry_run:  # the same row without compiling (CUDA graphs are GPU-only)
        m.rows.append(
            bench_backbone(
                "test_vit", device="cpu", batch_size=2, rounds=2, warmup=1, cast_weights=True
            )
        )
        m.set("fastpath.speedup", None, NEEDS_CUDA + " (torch.compile with CUDA graphs)")
        m.set("fastpath.mfu", None, NEEDS_CUDA)
        return m.as_dict()
    ceiling = _ceiling(ctx)
    row = bench_backbone(
        "vit_base_patch16_224",
        device=ctx.device,
        batch_size=256,
        rounds=10,
        compile_mode="reduce-overhead",
        cast_weights=True,
        matmul_flops=ceiling,
        warmup=5,
    )
    m.rows.append(row)
    m.set(
        "fastpath.speedup",
        row["ratio"],
        f"compiled {row['engine_img_s']:,.0f} vs raw eager "
        f"{row['raw_img_s']:,.0f} img/s = {row['ratio']:.3f}x",
        raw=row["raw_img_s"],
    )
    m.set(
        "fastpath.mfu",
        row["mfu"],
        f"{row['engine_tflop_s']:.0f} TFLOP/s of a measured "
        f"{(ceiling or 0) / 1e12:.0f}: MFU {row['mfu']:.1%}",
    )
    return m.as_dict()


def clip(ctx: Ctx) -> dict[str, Any]:
    """open_clip ViT-B-32 image and text encoding, engine vs raw, bf16, batch 1024."""
    from vlm_core.bench.clip import bench_clip

    m = Measured()
    ceiling = _ceiling(ctx)
    for line, texts in (("clip.image", False), ("clip.text", True)):
        if ctx.dry_run:
            row = bench_clip(
                "vlm-test-clip", device="cpu", batch_size=4, rounds=2, warmup=1, texts=texts
            )
        else:
            row = bench_clip(
                "ViT-B-32",
                device=ctx.device,
                batch_size=1024,
                rounds=10,
                warmup=3,
                texts=texts,
                matmul_flops=ceiling,
            )
        unit = "texts" if texts else "img"
        m.rows.append(row)
        m.set(
            line,
            row["ratio"],
            f"{row['model']} {row['dtype']} bs{row['batch']}: engine "
            f"{row[f'engine_{unit}_s']:,.0f} vs raw {row[f'raw_{unit}_s']:,.0f} {unit}/s = "
            f"{row['ratio']:.3f}",
            raw=row[f"raw_{unit}_s"],
        )
    return m.as_dict()


def medical(ctx: Ctx) -> dict[str, Any]:
    """MONAI 3D UNet sliding window through medical.segment vs raw MONAI (320x320x160, 96³
    windows, sw-batch 8, bf16)."""
    from vlm_medical.bench import bench_sliding_window

    m = Measured()
    if ctx.dry_run:
        row = bench_sliding_window(
            device="cpu", shape=(40, 40, 24), roi=24, sw_batch=2, rounds=1, channels=(4, 8, 16)
        )
    else:
        row = bench_sliding_window(device=ctx.device, rounds=5)
    m.rows.append(row)
    m.set(
        "medical.sliding_window",
        row["ratio"],
        f"{row['network']} {row['precision']} "
        f"{'x'.join(map(str, row['volume']))}: plugin {row['plugin_mvoxel_s']:,.1f} vs raw "
        f"{row['raw_mvoxel_s']:,.1f} Mvoxel/s = {row['ratio']:.3f}",
        raw=row["raw_mvoxel_s"],
    )
    m.set(
        "medical.same_labels",
        row["same_labels"],
        "the plugin's labels equal raw MONAI's"
        if row["same_labels"]
        else "the plugin's labels differ from raw MONAI's",
    )
    return m.as_dict()


def training_engines(ctx: Ctx) -> dict[str, Any]:
    """A DCGAN step through the GAN engine (64x64, bs256, bf16) and a ResNet-50 step through the
    trainer (bs256, bf16), each against the hand-written PyTorch loop."""
    from vlm_core.bench.gan import bench_gan_step
    from vlm_core.bench.training import bench_training

    m = Measured()
    if ctx.dry_run:
        gan = bench_gan_step(
            device="cpu", image_size=32, batch_size=2, width=8, latent_dim=8, steps=1, warmup=1
        )
        train = bench_training(
            "test_resnet", device="cpu", batch_size=2, image_size=32, steps=1, warmup=1
        )
    else:
        gan = bench_gan_step(device=ctx.device, image_size=64, batch_size=256, steps=30, warmup=10)
        train = bench_training(
            "resnet50",
            device=ctx.device,
            batch_size=256,
            image_size=224,
            steps=10,
            warmup=5,
            samples=256 * 4,
        )
    m.rows += [gan, train]
    m.set(
        "gan.dcgan",
        gan["ratio"],
        f"{gan['model']} {gan['dtype']} {gan['image_size']}px "
        f"bs{gan['batch']}: engine {gan['engine_img_s']:,.0f} vs raw {gan['raw_img_s']:,.0f} "
        f"img/s = {gan['ratio']:.3f}",
        raw=gan["raw_img_s"],
    )
    m.set(
        "trainer.resnet50",
        train["ratio"],
        f"{train['model']} {train['precision']} "
        f"bs{train['batch_size']}: trainer {train['engine_samples_per_s']:,.0f} vs raw loop "
        f"{train['raw_samples_per_s']:,.0f} samples/s = {train['ratio']:.3f}",
        raw=train["raw_samples_per_s"],
    )
    return m.as_dict()


def detect(ctx: Ctx) -> dict[str, Any]:
    """driving.detect's detector vs the same torchvision model called directly: FCOS and Faster
    R-CNN (ResNet-50 FPN), 720p, fp32, batch 8 (benchmarks/driving_detect.py)."""
    from driving_detect import bench

    m = Measured()
    models = (
        ("detect.fcos", "fcos_resnet50_fpn"),
        ("detect.fasterrcnn", "fasterrcnn_resnet50_fpn_v2"),
    )
    for line, name in models:
        if ctx.dry_run:
            if line == "detect.fcos":  # ResNet-50 at 800 px is too slow for 2 CPU cores
                m.set(
                    line,
                    None,
                    "dry run: the Faster R-CNN line runs the same code on a "
                    "MobileNet backbone; FCOS exists on ResNet-50 only",
                )
                continue
            row = bench(
                "fasterrcnn_mobilenet_v3_large_fpn",
                "cpu",
                (64, 96),
                1,
                1,
                False,
                fast=False,
                warmup=0,
            )
        else:
            row = bench(name, ctx.device, (720, 1280), 8, 10, False)
        m.rows.append(row)
        ratio = row.get("plugin_over_raw")
        if ratio is None:
            m.set(line, None, str(row.get("plugin_error", "the plugin's detector did not run")))
            continue
        fast = f"; bf16 fast path {row['fast_img_s']:,.1f} img/s" if "fast_img_s" in row else ""
        m.set(
            line,
            ratio,
            f"{row['model']} {row['size']} bs{row['batch']}: plugin "
            f"{row['plugin_img_s']:,.1f} vs raw {row['raw_img_s']:,.1f} img/s = {ratio:.3f}"
            f"{fast}",
            raw=float(row["raw_img_s"]),
        )
    return m.as_dict()


def executor(ctx: Ctx) -> dict[str, Any]:
    """Files → results: the streaming executor over JPEGs with nvJPEG decoding on the GPU
    (ResNet-50, bf16, batch 256) against the same model on batches already on the device, and
    host memory at a quarter of the folder against the end."""
    from vlm_core.bench.executor import bench_executor, make_jpegs

    m = Measured()
    folder = ctx.work / "jpegs"
    if ctx.dry_run:
        make_jpegs(folder, 24, size=(48, 64))
        row = bench_executor("test_resnet", folder, device="cpu", batch_size=4, workers=1, rounds=1)
    else:
        make_jpegs(folder, 1024)
        row = bench_executor("resnet50", folder, device=ctx.device, batch_size=256, rounds=5)
    m.rows.append(row)
    m.set(
        "executor.end_to_end",
        row["ratio"],
        f"{row['files']} JPEGs, {row['model']} "
        f"bs{row['batch']}, decode on {'GPU' if row['gpu_decode'] else 'CPU'}: end to end "
        f"{row['end_to_end_img_s']:,.0f} vs model only {row['model_only_img_s']:,.0f} img/s "
        f"= {row['ratio']:.3f}",
    )
    first, end = row["rss_mb_first_quarter"], row["rss_mb_end"]
    bounded = row["complete"] and row["errors"] == 0 and end <= first * 1.05 + 16
    m.set(
        "executor.bounded_memory",
        bounded,
        f"host RSS {first:,.0f} MB after a quarter of "
        f"the files, {end:,.0f} MB at the end; {row['errors']} errors",
    )
    return m.as_dict()


def pipeline(ctx: Ctx) -> dict[str, Any]:
    """`vlm run` over a folder against the task's model alone (`vlm bench --pipeline`), on the
    GPU: driving.detect and medical.classify, 100 inputs, wall-time throughput (the GPU's work
    is not CPU time). Decoding is the runner's reader thread on the CPU; nvJPEG decoding is
    the executor line's."""
    from vlm_core.bench.pipeline import bench_pipeline

    m = Measured()
    for line, task in (("pipeline.driving", "driving.detect"),
                       ("pipeline.classify", "medical.classify")):  # fmt: skip
        if ctx.dry_run:
            row = bench_pipeline(task, count=4, rounds=1, device="cpu")
        else:
            row = bench_pipeline(task, count=100, rounds=1, device=ctx.device)
        m.rows.append(row)
        if "error" in row or "skipped" in row:
            m.set(line, None, str(row.get("error") or row.get("skipped")))
            continue
        m.set(
            line,
            row["ratio_wall"],
            f"{row['inputs']} inputs bs{row['batch']} on {row['device']}: pipeline "
            f"{row['inputs'] / row['pipeline_wall_s']['median']:,.1f} vs model only "
            f"{row['inputs'] / row['model_wall_s']['median']:,.1f} inputs/s (wall) = "
            f"{row['ratio_wall']:.3f}; stages ms/input {row['stages_ms_per_input']}",
        )
    return m.as_dict()


def runtime(ctx: Ctx) -> dict[str, Any]:
    """The model cache under its budget (5 models cycled) and attention on SDPA against
    nn.MultiheadAttention."""
    from vlm_core.bench.attention import bench_attention
    from vlm_core.bench.cache import bench_cache

    m = Measured()
    if ctx.dry_run:
        cache = bench_cache(("test_resnet", "test_vit", "test_convnext"), device="cpu", cycles=2)
        rows = bench_attention(device="cpu", batch=1, length=16, dim=32, heads=4, rounds=2)
    else:
        cache = bench_cache(device=ctx.device, cycles=3)
        rows = bench_attention(device=ctx.device, rounds=10)
    m.rows += [cache, *rows]
    m.set(
        "cache.budget",
        cache["within_budget"],
        f"at most {cache['max_held_mb']:,.1f} MB held "
        f"of a {cache['budget_mb']:,.1f} MB budget, {cache['evictions']} evictions",
    )
    worst = min(rows, key=lambda r: r["ratio"])
    m.set(
        "attention.sdpa",
        worst["ratio"],
        "; ".join(
            f"{r['model'].split('mask=')[-1]} {r['engine_ms']:.3f} vs {r['raw_ms']:.3f} ms"
            for r in rows
        )
        + f" (worst {worst['ratio']:.3f})",
    )
    return m.as_dict()
