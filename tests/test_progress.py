"""Progress that reaches any stderr: plain lines when it is not a terminal (their pace, ETA,
the training figures, the resume line) and the training curves' panels."""

from __future__ import annotations

import io
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from vlm_core.progress import Pace, ProgressDisplay, format_duration

LINE = re.compile(r"step (\d+)/(\d+) \((\d+)%\)")


class FakeClock:
    """Seconds that move only when the test says so (or by ``tick`` on every reading)."""

    def __init__(self, tick: float = 0.0) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_format_duration() -> None:
    assert format_duration(0) == "0:00:00"
    assert format_duration(3725.4) == "1:02:05"
    assert format_duration(None) == format_duration(float("nan")) == "?"


def test_the_eta_comes_from_the_speed_since_the_first_update() -> None:
    clock = FakeClock()
    pace = Pace(100, clock=clock)
    clock.now = 5.0
    pace.update(50)  # a resumed run starts half way: those steps took no time here
    assert pace.rate is None and pace.eta is None
    assert pace.text() == "elapsed 0:00:05  ETA ?"
    clock.now = 15.0
    pace.update(60)
    assert pace.rate == pytest.approx(1.0) and pace.eta == pytest.approx(40.0)
    assert pace.text() == "elapsed 0:00:15  ETA 0:00:40"
    pace.update(100)
    assert pace.eta == 0.0


@pytest.mark.parametrize(
    ("seconds_per_step", "steps", "gap_steps"),
    [
        (1.0, 400, 20),  # 5% (20 steps, 20 s) is rarer than 10 s
        (3.0, 40, 4),  # 10 s (4 steps) is rarer than 5% (2 steps, 6 s)
        (30.0, 10, 1),  # each step is over 10 s and 10%: a line per step
    ],
)
def test_plain_lines_come_at_the_rarer_of_10_s_and_5_percent(
    seconds_per_step: float, steps: int, gap_steps: int
) -> None:
    clock, stream = FakeClock(), io.StringIO()
    with ProgressDisplay("t", total=steps, unit="step", stream=stream, clock=clock) as display:
        display.update(0)  # where the work starts (the trainer's start event)
        for step in range(1, steps + 1):
            clock.now += seconds_per_step
            display.update(step, info="loss=1")
        display.finish()
    lines = stream.getvalue().splitlines()
    at = [int(LINE.search(line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert at == list(range(gap_steps, steps + 1, gap_steps)), at
    for line in lines[:-1]:
        assert re.search(r"loss=1  elapsed \d:\d\d:\d\d  ETA \d:\d\d:\d\d$", line), line
    assert lines[-1].endswith("ETA 0:00:00")


def test_a_short_run_writes_no_plain_line_until_finished() -> None:
    clock, stream = FakeClock(tick=0.01), io.StringIO()
    with ProgressDisplay("medical.segment", stream=stream, clock=clock) as display:
        for i in range(1, 11):
            display.update(i / 10, info=f"{i} of 10 done")
        assert stream.getvalue() == "" and display.lines == 0
        display.note("a note")
    assert stream.getvalue() == "a note\n"


def test_quiet_shows_nothing_and_a_terminal_gets_the_bar() -> None:
    stream = io.StringIO()
    with ProgressDisplay("t", quiet=True, stream=stream, clock=FakeClock(tick=60)) as display:
        display.update(0.5)
        display.note("hidden")
        display.finish()
    assert stream.getvalue() == ""
    with ProgressDisplay("t", tty=True, stream=stream, clock=FakeClock(tick=60)) as display:
        display.update(0.5, info="half")
        display.note("shown above the bar")
        display.finish()  # the bar goes away: no plain progress line
    assert "shown above the bar" in stream.getvalue() and "ETA" not in stream.getvalue()


def _event(kind: str, step: int, **kw: object) -> SimpleNamespace:
    base = {"total_steps": 20, "epoch": 0, "values": {}, "message": "", "samples": 0,
            "loss": None, "resumed_from": ""}  # fmt: skip
    return SimpleNamespace(kind=kind, step=step, **{**base, **kw})


def test_train_progress_lines_carry_loss_throughput_and_eta() -> None:
    from vlm_core.progress import TrainProgress

    clock, stream = FakeClock(), io.StringIO()
    display = ProgressDisplay("good.shapes", unit="step", stream=stream, clock=clock)
    progress = TrainProgress(display)
    progress(_event("start", 10, resumed_from="/runs/x/checkpoints/step-00000010"))  # type: ignore[arg-type]
    for step in range(11, 21):
        clock.now += 10.0
        progress(_event("step", step, loss=float(step), samples=16 * (step - 10)))  # type: ignore[arg-type]
    progress(_event("validate", 20, values={"val_acc": 0.5}))  # type: ignore[arg-type]
    progress(_event("end", 20, samples=160))  # type: ignore[arg-type]
    lines = stream.getvalue().splitlines()
    assert lines[0] == "resuming from step 10 of 20 (checkpoint /runs/x/checkpoints/step-00000010)"
    assert lines[1] == (
        "good.shapes: step 11/20 (55%)  loss=11  1.6 samples/s  elapsed 0:00:10  ETA 0:01:30"
    )
    assert lines[2].startswith("good.shapes: step 12/20 (60%)  loss=12  1.6 samples/s")
    assert lines[-2] == (
        "good.shapes: step 20/20 (100%)  loss=20  1.6 samples/s  elapsed 0:01:40  ETA 0:00:00"
    )
    assert lines[-1] == "step 20/20: val_acc=0.5"
    # one line per step (each took 10 s and 5%); the end repeats none
    assert len(lines) == 1 + 10 + 1


@pytest.fixture
def vlm_here(
    vlm_cli: Callable[..., subprocess.CompletedProcess[str]],
    fixture_site: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., subprocess.CompletedProcess[str]]:
    monkeypatch.syspath_prepend(str(fixture_site))
    return vlm_cli


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory, fixture_site: Path) -> Path:
    import sys

    sys.path.insert(0, str(fixture_site))
    from vlm_fixture_good.shapes import make_shapes

    return make_shapes(tmp_path_factory.mktemp("shapes"), per_class=8, seed=1)


def test_vlm_train_writes_progress_lines_to_a_non_terminal(
    vlm_here: Callable[..., subprocess.CompletedProcess[str]],
    shapes: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In this process stderr is captured (not a terminal); the display's clock moves 4 s at
    each reading, so the 10 s / 5% pace is met every couple of steps without sleeping."""
    import vlm_core.progress

    clock = FakeClock(tick=4.0)
    monkeypatch.setattr(vlm_core.progress, "time", SimpleNamespace(monotonic=clock))
    proc = vlm_here("train", "good.shapes", "--data", str(shapes), "--steps", "12",
                    "--batch-size", "4", "--out", str(tmp_path / "o"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if LINE.search(line)]
    assert len(lines) >= 4, proc.stderr
    steps = [int(LINE.search(line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert steps == sorted(steps) and steps[-1] == 12
    pattern = (
        r"^good\.shapes: step \d+/12 \(\d+%\)  loss=[\d.e+-]+  [\d.]+ samples/s  "
        r"elapsed \d:\d\d:\d\d  ETA \d:\d\d:\d\d$"
    )
    for line in lines:
        assert re.match(pattern, line), line
    assert proc.stdout.startswith("completed: 12/12 steps")


def test_vlm_run_over_many_inputs_writes_progress_lines_to_a_non_terminal(
    vlm_here: Callable[..., subprocess.CompletedProcess[str]],
    shapes: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import vlm_core.progress

    inputs = sorted(str(p) for p in shapes.glob("*/*.png"))[:8]
    quiet = vlm_here("run", "good.invert", *inputs)  # a short run with a real clock: no lines
    assert quiet.returncode == 0 and "ETA" not in quiet.stderr, quiet.stderr
    clock = FakeClock(tick=6.0)
    monkeypatch.setattr(vlm_core.progress, "time", SimpleNamespace(monotonic=clock))
    # one input per task call, so that the bar moves between inputs (the task's own batch of
    # 8 would take them all in one call, reporting once)
    proc = vlm_here("run", "good.invert", *inputs, "--batch-size", "1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) >= 3, proc.stderr
    for line in lines:
        assert re.match(
            r"^good\.invert: \d+%  \d of 8 done  elapsed \d:\d\d:\d\d  ETA \d:\d\d:\d\d$", line
        ), line
    assert lines[-1].startswith("good.invert: 100%  8 of 8 done")
    assert len(proc.stdout.splitlines()) == 8 + 1  # the results and the summary, on stdout


def _resume_lines(
    first: Callable[..., subprocess.CompletedProcess[str]],
    second: Callable[..., subprocess.CompletedProcess[str]],
    shapes: Path,
    out: Path,
) -> None:
    args = ["train", "good.shapes", "--data", str(shapes), "--batch-size", "4", "--out", str(out)]
    done = first(*args, "--steps", "3")
    assert done.returncode == 0, done.stderr
    resumed = second(*args, "--steps", "6", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    lines = resumed.stderr.splitlines()
    checkpoint = out / "checkpoints" / "step-00000003"
    assert lines[0] == f"resuming from step 3 of 6 (checkpoint {checkpoint})", resumed.stderr
    final = [line for line in lines if LINE.search(line)][-1]
    assert re.match(
        r"good\.shapes: step 6/6 \(100%\)  loss=\S+  [\d.]+ samples/s  elapsed \S+  ETA 0:00:00$",
        final,
    ), resumed.stderr
    assert resumed.stdout.startswith("completed: 6/6 steps")


def test_a_resumed_vlm_train_says_where_it_resumes(
    vlm_here: Callable[..., subprocess.CompletedProcess[str]], shapes: Path, tmp_path: Path
) -> None:
    _resume_lines(vlm_here, vlm_here, shapes, tmp_path / "o")


@pytest.mark.slow
def test_a_resumed_vlm_train_says_where_it_resumes_in_real_processes(
    vlm: Callable[..., subprocess.CompletedProcess[str]], shapes: Path, tmp_path: Path
) -> None:
    """The same as two real `vlm` processes whose stderr is a pipe (two interpreter and torch
    start-ups: the slow tier; the in-process test above is its fast counterpart)."""
    _resume_lines(vlm, vlm, shapes, tmp_path / "o")


def test_curves_put_losses_bounded_metrics_and_large_ones_on_their_own_axes() -> None:
    """A GAN-like log: losses in the thousands, KID and accuracy in [0, 1], FID in the
    hundreds; the figure's axes are read, not its pixels."""
    from vlm_core.training.report import curves_figure, plot_curves

    records: list[dict[str, object]] = [
        {"step": s, "epoch": 0, "time": s, "train_loss": 4000.0 / s, "lr": 1e-3,
         "train_loss_g": 3000.0 / s} for s in range(1, 41)
    ]  # fmt: skip
    records += [
        {"step": s, "val_loss": 3500.0 / s, "val_kid": 0.5 - s / 100, "val_acc": s / 40,
         "val_fid": 1221.0 - s} for s in (10, 20, 30, 40)
    ]  # fmt: skip
    fig = curves_figure(records)
    panels = {ax.get_title(): ax for ax in fig.axes}
    labels = {title: sorted(line.get_label() for line in ax.get_lines())
              for title, ax in panels.items()}  # fmt: skip
    assert labels == {
        "loss": ["train_loss", "train_loss_g", "val_loss"],
        "validation (0-1)": ["val_acc", "val_kid"],
        "val_fid": ["val_fid"],
    }
    low, high = panels["validation (0-1)"].get_ylim()
    assert low >= -0.05 and high <= 1.05
    assert panels["val_fid"].get_ylim()[0] > 1000  # its own scale, not squashed by 0-1 values
    assert panels["loss"].get_ylim()[1] > 1000
    assert "lr" not in str(labels)
    png = plot_curves(records)
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert curves_figure([{"step": 1, "lr": 0.1}]) is None


def test_the_train_pages_job_carries_elapsed_and_eta() -> None:
    """The dashboard's training job feeds the same Pace from the trainer's events; the Train
    page shows its text beside "step N of M" while the job runs."""
    from vlm_dashboard.training_jobs import TrainingJob

    job = TrainingJob("good.shapes", Path("out"), Path("data"))
    assert job.snapshot()["pace"] == ""
    job.on_event(_event("start", 0))
    job.on_event(_event("step", 5, loss=1.0, samples=80))
    text = job.snapshot()["pace"]
    assert re.fullmatch(r"elapsed \d:\d\d:\d\d  ETA (\d:\d\d:\d\d|\?)", text), text
    job.status = "completed"
    assert job.snapshot()["pace"] == ""  # a finished job shows no estimate
