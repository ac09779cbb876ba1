"""GPU check suites that run the project as a user does: the plugins loading, the `gpu`-marked
tests, training every trainable task with mixed precision, `torchrun`, the dashboard serving a
run, and the optional runtimes (onnxruntime-CUDA, TensorRT, Ray) where they are installed.

Same contract as :mod:`gpu_check_engines`: each suite returns rows, values, notes and raw.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_check_engines import NEEDS_CUDA, Measured

if TYPE_CHECKING:
    from gpu_check import Ctx

REPO = Path(__file__).resolve().parents[1]
BUILTIN_PLUGINS = ("art", "caption", "driving", "medical")
#: carry limit of the device tool (ignored files that travel with the tree)
CARRY_MIB = 64


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "missing"


def environment(ctx: Ctx) -> dict[str, Any]:
    """What the machine has: torch and CUDA, the packages the check needs, the plugins."""
    import torch

    from vlm_core.plugins import get_registry

    m = Measured()
    versions = {
        d: _version(d)
        for d in (
            "torch",
            "torchvision",
            "timm",
            "open_clip_torch",
            "monai",
            "pydicom",
            "streamlit",
            "onnxruntime",
        )
    }
    cuda = torch.cuda.is_available()
    m.rows.append(
        {
            "bench": "environment",
            "python": sys.version.split()[0],
            **versions,
            "cuda": torch.version.cuda,
            "gpus": torch.cuda.device_count(),
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpu_memory_gb": round(torch.cuda.mem_get_info()[1] / 2**30, 1) if cuda else None,
        }
    )
    if ctx.dry_run:
        m.set("env.cuda", None, "dry run on the CPU")
    else:
        m.set(
            "env.cuda",
            cuda,
            f"{m.rows[0]['gpu']}, CUDA {torch.version.cuda}, torch {torch.__version__}"
            if cuda
            else "torch sees no CUDA device",
        )
    registry = get_registry()
    found = {n: registry.plugins[n] for n in BUILTIN_PLUGINS if n in registry.plugins}
    problems = [
        f"{n}: {r.status} at {r.stage}: {r.error}"
        for n, r in found.items()
        if r.status != "healthy"
    ]
    problems += [f"{n}: not installed" for n in BUILTIN_PLUGINS if n not in found]
    m.rows.append({"bench": "plugins", **{n: r.to_json() for n, r in registry.plugins.items()}})
    m.set(
        "env.plugins",
        not problems,
        "; ".join(problems) or ", ".join(f"{n} ({len(r.tasks)} tasks)" for n, r in found.items()),
    )
    return m.as_dict()


# --- the gpu-marked tests -----------------------------------------------------------------------

#: the OOM line: a real CUDA out-of-memory in a batch function, backed off by the runtime
OOM_TEST = "test_real_cuda_out_of_memory_backs_off"


def gpu_tests(ctx: Ctx) -> dict[str, Any]:
    """`pytest -m gpu` over the files that hold gpu tests; one line for the real OOM back-off,
    one for all of them."""
    m = Measured()
    files = sorted(
        str(p.relative_to(REPO))
        for p in [*REPO.glob("tests/test_*.py"), *REPO.glob("plugins/*/tests/test_*.py")]
        if "mark.gpu" in p.read_text(errors="replace")
    )
    names = {e.name for e in metadata.entry_points(group="pytest11")}
    plugin = [] if "vlm" in names else ["-p", "vlm_core.testing.pytest_plugin"]
    junit = ctx.out / "gpu_tests.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *plugin,
        "-m",
        "gpu",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        *files,
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    sys.stdout.write(proc.stdout[-4000:] + proc.stderr[-2000:])
    cases = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "skipped" if child.tag == "skipped" else "failed"
                message = (
                    (child.get("message") or "").strip().splitlines()[0][:200]
                    if (child.get("message"))
                    else ""
                )
        cases.append(
            {
                "test": f"{case.get('classname')}::{case.get('name')}",
                "outcome": outcome,
                "message": message,
            }
        )
    m.rows.append({"bench": "gpu_tests", "files": files, "exit": proc.returncode, "tests": cases})
    failed = [c for c in cases if c["outcome"] == "failed"]
    skipped = [c for c in cases if c["outcome"] == "skipped"]
    oom = [c for c in cases if c["test"].endswith(OOM_TEST)]
    if not cases:
        m.set("gpu_tests.all", False, f"no gpu tests ran (pytest exit {proc.returncode})")
    elif len(skipped) == len(cases):
        m.set("gpu_tests.all", None, f"all {len(cases)} skipped: {skipped[0]['message']}")
    else:
        m.set(
            "gpu_tests.all",
            not failed,
            f"{len(cases) - len(failed) - len(skipped)} passed, "
            f"{len(failed)} failed, {len(skipped)} skipped"
            + "".join(f"; {c['test']}: {c['message']}" for c in failed[:3]),
        )
    if not oom:
        m.set("gpu_tests.oom", False, f"{OOM_TEST} was not collected")
    elif oom[0]["outcome"] == "skipped":
        m.set("gpu_tests.oom", None, f"skipped: {oom[0]['message']}")
    else:
        m.set(
            "gpu_tests.oom",
            oom[0]["outcome"] == "passed",
            f"{oom[0]['outcome']} {oom[0]['message']}".strip(),
        )
    return m.as_dict()


# --- training -----------------------------------------------------------------------------------


def _tiny_requests(work: Path) -> dict[str, tuple[Callable[[], Path], dict[str, Any]]]:
    """For each trainable built-in task: how to write a tiny data set and tiny parameters (the
    plugins' resume tests use the same ones)."""

    def art() -> Path:
        from vlm_art.styles import write_dataset

        return write_dataset(work / "art", 8, size=16, seed=3, styles=("circles", "stripes"))

    def caption() -> Path:
        from vlm_caption.products import write_dataset

        return write_dataset(work / "caption", 8, size=32, seed=5)

    def driving() -> Path:
        from vlm_driving.scenes import write_dataset

        return write_dataset(work / "driving", 8, (64, 64), seed=50, fmt="coco")

    def classify() -> Path:
        from vlm_medical.synthetic_classes import write_class_dataset

        return write_class_dataset(work / "classify", 4, seed=7, size=12)

    def segment() -> Path:
        from vlm_medical.synthetic import write_dataset

        return write_dataset(work / "segment", 6, seed=5, size=24)

    return {
        "art.generate": (
            art,
            {
                "family": "dcgan",
                "image_size": 16,
                "width": 8,
                "latent_dim": 8,
                "classifier_steps": 2,
                "val_fraction": 0.25,
            },
        ),
        "caption.describe": (
            caption,
            {"image_size": 32, "width": 32, "depth": 1, "val_fraction": 0.25},
        ),
        "driving.detect": (
            driving,
            {
                "backbone": "timm:lcnet_050",
                "image_width": 64,
                "image_height": 64,
                "fpn_channels": 32,
                "head_convs": 1,
                "val_fraction": 0.25,
            },
        ),
        "medical.classify": (classify, {"network": "densenet121-slim", "size": 32}),
        "medical.segment": (
            segment,
            {"patch": 16, "roi": 16, "samples_per_volume": 2, "val_fraction": 0.2},
        ),
    }


def _train_config(ctx: Ctx, steps: int) -> dict[str, Any]:
    """A few steps, a checkpoint at the end, no validation (its metrics cost more than the
    steps at these sizes; `vlm eval` is not a GPU line)."""
    return {
        "max_steps": steps,
        "batch_size": 2,
        "val_every": 1000,
        "save_every": steps,
        "device": ctx.device,
        "precision": "auto",
        "tensorboard": False,
    }


def train_tasks(ctx: Ctx) -> dict[str, Any]:
    """A few training steps of every trainable task with mixed precision (bf16 autocast on
    CUDA), tiny settings, through the core's training API (what `vlm train` calls)."""
    import torch

    from vlm_core.training.api import TrainRequest, train_task
    from vlm_core.training.loop import amp_dtype

    m = Measured()
    steps = 2 if ctx.dry_run else 4
    dtype = amp_dtype("auto", torch.device(ctx.device))
    precision = {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}.get(dtype, "fp32")
    for task, (write, params) in _tiny_requests(ctx.work).items():
        line = f"train.{task}"
        try:
            request = TrainRequest(
                task,
                write(),
                ctx.work / "runs" / task,
                params=params,
                config=_train_config(ctx, steps),
            )
            result = train_task(request)
        except Exception as exc:
            m.rows.append({"bench": "train", "task": task, "error": f"{type(exc).__name__}: {exc}"})
            m.set(line, False, f"{type(exc).__name__}: {str(exc)[:300]}")
            continue
        loss = result.last_values.get("train_loss")
        finite = loss is not None and math.isfinite(loss)
        saved = any(result.out.glob("**/*.safetensors")) or any(result.out.glob("**/*.pt"))
        ok = result.status == "completed" and result.step == steps and finite and saved
        m.rows.append({"bench": "train", "task": task, "precision": precision, **result.to_dict()})
        m.set(
            line,
            ok,
            f"{result.status} {result.step} steps, {precision} on {ctx.device}, "
            f"loss {loss if loss is None else round(loss, 4)}, "
            f"{result.samples_per_s:,.1f} samples/s, "
            f"checkpoint {'written' if saved else 'MISSING'}",
        )
    return m.as_dict()


def ddp_worker(spec_file: str) -> None:
    """Runs under `torchrun`: trains art.generate a few steps through the training API and
    records the process group it ran in."""
    import torch.distributed as dist

    from vlm_core.training.api import TrainRequest, train_task

    spec = json.loads(Path(spec_file).read_text())
    seen: dict[str, Any] = {}

    from torch.nn.parallel import DistributedDataParallel

    wrapped: list[str] = []  # the trainer wraps the model (or each part) when it fits
    ddp_init = DistributedDataParallel.__init__

    def counting_init(self: Any, module: Any, *args: Any, **kwargs: Any) -> None:
        wrapped.append(type(module).__name__)
        ddp_init(self, module, *args, **kwargs)

    DistributedDataParallel.__init__ = counting_init  # type: ignore[method-assign]

    def note(trainer: Any) -> None:
        seen["process_group"] = dist.get_backend() if dist.is_initialized() else None

    write, params = _tiny_requests(Path(spec["work"]))["art.generate"]
    request = TrainRequest(
        "art.generate", write(), Path(spec["work"]) / "run", params=params, config=spec["config"]
    )
    result = train_task(request, on_trainer=note)
    seen.update(status=result.status, step=result.step, world_size=os.environ.get("WORLD_SIZE"))
    seen["ddp"] = bool(wrapped)
    seen["ddp_wrapped"] = wrapped
    Path(spec["result"]).write_text(json.dumps(seen))


def ddp(ctx: Ctx) -> dict[str, Any]:
    """`torchrun --nproc-per-node 1` training (art.generate, tiny) on the GPU: it completes, and
    the process group it ran in (NCCL expected on CUDA)."""
    m = Measured()
    spec = {
        "work": str(ctx.work),
        "result": str(ctx.work / "ddp.json"),
        "config": _train_config(ctx, 3),
    }
    (ctx.work / "spec.json").write_text(json.dumps(spec))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "1",
        str(Path(__file__).resolve()),
        "ddp-worker",
        str(ctx.work / "spec.json"),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    sys.stdout.write(proc.stdout[-3000:] + proc.stderr[-3000:])
    result_file = ctx.work / "ddp.json"
    if proc.returncode != 0 or not result_file.is_file():
        said = [ln for ln in proc.stderr.splitlines() if ln.strip() and ln.strip("= ")]
        errors = [ln for ln in said if "Error" in ln and "ChildFailedError" not in ln]
        tail = (errors or said or [""])[-1].strip()[:300]
        m.set("ddp.torchrun", False, f"torchrun exited {proc.returncode}: {tail}")
        m.set("ddp.nccl", False, "torchrun did not finish")
        return m.as_dict()
    seen = json.loads(result_file.read_text())
    m.rows.append({"bench": "ddp", **seen})
    m.set(
        "ddp.torchrun",
        seen["status"] == "completed",
        f"{seen['status']} {seen['step']} steps "
        f"under torchrun (WORLD_SIZE {seen['world_size']}) on {ctx.device}",
    )
    group = seen["process_group"]
    if ctx.dry_run:
        m.set(
            "ddp.nccl",
            None,
            f"{NEEDS_CUDA} (here: process group {group}, DistributedDataParallel {seen['ddp']})",
        )
    else:
        m.set(
            "ddp.nccl",
            group == "nccl" and seen["ddp"],
            f"process group {group}, model in DistributedDataParallel: {seen['ddp']}",
        )
    return m.as_dict()


# --- the dashboard ------------------------------------------------------------------------------


def dashboard(ctx: Ctx) -> dict[str, Any]:
    """The dashboard's Run page (Streamlit's AppTest, the real app script) runs driving.detect on
    its bundled sample; the run store records the run with the device it ran on."""
    m = Measured()
    if importlib.util.find_spec("streamlit") is None:
        m.set("dashboard.run", None, "streamlit is not installed (its wheels did not travel)")
        return m.as_dict()
    from streamlit.testing.v1 import AppTest

    from vlm_core.runstore import RunStore

    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=120).run()
    at = at.switch_page("pages/run.py").run()
    at = at.selectbox(key="run.task").set_value("driving.detect").run()
    (button,) = [b for b in at.button if b.label == "Run"]
    at = button.click().run()
    problems = [e.value for e in at.exception] + [e.value for e in at.error]
    records = [r for r in RunStore.default().list(limit=5) if r.task == "driving.detect"]
    record = records[0] if records else None
    device = record.provenance.get("device") if record else None
    m.rows.append(
        {
            "bench": "dashboard",
            "errors": problems[:3],
            "record": record.to_json() if record else None,
        }
    )
    ok = not problems and record is not None and record.status == "ok"
    ok = ok and str(device).startswith(ctx.device)
    m.set(
        "dashboard.run",
        ok,
        f"run {record.status if record else 'not recorded'} on {device}"
        + (f"; {problems[0][:200]}" if problems else ""),
    )
    return m.as_dict()


# --- optional runtimes --------------------------------------------------------------------------


def _explain_time(ctx: Ctx, m: Measured) -> None:
    """The explain engine's time per image on resnet50 at 224 px: Grad-CAM, Integrated
    Gradients (64 steps) and Occlusion (225 windows), against the bare forward pass; captum
    travels with the tree (the explain extra's pure-Python part), scikit-image and
    scikit-learn (SHAP, LIME) do not."""
    from vlm_core.bench.explain import backbone_explain_cost

    if ctx.dry_run:
        row = backbone_explain_cost(
            "resnet18",
            device="cpu",
            size=32,
            rounds=1,
            methods=("gradcam", "integrated_gradients"),
            n_samples=8,
        )
    else:
        row = backbone_explain_cost("resnet50", device=ctx.device, size=224, rounds=5)
    m.rows.append({"bench": "explain.time", **row})
    parts = [
        f"{name} {v['s'] * 1e3:.1f} ms ({v['x_forward']}x)" if "s" in v else f"{name} SKIPPED"
        for name, v in row["methods"].items()
    ]
    m.set(
        "explain.time",
        True,
        f"{row['model']} {row['size']}px on {row['device']}: forward {row['forward_s'] * 1e3:.2f} "
        f"ms; " + ", ".join(parts),
    )


def _detector_case(ctx: Ctx) -> tuple[Any, tuple[Any, ...]]:
    """driving.detect's exported network (backbone and heads, through its deploy spec) and an
    input batch at its run size (8 images on the GPU, 1 in a dry run)."""
    import torch

    from vlm_core.plugins import get_registry

    deploy = get_registry().task("driving.detect").resolve_deploy()
    loaded = deploy.load("", deploy_params("driving.detect"))
    example = deploy.example(loaded)
    batch = 1 if ctx.dry_run else 8
    return deploy.module(loaded), tuple(torch.cat([t] * batch)[:batch] for t in example)


def deploy_params(task: str) -> Any:
    from vlm_core.params import validate_params
    from vlm_core.plugins import get_registry

    return validate_params(get_registry().task(task), {})


def deploy(ctx: Ctx) -> dict[str, Any]:
    """torch.export and AOTInductor against eager, in bf16 on the GPU: vit_base_patch16_224
    (batch 32) and driving.detect's exported network (batch 8). A dry run times resnet18 at
    32 px and the detector on the CPU in float32 without AOTInductor (its C++ compile takes a
    minute on 2 cores)."""
    from vlm_core.bench.export import export_latency, timm_case

    m = Measured()
    cases = {
        "export.vit": lambda: timm_case(*(("resnet18", 32, 1) if ctx.dry_run else
                                          ("vit_base_patch16_224", 224, 32))),
        "export.detector": lambda: _detector_case(ctx),
    }  # fmt: skip
    for line, make in cases.items():
        model, example = make()
        row = export_latency(
            model,
            example,
            device=ctx.device,
            dtype="float32" if ctx.dry_run else "bfloat16",
            rounds=2 if ctx.dry_run else 20,
            aoti=not ctx.dry_run,
        )
        m.rows.append({"bench": line, **row})
        ratios = ", ".join(f"{k} {v}x" for k, v in row["x_eager"].items())
        skipped = "; ".join(f"{k} not run: {v}" for k, v in row["notes"].items())
        m.set(
            line,
            min(row["x_eager"].values()),
            f"{row['dtype']} batch {row['batch']} on {row['device']}: eager "
            f"{row['ms']['eager']:.2f} ms; {ratios} of eager" + (f"; {skipped}" if skipped else ""),
        )
    return m.as_dict()


def optional(ctx: Ctx) -> dict[str, Any]:
    """The familiarity check's cost on the GPU, and the lines whose runtimes may be absent:
    onnxruntime-CUDA, TensorRT and Ray, each measured where it is installed and said SKIPPED
    with the reason where not."""
    m = Measured()
    from vlm_core.bench.familiarity import backbone_overhead

    if ctx.dry_run:
        row = backbone_overhead("resnet18", device="cpu", batch=2, size=64, rounds=2)
    else:
        row = backbone_overhead("resnet50", device=ctx.device, batch=32, size=224, rounds=15)
    m.rows.append({"bench": "familiarity.cost", **row})
    m.set(
        "familiarity.cost",
        row["overhead"],
        f"{row['model']} bs{row['batch']} {row['size']}px: forward {row['plain_s'] * 1e3:.2f} ms, "
        f"with feature tap ({'+'.join(row['layers'])}, mean+std) and k-NN verdict against "
        f"{row['bank']} rows x {row['dims']} dims {row['checked_s'] * 1e3:.2f} ms "
        f"(+{100 * row['overhead']:.1f}%)",
    )
    _explain_time(ctx, m)
    providers: list[str] = []
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        providers = list(onnxruntime.get_available_providers())
    m.rows.append(
        {
            "bench": "optional",
            "onnxruntime": _version("onnxruntime"),
            "providers": providers,
            "tensorrt": _version("tensorrt"),
            "ray": _version("ray"),
        }
    )
    no_export = "so `vlm export`'s ONNX files run on the CPU provider only"
    if _version("onnxruntime") == "missing":
        m.set("onnx.cuda", None, f"onnxruntime is not installed here, {no_export}")
    elif "CUDAExecutionProvider" in providers:
        m.set("onnx.cuda", *_onnx_cuda(ctx))
    else:
        m.set(
            "onnx.cuda",
            None,
            f"onnxruntime {_version('onnxruntime')} is the CPU build "
            f"(providers {', '.join(providers) or 'none'}); onnxruntime-gpu's wheel is far over "
            f"the {CARRY_MIB} MiB that travels with the tree, {no_export}",
        )
    if "TensorrtExecutionProvider" in providers or _version("tensorrt") != "missing":
        m.set("onnx.tensorrt", None, "TensorRT is installed, but vlm runs ONNX files through "
              "onnxruntime's CUDA provider only")  # fmt: skip
    else:
        m.set(
            "onnx.tensorrt",
            None,
            "TensorRT is not installed and its wheels (over 1 GB) "
            f"cannot travel in {CARRY_MIB} MiB",
        )
    if _version("ray") == "missing":
        m.set(
            "ray.one_gpu",
            None,
            f"ray is not installed and its wheel (79 MB) is over the "
            f"{CARRY_MIB} MiB that travels with the tree",
        )
    else:
        m.set("ray.one_gpu", *_ray_one_gpu(ctx))
    return m.as_dict()


def _ray_one_gpu(ctx: Ctx) -> tuple[Any, str]:
    """`vlm run driving.detect --engine ray --workers 1 --gpus-per-worker 1` against the local
    run on the GPU, on 64 generated 720p scenes: wall time of each (Ray started beforehand)
    and whether the files are the same."""
    if ctx.dry_run:
        return (
            None,
            "dry run: starting Ray takes about 10 s of the dry budget "
            "(the slow tier's tests/test_ray_engine.py runs it)",
        )
    import tempfile
    import time

    import ray
    from vlm_driving.scenes import write_dataset

    from vlm_core.runner import RunRequest, run_task
    from vlm_core.runtime.engines import RayOptions

    with tempfile.TemporaryDirectory(prefix="vlm-gpu-ray-") as scratch:
        root = Path(scratch)
        write_dataset(root / "data", count=64, size=(1280, 720), seed=8_700_000)
        inputs = [str(root / "data" / "images")]
        ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        try:
            walls = {}
            for engine in ("local", "ray"):
                t0 = time.perf_counter()
                run_task(
                    RunRequest("driving.detect", inputs, out_dir=root / engine, device=ctx.device,
                               engine=engine, ray=RayOptions(workers=1, gpus_per_worker=1.0)),
                    keep_results=False,
                )  # fmt: skip
                walls[engine] = time.perf_counter() - t0
        finally:
            ray.shutdown()
        same = all(
            (root / "ray" / p.relative_to(root / "local")).read_bytes() == p.read_bytes()
            for p in (root / "local").rglob("*.txt")
        )
    ratio = walls["local"] / walls["ray"]
    return same, (
        f"64 scenes at 720p: local {walls['local']:.1f} s, Ray (1 actor, 1 GPU) "
        f"{walls['ray']:.1f} s, x{ratio:.2f}; YOLO files {'identical' if same else 'DIFFER'}"
    )


def _onnx_cuda(ctx: Ctx) -> tuple[Any, str]:
    """The detector's ONNX export on onnxruntime's CUDA provider against eager float32."""
    import statistics
    import tempfile

    import torch

    from vlm_core.bench.timing import interleave
    from vlm_core.deploy.programs import OnnxProgram
    from vlm_core.deploy.writers import write_onnx
    from vlm_core.plugins import get_registry

    deploy_spec = get_registry().task("driving.detect").resolve_deploy()
    loaded = deploy_spec.load("", deploy_params("driving.detect"))
    module, example = deploy_spec.module(loaded), deploy_spec.example(loaded)
    path = Path(tempfile.mkdtemp(dir=ctx.work)) / "detector.onnx"
    write_onnx(module, example, deploy_spec.input_specs(loaded), deploy_spec.outputs, path)
    program = OnnxProgram(path, ctx.device)
    gpu = module.to(ctx.device)
    args = tuple(t.to(ctx.device) for t in example)
    with torch.no_grad():
        timed = interleave({"eager": lambda: gpu(*args), "onnx": lambda: program(*args)},
                           torch.device(ctx.device), warmup=3, rounds=20)  # fmt: skip
    eager, onnx = (statistics.median(timed.seconds[k]) for k in ("eager", "onnx"))
    return onnx / eager, (
        f"driving.detect network, float32 batch {args[0].shape[0]}: eager {eager * 1e3:.2f} ms, "
        f"onnxruntime {program.providers[0]} {onnx * 1e3:.2f} ms (copies to and from the host "
        "included)"
    )


if __name__ == "__main__":  # the torchrun worker of the ddp suite
    if sys.argv[1:2] == ["ddp-worker"]:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        ddp_worker(sys.argv[2])
