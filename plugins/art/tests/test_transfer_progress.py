"""art.style_transfer reports its optimisation steps, so a long transfer shows a moving bar
with an ETA; the runner places each image's steps in its batch's share of the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest, run_task

SAMPLES = Path(__file__).parents[1] / "vlm_art" / "samples"


@pytest.fixture(autouse=True)
def _private_home(vlm_home: Path) -> Path:
    return vlm_home


def test_style_transfer_reports_each_step_and_the_run_never_goes_back() -> None:
    seen: list[tuple[float, str]] = []
    inputs = [str(SAMPLES / "content.png"), str(SAMPLES / "style.png")]  # two contents
    # the optimisation with the smallest backbone: fast
    params = {"size": 32, "steps": 2, "backbone": "resnet18", "method": "optimize"}
    request = RunRequest("art.style_transfer", inputs, params, device="cpu", batch_size=1)
    outcome = run_task(
        request,
        registry=load_registry(),
        progress=lambda f, m: seen.append((f, m)),
        keep_results=False,
    )
    assert len(outcome.summaries) == 2
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0, seen
    # batch_size 1: each image's two steps fill its half of the run
    steps = [(round(f, 3), m) for f, m in seen if "step" in m]
    assert steps == [
        (0.25, "image 1 of 1: step 1/2"),
        (0.5, "image 1 of 1: step 2/2"),
        (0.75, "image 1 of 1: step 1/2"),
        (1.0, "image 1 of 1: step 2/2"),
    ]
    assert (0.5, "1 of 2 done") in seen and (1.0, "2 of 2 done") in seen
