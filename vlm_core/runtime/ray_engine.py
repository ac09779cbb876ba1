"""`vlm run ... --engine ray`: the same run on a Ray cluster, through Ray Data.

The driver (the `vlm run` process) probes the inputs as a local run does, then streams them
through a Ray Data pipeline: ``from_items`` over the probed inputs, ``map_batches`` with a fixed
pool of actors (:class:`TaskWorker`, ``--workers``, ``--gpus-per-worker`` GPUs each). Each actor
loads the task's model once, through the core's weights path, on its first batch, and then does
for its batches what the local batch loop does (:func:`vlm_core.runner._results`): read each
input with the registry's readers, call the task, apply ``--strict``, explain, and build the
results with their provenance.

**Where results go.** The results come back to the driver with the inputs they were made from,
in input order (Ray Data's ``preserve_order``), and the driver writes every file with the same
exporters, staging folder and atomic publish as a local run. So the outputs, the sidecars and
the run store entry are a local run's (one run id); the output folder need not be on shared
storage, but every node must read the inputs at the same paths (shared storage, as Ray's docs
say of file inputs), and have vlm and the plugins installed. The input travels back because
overlays are drawn on it; for very large inputs (long videos, big volumes) that is the price
of files identical to a local run's.

**Faults.** Ray Data's actor pools restart a dead actor (``max_restarts=-1``) and run its
batch again, here up to :data:`TASK_RETRIES` times (Ray Data's default would retry forever,
and an input that kills its process every time would stall the run); then the batch is given
up and its inputs are reported as failed. A batch's results are only taken once it finished,
so every input's result is present exactly once. An input the task crashes on is
reported as in a local run (`vlm run` exits 1 after the others); the plugin is not judged by
its samples on a worker (a worker's machine holds no user config to quarantine it in).

Without ``--address`` a local Ray is started with this machine's cores and shut down after the
run; with one (``ray start --head`` on the head node, ``ray start --address HEAD:6379`` on the
others, as Ray documents) the run joins that cluster. Ray is the ``ray`` extra.
"""

from __future__ import annotations

import logging
import math
import pickle
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vlm_core.errors import RefusedError, VLMError
from vlm_core.runner import (
    InputFailure,
    Refusal,
    RunRequest,
    RunState,
    batch_results,
    batch_size_of,
    prepare_task,
)
from vlm_core.runtime.engines import RayOptions, require_ray

if TYPE_CHECKING:
    import numpy as np

    from vlm_core.io.probe import Probe
    from vlm_core.tasks import TaskSpec
    from vlm_core.types import Result

#: times a batch is run again on a restarted actor after its actor died (then its inputs are
#: reported as failed: an input that kills its process must not stall the run)
TASK_RETRIES = 2


@dataclass
class BatchDone:
    """What a worker sends back for one batch: its results in input order, the inputs that
    failed or were refused, and its wall time per stage."""

    indices: list[int] = field(default_factory=list)  # the batch's inputs, by position in the run
    results: list[Result] = field(default_factory=list)
    failures: list[InputFailure] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class TaskWorker:
    """One Ray actor of a run: the task, its parameters and a run context of its own; the
    model is loaded once (on the first batch, through the task's own weights loading and the
    process-wide model cache) and serves every batch the actor is given."""

    def __init__(self, request: RunRequest, base: dict[str, Any], threads: int) -> None:
        import torch

        from vlm_core.plugins import get_registry
        from vlm_core.runtime.seeding import seed_everything
        from vlm_core.tasks import RunContext

        self.registry = get_registry()
        self.request = request
        self.base = base
        torch.set_num_threads(threads)
        self.spec, self.params, self.explain = prepare_task(request, self.registry)
        seed_everything(request.seed)
        self.ctx = RunContext(
            task=self.spec.id,
            plugin=self.spec.plugin,
            requested_device=request.device,
            seed=request.seed,
            batch_size=batch_size_of(request, self.spec),
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        probes = [pickle.loads(blob) for blob in batch["probe"]]
        done = self.run(probes)
        done.indices = [int(i) for i in batch["index"]]
        return {"done": np.array([pickle.dumps(done)], dtype=object)}

    def run(self, probes: list[Probe]) -> BatchDone:
        """The batch as the local loop runs it, its failures and refusals kept, not raised."""
        state = RunState(self.ctx, explain=self.explain)
        state.judged = True  # no sample runs and no quarantine from a worker
        done = BatchDone(timings=state.timings)
        try:
            results = batch_results(
                self.spec, self.params, probes, self.request, self.registry, self.base, state,
                isolate=True,
            )  # fmt: skip
            done.results.extend(results)
        except VLMError:  # every input of the batch failed or was refused: listed in state
            if not (state.failures or state.refused):
                raise
        done.failures, done.refused = state.failures, state.refused
        return done


def ray_results(
    spec: TaskSpec,
    probes: Sequence[Probe],
    request: RunRequest,
    base: dict[str, Any],
    options: RayOptions,
    batch_size: int,
) -> Iterator[BatchDone]:
    """Each batch of ``probes`` run by the actor pool, in input order, as it completes."""
    import torch

    ray = require_ray()
    options.check()
    threads = options.threads or torch.get_num_threads()
    started = not ray.is_initialized()
    if started:
        ray.init(
            address=options.address,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # results in input order
        context.enable_progress_bars = False  # the core reports progress across workers
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # `vlm run` prints the results
        # a batch whose actor dies more than TASK_RETRIES times is given up, not retried
        # forever (an input that kills its process every time): its inputs are reported
        context.max_errored_blocks = -1
        items = [{"index": i, "probe": pickle.dumps(probe)} for i, probe in enumerate(probes)]
        blocks = math.ceil(len(items) / batch_size)
        dataset = ray.data.from_items(items, override_num_blocks=blocks)
        with warnings.catch_warnings():
            # Ray Data 2.60 names no parameter for an actor task's retries; its generic
            # remote arguments are deprecated (removal in 2.64: the extra pins below it)
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            mapped = dataset.map_batches(
                TaskWorker,
                fn_constructor_kwargs={"request": request, "base": base, "threads": threads},
                batch_size=batch_size,
                compute=ray.data.ActorPoolStrategy(size=min(options.workers, blocks)),
                batch_format="numpy",
                num_gpus=options.gpus_per_worker or None,
                max_task_retries=TASK_RETRIES,
            )
        for batch in mapped.iter_batches(batch_size=None, batch_format="numpy"):
            for blob in batch["done"]:
                yield pickle.loads(blob)
    finally:
        if started:
            ray.shutdown()


def run_results(
    spec: TaskSpec,
    probes: list[Probe],
    request: RunRequest,
    base: dict[str, Any],
    state: RunState,
) -> Iterator[Any]:
    """The results of a run on Ray, in input order (the runner's engine ``ray``), with
    the workers' failures, refusals and stage times added to ``state``; progress is reported
    across workers as batches complete. When no input was answered, the first failure (or the
    refusals) is raised, as in a local run."""
    size = batch_size_of(request, spec)
    total, done = max(len(probes), 1), 0
    progress = state.ctx.progress
    answered: set[int] = set()
    for batch in ray_results(spec, probes, request, base, request.ray, size):
        answered.update(batch.indices)
        for key, value in batch.timings.items():
            state.timings[key] = state.timings.get(key, 0.0) + value
        state.failures += batch.failures
        state.refused += batch.refused
        for result in batch.results:
            if state.worker is None:
                made = result.provenance
                state.worker = {"device": made.device, "dtype": made.dtype,
                                "weights_sha256": dict(made.weights_sha256)}  # fmt: skip
            done += 1
            yield result
        if progress is not None:
            progress(len(answered) / total, f"{done} of {total} done on {request.ray.workers} "
                     "workers")  # fmt: skip
    for i in sorted(set(range(len(probes))) - answered):  # their batch's actor kept dying
        where = str(probes[i].path)
        state.failures.append(InputFailure(where, f"{where}: not answered: its batch failed "
                              f"{TASK_RETRIES + 1} times on the Ray workers (a worker killed or "
                              "out of memory; Ray's logs say)"))  # fmt: skip
    if done == 0 and state.failures:
        raise VLMError(state.failures[0].error)
    if done == 0 and state.refused:
        raise RefusedError("; ".join(r.error for r in state.refused[:3]))
