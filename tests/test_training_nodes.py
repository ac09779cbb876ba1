"""`vlm train` across two "nodes": two torchrun agents on this machine meeting at one c10d
rendezvous endpoint, two processes each, gloo on the CPU.

What a cluster adds to `torchrun --standalone` is a rendezvous between machines and a node that
can die; here each "node" is a torchrun agent (and its two workers) started as its own process
session, so a node's death is a SIGKILL of its whole process tree. Checked: four processes take
the same steps as one process with the same global batch; a run that loses a node fails on the
other node instead of hanging; relaunching both nodes with --resume continues from the last
checkpoint, which rank 0 alone wrote, to the uninterrupted run's weights; an elastic job
(--nnodes 1:2 --max-restarts 3) goes on with the surviving node alone. The figures are quoted
in docs/scaling-out.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import VLM, Vlm

from vlm_core.training import find_checkpoint
from vlm_core.training.checkpoint import read_pointer
from vlm_core.training.metrics_log import read_log

#: the settings of tests/test_training_processes.py's two-process test
SHORT = [
    "train", "good.shapes", "--steps", "30", "--batch-size", "16", "--lr", "3e-3",
    "--set", "val_every=15", "--set", "deterministic=true", "--set", "keep_last=10",
    "--set", "familiarity=false",
]  # fmt: skip
#: 240 steps (about 2 s of training on four processes): time to kill a node after the first
#: checkpoint and before the end
LONG = [*SHORT[:2], "--steps", "240", *SHORT[4:8], "--set", "val_every=60", *SHORT[10:]]
VAL_LONG = [60, 120, 180, 240]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory: pytest.TempPathFactory, fixture_site: Path) -> Path:
    sys.path.insert(0, str(fixture_site))
    from vlm_fixture_good.shapes import make_shapes

    return make_shapes(tmp_path_factory.mktemp("shapes"), per_class=40, seed=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun_node(port: int, run_id: str, *, host: bool, elastic: bool) -> list[str]:
    """One node's torchrun command line: two workers, c10d rendezvous on localhost.

    Both nodes are on this machine, so both would try to host the rendezvous store;
    ``is_host`` (a c10d backend option) says which one does, so the test knows which to kill.
    ``elastic``: one or two nodes, up to three restarts, and a 3 s wait for late nodes
    (``last_call_timeout``, 30 s by default) once the minimum has joined.
    """
    nodes = ["--nnodes", "1:2", "--max-restarts", "3"] if elastic else ["--nnodes", "2"]
    conf = f"is_host={'true' if host else 'false'}" + (",last_call_timeout=3" if elastic else "")
    return [
        sys.executable, "-m", "torch.distributed.run", *nodes, "--nproc-per-node", "2",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id,
        "--rdzv-conf", conf, "-m", "vlm_core.cli.__main__",
    ]  # fmt: skip


class TwoNodes:
    """Two torchrun agents ("a" hosts the rendezvous store, "b" joins it), each in a session of
    its own (as on its own machine), with its output in ``logs/NODE.log``."""

    def __init__(
        self, vlm: Vlm, args: list[str], logs: Path, tag: str, *, elastic: bool = False
    ) -> None:
        port, run_id = _free_port(), f"vlm-test-{tag}-{os.getpid()}"
        logs.mkdir(parents=True, exist_ok=True)
        self.logs = {name: logs / f"{tag}-{name}.log" for name in ("a", "b")}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for name in ("a", "b"):
            with self.logs[name].open("wb") as fh:
                self.procs[name] = subprocess.Popen(
                    [*_torchrun_node(port, run_id, host=name == "a", elastic=elastic), *args],
                    env=vlm.env(OMP_NUM_THREADS="1"),
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def wait(self, timeout: float) -> dict[str, int]:
        """Each node's exit code (the test fails, and kills both, past ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        codes: dict[str, int] = {}
        try:
            for name, proc in self.procs.items():
                codes[name] = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"node(s) still running after {timeout} s:\n{self.log('a')[-2000:]}"
            ) from None
        finally:
            for name in self.procs:
                self.kill(name)
        return codes

    def kill(self, name: str) -> None:
        """SIGKILL a node: its agent and every worker (torchrun starts each worker in a
        session of its own, so killing the agent's process group alone leaves them running)."""
        proc = self.procs[name]
        if proc.poll() is not None:
            return
        try:
            tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        os.killpg(proc.pid, signal.SIGKILL)
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        proc.wait()


def _val(out: Path) -> list[dict]:
    return [r for r in read_log(out) if "val_loss" in r]


def _max_weight_diff(a: Path, b: Path) -> float:
    ca, cb = find_checkpoint(a), find_checkpoint(b)
    assert ca is not None and cb is not None
    wa, wb = ca.model_state(), cb.model_state()
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def _one_writer(out: Path, val_steps: list[int]) -> None:
    """Rank 0 alone wrote: every step once in the metrics log, one folder per checkpoint and
    nothing else (no temporary folder of a second writer), holding all four ranks' generator
    states (gathered to rank 0, which writes them; each rank reads its own on resume)."""
    steps = [r["step"] for r in read_log(out) if "train_loss" in r]
    assert steps == sorted(set(steps)), f"duplicate or unordered steps: {steps}"
    folders = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert folders == [f"step-{s:08d}" for s in val_steps], folders
    last = find_checkpoint(out)
    assert last is not None
    assert last.sidecar["world_size"] == 4 and len(last.train_state()["rng"]) == 4


def _wait(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s")
        time.sleep(0.002)


def _run_two_nodes(vlm: Vlm, args: list[str], logs: Path, tag: str) -> float:
    """Run both nodes to the end; the seconds it took."""
    started = time.monotonic()
    nodes = TwoNodes(vlm, args, logs, tag)
    codes = nodes.wait(timeout=300)
    assert codes == {"a": 0, "b": 0}, nodes.log("a")[-3000:] + nodes.log("b")[-3000:]
    return time.monotonic() - started


@pytest.fixture(scope="module")
def straight(
    tmp_path_factory: pytest.TempPathFactory, fixture_site: Path, shapes_data: Path
) -> Path:
    """The uninterrupted two-node run of LONG: what a run that lost a node must end with."""
    tmp = tmp_path_factory.mktemp("straight")
    vlm = Vlm(tmp_path_factory.mktemp("home"), [fixture_site])
    args = [*LONG, "--data", str(shapes_data), "--out", str(tmp / "out")]
    _run_two_nodes(vlm, args, tmp / "logs", "straight")
    return tmp / "out"


def _start_and_kill_b(nodes: TwoNodes, out: Path) -> None:
    """Wait for the run's first checkpoint, then kill node b (its agent and workers)."""
    _wait(
        lambda: (
            read_pointer(out).get("last") is not None
            or any(p.poll() is not None for p in nodes.procs.values())
        ),
        timeout=180,
    )
    assert all(p.poll() is None for p in nodes.procs.values()), nodes.log("a")[-3000:]
    nodes.kill("b")


def _same_run(straight: Path, out: Path) -> tuple[float, float]:
    """(max val-loss difference, max weight difference) to the uninterrupted run, each
    checked against TOLERANCE."""
    val_straight = [(r["step"], r["val_loss"]) for r in _val(straight)]
    val_out = [(r["step"], r["val_loss"]) for r in _val(out)]
    assert [s for s, _ in val_out] == VAL_LONG
    loss_diff = max(abs(a[1] - b[1]) for a, b in zip(val_straight, val_out, strict=True))
    weight_diff = _max_weight_diff(straight, out)
    assert loss_diff < TOLERANCE and weight_diff < TOLERANCE, (val_straight, val_out, weight_diff)
    return loss_diff, weight_diff


@pytest.mark.slow  # about 20 s: one process, then four training processes and two agents
def test_two_nodes_match_one_process(vlm: Vlm, shapes_data: Path, tmp_path: Path) -> None:
    data = ["--data", str(shapes_data)]
    one = subprocess.run(
        [*VLM, *SHORT, *data, "--out", str(tmp_path / "one")],
        env=vlm.env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    seconds = _run_two_nodes(
        vlm, [*SHORT, *data, "--out", str(tmp_path / "four")], tmp_path / "logs", "four"
    )

    val_one, val_four = _val(tmp_path / "one"), _val(tmp_path / "four")
    assert [r["step"] for r in val_one] == [r["step"] for r in val_four] == [15, 30]
    assert [r["val_acc"] for r in val_one] == [r["val_acc"] for r in val_four]
    loss_diff = max(
        abs(a["val_loss"] - b["val_loss"]) for a, b in zip(val_one, val_four, strict=True)
    )
    assert loss_diff < TOLERANCE, (val_one, val_four)
    assert val_one[-1]["val_acc"] > 0.5  # it learned something
    weight_diff = _max_weight_diff(tmp_path / "one", tmp_path / "four")
    assert weight_diff < TOLERANCE, weight_diff
    _one_writer(tmp_path / "four", [15, 30])
    print(
        f"two nodes x 2 processes vs 1 process, global batch 16: max val-loss difference "
        f"{loss_diff:.2e}, max weight difference {weight_diff:.2e}; two-node run {seconds:.1f} s"
    )


@pytest.mark.slow  # about 40 s (and the shared uninterrupted run): a run that loses a node, and
# its resumption
def test_killed_node_fails_the_run_and_both_resume_from_the_last_checkpoint(
    vlm: Vlm, shapes_data: Path, straight: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [*LONG, "--data", str(shapes_data), "--out", str(out)]
    nodes = TwoNodes(vlm, args, tmp_path / "logs", "killed")
    _start_and_kill_b(nodes, out)
    killed = time.monotonic()
    code = nodes.wait(timeout=120)["a"]
    failed_after = time.monotonic() - killed
    assert code != 0, "node a ended well although node b died:\n" + nodes.log("a")[-3000:]
    last = find_checkpoint(out)
    assert last is not None and last.step in VAL_LONG[:-1], last
    kept = [r for r in read_log(out) if r["step"] <= last.step]

    resumed_s = _run_two_nodes(vlm, [*args, "--resume"], tmp_path / "logs", "resumed")
    # it continued from the checkpoint: the records up to it are the killed run's, untouched
    report = json.loads((out / "report.json").read_text())
    assert report["resumed_from_step"] == last.step and report["step"] == VAL_LONG[-1]
    assert report["world_size"] == 4
    assert read_log(out)[: len(kept)] == kept
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("resumed-*.log"))
    assert f"resuming from step {last.step} of {VAL_LONG[-1]}" in logs
    _one_writer(out, VAL_LONG)
    loss_diff, weight_diff = _same_run(straight, out)
    print(
        f"node b killed after the step-{last.step} checkpoint; node a exited {code} "
        f"{failed_after:.1f} s later; resumed run {resumed_s:.1f} s; vs the uninterrupted "
        f"two-node run: max val-loss difference {loss_diff:.2e}, weights {weight_diff:.2e}"
    )


@pytest.mark.slow  # about 35 s (and the shared uninterrupted run)
def test_elastic_run_goes_on_with_one_node_when_the_other_dies(
    vlm: Vlm, shapes_data: Path, straight: Path, tmp_path: Path
) -> None:
    """``--nnodes 1:2 --max-restarts 3``: torchrun restarts the surviving node's workers in a
    world of two, and the trainer resumes the last checkpoint (hence --resume from the first
    launch: torchrun re-runs the same command, which would otherwise refuse the folder)."""
    out = tmp_path / "out"
    args = [*LONG, "--data", str(shapes_data), "--out", str(out), "--resume"]
    nodes = TwoNodes(vlm, args, tmp_path / "logs", "elastic", elastic=True)
    _start_and_kill_b(nodes, out)
    killed = time.monotonic()
    code = nodes.wait(timeout=240)["a"]
    finished_after = time.monotonic() - killed
    assert code == 0, nodes.log("a")[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "completed" and report["step"] == VAL_LONG[-1]
    assert report["world_size"] == 2 and report["resumed_from_step"] in VAL_LONG[:-1]
    steps = [r["step"] for r in read_log(out) if "train_loss" in r]
    assert steps == sorted(set(steps)), steps
    # the global batch stays 16 (8 per process now): the same steps, to rounding
    loss_diff, weight_diff = _same_run(straight, out)
    print(
        f"elastic: node b killed, node a resumed step {report['resumed_from_step']} with 2 "
        f"processes and finished {finished_after:.1f} s after the kill; vs the uninterrupted "
        f"four-process run: max val-loss difference {loss_diff:.2e}, weights {weight_diff:.2e}"
    )
