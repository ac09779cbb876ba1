"""Does each medical task say when an input is unlike what its network learned?

For `medical.segment` (3D volumes: the 3D UNet; 2D images and single slices: the 2D UNet) and
`medical.classify`, through the run path a user's `vlm run` takes (``run_task``), with the
bundled weights and their familiarity files:

- held-out in-domain inputs from the plugin's own generators, with the ACCEPTANCE seeds
  (never used to train the weights, to fit or calibrate their familiarity model, or to choose
  its layers): the share flagged (goal: at most 5%);
- real scans and photographs that installed packages carry, per source, each input the task
  reads (unreadable and constant-valued files left out and counted): the share flagged (goal:
  at least 90%) and the AUROC of the score, in-domain against that source (goal: 0.95), with
  the number of files and of distinct pixel contents (many of pydicom's files are one slice
  in several transfer syntaxes);
- what the check costs: the task's model call as a run makes it (segment: intensity scaling,
  sliding window, argmax; classify: scaling, resize, Grad-CAM's forward and backward pass),
  bare and with the feature tap and the scoring, timed alternately on one thread, ratio of
  the medians in CPU time and in wall time (goal: at most 5% more), on the first held-out
  input and, for the 2D and classify tables, on the largest real input;
- `medical.classify`: expected calibration error of its probabilities on the held-out
  volumes, with the network's raw logits (T = 1) and with the temperature its card records.

    .venv/bin/python plugins/medical/benchmarks/familiarity.py [--n3d 30] [--n2d 60]
        [--ncls 100] [--max-side 512] [--json FILE]

The default run took 3.5 minutes on 2 CPU cores (other jobs light); the 2D UNet's sliding
window over the largest photographs would be most of it, so by default real 2D inputs with a
side over ``--max-side`` pixels are left out (and counted); ``--max-side 0`` runs them all
(4.8 minutes with ``--n3d 60 --n2d 200 --ncls 200``, the figures in the plugin's README).

Seeds (see the weights' TRAINING.md): the weights were trained on seed 0; their familiarity
models were fitted and calibrated on seeds 2000 (3D), 2100 (2D) and 2200 (classify); layers
were chosen and the temperature fitted on seeds 3000, 3100 and 3200; this benchmark draws
its in-domain inputs from seeds 4000, 4100 and 4200 only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ACCEPTANCE_SEEDS = {"segment-3d": 4000, "segment-2d": 4100, "classify": 4200}
#: Alternating rounds of each overhead timing, after warm-up calls.
ROUNDS, WARMUP = 11, 2


# --- real material ------------------------------------------------------------------------


def _nibabel_other(folder: Path) -> list[Path]:
    """nibabel's test volumes in formats the task does not read (AFNI, MINC, PAR/REC, MGH),
    written as NIfTI: a user converts them so."""
    import nibabel as nib

    data = Path(nib.__file__).parent / "tests" / "data"
    out = []
    for file in sorted(data.iterdir()):
        if file.suffix.lower() not in (".head", ".mnc", ".par", ".mgz"):
            continue
        try:
            image: Any = nib.load(str(file))
            array = np.asarray(image.get_fdata(), np.float32)
        except Exception:  # a test file nibabel itself cannot read: skipped
            continue
        target = folder / f"{file.name.replace('.', '_').replace('+', '_')}.nii.gz"
        nib.save(nib.Nifti1Image(array, image.affine), target)
        out.append(target)
    return out


def _nibabel_dicom(folder: Path) -> list[Path]:
    """nibabel's DICOM test files (MR), gunzipped where they are compressed."""
    import nibabel

    out = []
    for file in sorted((Path(nibabel.__file__).parent / "nicom" / "tests" / "data").iterdir()):
        if file.name.endswith(".dcm"):
            out.append(file)
        elif file.name.endswith(".dcm.gz"):
            target = folder / file.name[: -len(".gz")]
            with gzip.open(file) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            out.append(target)
    return out


def _matplotlib(folder: Path) -> list[Path]:
    """matplotlib's sample photograph and its MR slice (raw 16-bit 256 x 256, as NIfTI)."""
    import matplotlib.cbook as cbook
    import nibabel as nib

    with gzip.open(Path(cbook.get_sample_data("s1045.ima.gz", asfileobj=False))) as handle:
        raw = np.frombuffer(handle.read(), np.uint16).reshape(256, 256).astype(np.float32)
    slice_file = folder / "s1045_mr_slice.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(raw.T[:, :, None]), np.eye(4)), slice_file)
    return [slice_file, Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))]


def real_sources(folder: Path) -> dict[str, list[Path]]:
    from vlm_core.bench.familiarity import dicom_files, nifti_files, photographs

    return {
        "pydicom test files": dicom_files(),
        "nibabel NIfTI": nifti_files(),
        "nibabel other formats (as NIfTI)": _nibabel_other(folder),
        "nibabel DICOM": _nibabel_dicom(folder),
        "scikit-image photographs": photographs(),
        "matplotlib samples": _matplotlib(folder),
    }


def readable(task: str, files: list[Path]) -> tuple[list[tuple[Path, np.ndarray, bool]], int]:
    """``([(file, array, flat)], left out)``: the files ``task`` reads, loaded as its run
    loads them; files it refuses and files of one constant value (anonymised test files
    whose pixels were zeroed) are left out."""
    from vlm_medical.segment import _as_volume

    from vlm_core.errors import VLMError
    from vlm_core.io.limits import check_image_size
    from vlm_core.io.load import collect_inputs, load_input
    from vlm_core.plugins import get_registry

    registry = get_registry()
    spec = registry.task(task)
    kept, left = [], 0
    for file in files:
        try:
            probes = collect_inputs(
                [str(file)], spec.inputs, readers=registry.readers,
                check=lambda p: check_image_size(p, spec.image_limits, task),
            )  # fmt: skip
            array, _, flat = _as_volume(load_input(probes[0], registry.readers))
        except (VLMError, ValueError, OSError):
            left += 1
            continue
        if float(np.ptp(array)) == 0.0:
            left += 1
            continue
        kept.append((file, array, flat))
    return kept, left


def distinct(items: list[tuple[Path, np.ndarray, bool]]) -> int:
    return len({hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for _, a, _ in items})


# --- the measurements ---------------------------------------------------------------------


def table(
    task: str,
    label: str,
    in_domain: list[Path],
    real: dict[str, list[tuple[Path, np.ndarray, bool]]],
) -> dict[str, Any]:
    from vlm_core.bench.familiarity import familiarity_table

    found = familiarity_table(task, in_domain, {s: [f for f, _, _ in i] for s, i in real.items()})
    found["task"] = label
    for source, items in real.items():
        found["real"][source]["distinct"] = distinct(items)
    found["real_all"]["distinct"] = distinct([i for items in real.values() for i in items])
    return found


def overhead(plain: Callable[[], Any], checked: Callable[[], Any]) -> dict[str, float]:
    """The core's alternating wall-clock comparison
    (:func:`~vlm_core.bench.familiarity.tap_overhead`), each call also timed in CPU seconds of
    this process, on one thread: on a machine other jobs share, a call's wall time swings
    many-fold with their load, its CPU time far less."""
    import statistics
    import time

    import torch

    from vlm_core.bench.familiarity import tap_overhead

    cpu: dict[str, list[float]] = {"plain": [], "checked": []}

    def timed(name: str, fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            start = time.process_time()
            out = fn()
            cpu[name].append(time.process_time() - start)
            return out

        return call

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        found = tap_overhead(timed("plain", plain), timed("checked", checked), rounds=ROUNDS,
                             warmup=WARMUP)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    plain_cpu, checked_cpu = (statistics.median(cpu[n][WARMUP:]) for n in ("plain", "checked"))
    return {**found, "threads": 1, "plain_cpu_s": plain_cpu, "checked_cpu_s": checked_cpu,
            "cpu_overhead": checked_cpu / plain_cpu - 1.0}  # fmt: skip


def segment_overhead(dims: int, array: np.ndarray) -> dict[str, float]:
    import torch
    from vlm_medical.params import SegmentParams
    from vlm_medical.segment import default_weights, load_model, segment_array

    model = load_model(default_weights(dims), torch.device("cpu"), dims)
    params = SegmentParams.model_validate({})
    cpu = torch.device("cpu")

    def plain() -> Any:
        return segment_array(model, array, np.eye(4), params, cpu, flat=dims == 2)

    def checked() -> Any:
        tap = model.familiarity_tap()
        with model.holding(tap):
            labels = segment_array(model, array, np.eye(4), params, cpu, dims == 2, tap=tap)
        return labels, model.judge(tap)

    return overhead(plain, checked)


def classify_overhead(array: np.ndarray) -> dict[str, float]:
    import torch
    from vlm_medical.classify import classify_array, default_weights, load_model
    from vlm_medical.classify_params import ClassifyParams

    model = load_model(default_weights(), torch.device("cpu"))
    params = ClassifyParams.model_validate({})
    cpu = torch.device("cpu")

    def plain() -> Any:
        return classify_array(model, array, params, cpu)

    def checked() -> Any:
        tap = model.familiarity_tap()
        return classify_array(model, array, params, cpu, tap), model.judge(tap)

    return overhead(plain, checked)


def calibration(held_out: Path) -> dict[str, Any]:
    from vlm_medical.calibrate import held_out_logits
    from vlm_medical.classify import default_weights

    from vlm_core.familiarity.calibration import expected_calibration_error

    logits, labels, loaded = held_out_logits(default_weights(), held_out)
    recorded = (loaded.card.get("calibration") or {}).get("temperature", 1.0)
    accuracy = float((logits.argmax(1) == labels).mean())
    return {
        "n": len(labels),
        "accuracy": round(accuracy, 4),
        "temperature": recorded,
        "ece_before": round(expected_calibration_error(logits, labels), 4),
        "ece_after": round(expected_calibration_error(logits, labels, float(recorded)), 4),
    }


def print_report(report: dict[str, Any]) -> None:
    for found in report["tables"]:
        base = found["in_domain"]
        print(f"\n{found['task']}: held-out in-domain flagged {100 * base['flagged_rate']:.1f}% "
              f"(n={base['n']}, seed {found['seed']})")  # fmt: skip
        for source, row in {**found["real"], "ALL real": found["real_all"]}.items():
            print(f"  {source}: flagged {100 * row['flagged_rate']:.1f}% (n={row['n']}, "
                  f"{row['distinct']} distinct), AUROC {row['auroc']:.3f}")  # fmt: skip
        cost = found["overhead"]
        print(f"  tap overhead, CPU time: {100 * cost['cpu_overhead']:+.1f}% of the model's "
              f"(median {cost['plain_cpu_s'] * 1e3:.1f} ms bare, "
              f"{cost['checked_cpu_s'] * 1e3:.1f} ms checked); wall time: "
              f"{100 * cost['overhead']:+.1f}% (median {cost['plain_s'] * 1e3:.1f} ms, "
              f"{cost['checked_s'] * 1e3:.1f} ms); {cost['rounds']} alternating rounds on "
              f"{cost['threads']} thread")  # fmt: skip
        if "overhead_real" in found:
            cost = found["overhead_real"]
            print(f"  tap overhead on the largest real input ({cost['input']}, "
                  f"{'x'.join(map(str, cost['shape']))}): CPU time "
                  f"{100 * cost['cpu_overhead']:+.1f}% (median {cost['plain_cpu_s'] * 1e3:.1f} "
                  f"ms bare, {cost['checked_cpu_s'] * 1e3:.1f} ms checked); wall time "
                  f"{100 * cost['overhead']:+.1f}%")  # fmt: skip
        print(f"  ({found['seconds']:.0f} s for this table)")
        if found.get("left_out"):
            print(f"  real files the task does not read or of one constant value, left out: "
                  f"{found['left_out']}")  # fmt: skip
        if found.get("left_out_for_time") and not found["left_out_for_time"].startswith("0 "):
            print(f"  real images left out for time (--max-side): {found['left_out_for_time']}")
    cal = report["calibration"]
    print(f"\nmedical.classify calibration on {cal['n']} held-out volumes (seed "
          f"{ACCEPTANCE_SEEDS['classify']}): accuracy {cal['accuracy']:.3f}, ECE "
          f"{cal['ece_before']:.4f} with T=1, {cal['ece_after']:.4f} with "
          f"T={cal['temperature']:.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n3d", type=int, default=30, help="held-out 64³ volumes (default 30)")
    parser.add_argument("--n2d", type=int, default=60, help="held-out 128² images (default 60)")
    parser.add_argument("--ncls", type=int, default=100,
                        help="held-out 32³ classify volumes per class (default 100)")  # fmt: skip
    parser.add_argument(
        "--max-side", type=int, default=512,
        help="leave out real 2D segment inputs with a longer side (0: none)",
    )  # fmt: skip
    parser.add_argument("--json", default="", help="also write the report to this file")
    args = parser.parse_args()

    import torch
    from vlm_medical._quiet import quiet_monai
    from vlm_medical.synthetic import make_image, make_volume, write_dataset
    from vlm_medical.synthetic_classes import make_case, write_class_dataset

    torch.set_num_threads(2)
    quiet_monai()
    warnings.simplefilter("ignore")  # pydicom's notes on its deliberately odd test files
    logging.getLogger("vlm").setLevel(logging.ERROR)
    report: dict[str, Any] = {"tables": []}
    with tempfile.TemporaryDirectory(prefix="vlm-medical-familiarity-") as tmp:
        root = Path(tmp)
        (root / "real").mkdir()
        sources = real_sources(root / "real")
        all_files = [f for files in sources.values() for f in files]

        def per_source(
            task: str, keep: Callable[[np.ndarray, bool], bool]
        ) -> tuple[dict[str, Any], int]:
            real, left = {}, 0
            for source, files in sources.items():
                items, dropped = readable(task, files)
                left += dropped
                items = [i for i in items if keep(i[1], i[2])]
                if items:
                    real[source] = items
            return real, left

        def small(array: np.ndarray) -> bool:
            return not args.max_side or max(array.shape[:2]) <= args.max_side

        # medical.segment, 3D: volumes go to the 3D UNet
        started = time.perf_counter()
        seed = ACCEPTANCE_SEEDS["segment-3d"]
        data = write_dataset(root / "seg3d", args.n3d, seed=seed, split="validation")
        volumes = sorted((data / "imagesTr").glob("*.nii.gz"))
        real, left = per_source("medical.segment", lambda _, flat: not flat)
        found = table("medical.segment", "medical.segment (3D UNet, volumes)", volumes, real)
        first = make_volume(np.random.RandomState(seed))[0]  # the first volume written
        found |= {"seed": seed, "overhead": segment_overhead(3, first),
                  "left_out": f"{left} of {len(all_files)}",
                  "seconds": time.perf_counter() - started}  # fmt: skip
        report["tables"].append(found)

        # medical.segment, 2D: images and single slices go to the 2D UNet
        started = time.perf_counter()
        seed = ACCEPTANCE_SEEDS["segment-2d"]
        data = write_dataset(root / "seg2d", args.n2d, seed=seed, split="validation", dims=2)
        images = sorted((data / "imagesTr").glob("*.nii.gz"))
        every, left = per_source("medical.segment", lambda _, flat: flat)
        real = {s: [i for i in items if small(i[1])] for s, items in every.items()}
        large = sum(len(every[s]) - len(real[s]) for s in every)
        real = {s: items for s, items in real.items() if items}
        found = table("medical.segment", "medical.segment (2D UNet, images and slices)",
                      images, real)  # fmt: skip
        first = make_image(np.random.RandomState(seed))[0][:, :, None]
        # the cost on a real CT slice or photograph of at most 512 px a side (the sliding
        # window over the largest photographs would take minutes a call on one thread)
        sized = [i for items in real.values() for i in items if max(i[1].shape[:2]) <= 512]
        biggest = max(sized, key=lambda i: i[1].size)
        found |= {"seed": seed, "overhead": segment_overhead(2, first),
                  "overhead_real": {"input": biggest[0].name, "shape": list(biggest[1].shape),
                                    **segment_overhead(2, biggest[1])},
                  "left_out": f"{left} of {len(all_files)}",
                  "left_out_for_time": f"{large} with a side over {args.max_side} px",
                  "seconds": time.perf_counter() - started}  # fmt: skip
        report["tables"].append(found)

        # medical.classify: volumes and 2D images, one DenseNet
        started = time.perf_counter()
        seed = ACCEPTANCE_SEEDS["classify"]
        data = write_class_dataset(root / "cls", args.ncls, seed=seed, split="val")
        cases = sorted((data / "val").rglob("*.nii.gz"))
        real, left = per_source("medical.classify", lambda _, flat: True)
        found = table("medical.classify", "medical.classify (DenseNet, volumes and images)",
                      cases, real)  # fmt: skip
        first = make_case(np.random.RandomState(seed), lesion=True)[0]
        biggest = max((i for items in real.values() for i in items), key=lambda i: i[1].size)
        found |= {"seed": seed, "overhead": classify_overhead(first),
                  "overhead_real": {"input": biggest[0].name, "shape": list(biggest[1].shape),
                                    **classify_overhead(biggest[1])},
                  "left_out": f"{left} of {len(all_files)}",
                  "seconds": time.perf_counter() - started}  # fmt: skip
        report["tables"].append(found)
        report["calibration"] = calibration(data)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
