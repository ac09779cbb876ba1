"""Throughput of `vlm run --engine ray` against the local run, on the same inputs, in one
process.

Generated road scenes (``--count``, 320x180, seeds 8,700,000..) go through driving.detect as a
local run and as a run on a local Ray with ``--workers`` actors, alternating for ``--rounds``
rounds; the figures are the medians of the runs' wall time (inputs per second) and the ratio
of the two. Ray is started once before the rounds (its start-up is reported apart: a cluster
stays up between runs) and each Ray run starts its actors and loads the model in each, as every
`vlm run --engine ray` does. No target on a 2-core machine: the actors share the cores the
local run has to itself.

    .venv/bin/python benchmarks/ray_throughput.py --count 200 --workers 2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="driving.detect")
    parser.add_argument("--count", type=int, default=200, help="generated images")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per actor (default: the driver's)"
    )
    args = parser.parse_args(argv)

    import ray
    from vlm_driving.scenes import write_dataset

    from vlm_core.runner import RunRequest, run_task
    from vlm_core.runtime.engines import RayOptions

    with tempfile.TemporaryDirectory(prefix="vlm-ray-bench-") as scratch:
        root = Path(scratch)
        write_dataset(root / "data", count=args.count, size=(320, 180), seed=8_700_000)
        images = [str(root / "data" / "images")]
        t0 = time.perf_counter()
        ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        startup_s = time.perf_counter() - t0
        walls: dict[str, list[float]] = {"local": [], "ray": []}
        try:
            run_task(RunRequest(args.task, images[:1]))  # warm the local model cache once
            for r in range(args.rounds):
                for engine in ("local", "ray") if r % 2 == 0 else ("ray", "local"):
                    request = RunRequest(
                        args.task,
                        images,
                        out_dir=root / f"{engine}-{r}",
                        engine=engine,
                        ray=RayOptions(workers=args.workers, threads=args.threads),
                    )
                    t0 = time.perf_counter()
                    outcome = run_task(request, keep_results=False)
                    walls[engine].append(time.perf_counter() - t0)
                    assert len(outcome.summaries) == args.count
        finally:
            ray.shutdown()
    local, on_ray = (statistics.median(walls[e]) for e in ("local", "ray"))
    report = {
        "command": "python benchmarks/ray_throughput.py "
        + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "task": args.task,
        "inputs": args.count,
        "workers": args.workers,
        "threads_per_worker": args.threads,
        "rounds": args.rounds,
        "ray_startup_s": round(startup_s, 2),
        "local_s": [round(w, 2) for w in walls["local"]],
        "ray_s": [round(w, 2) for w in walls["ray"]],
        "local_inputs_per_s": round(args.count / local, 2),
        "ray_inputs_per_s": round(args.count / on_ray, 2),
        "ray_over_local": round(local / on_ray, 3),
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
