"""`vlm run caption.describe` at its defaults measures what `vlm eval caption.describe`
measures: the same BLEU, ROUGE-L and CIDEr-D on the same held-out photos, computed by the same
metric code from the captions the run wrote, because the evaluation decodes as the run does
(beam 3, at most 20 words: the weights' card ``inference``, else the task's defaults) and not
with training's greedy ``val_beam``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vlm_caption.model import UNSURE
from vlm_caption.shift_data import write_shift_set
from vlm_caption.shifts import TEST_SEED

from vlm_core.crossmodal import CaptionMetrics, read_captions
from vlm_core.runner import RunRequest, run_task
from vlm_core.runstore import RunStore
from vlm_core.training.api import evaluate_task

COUNT = 6


def run_metrics(listing: Path, out: Path, **params: object) -> dict[str, float]:
    """The caption metrics of `vlm run`'s captions of the listed photos against their
    references; a caption marked as a guess (a flagged photo) is scored without the mark."""
    items = [item for item in read_captions(listing) if item.question is None]
    request = RunRequest("caption.describe", [str(item.image) for item in items], dict(params),
                         out_dir=out, device="cpu", previews=False)  # fmt: skip
    run_task(request, store=RunStore(out.parent / f"{out.name}.sqlite"))
    metrics = CaptionMetrics()
    for item in items:
        result = json.loads((out / item.image.stem / "result.json").read_text())
        text = result["outputs"]["caption"]["text"]
        if result["ood"]["flagged"]:
            assert text.startswith(UNSURE)
            text = text.removeprefix(UNSURE)
        metrics.update([text], [list(item.captions)])
    return {f"val_{k}": float(v) for k, v in metrics.compute().items()}


@pytest.mark.parametrize("shift, seed", [("none", TEST_SEED), ("photometric", TEST_SEED + 1)])
def test_run_at_its_defaults_gives_the_figures_eval_gives(tmp_path: Path, shift: str, seed: int):
    listing = write_shift_set(tmp_path / "data", shift, COUNT, seed)
    evaluated = evaluate_task("caption.describe", listing, device="cpu")
    assert evaluated.samples == COUNT  # the held-out list is measured whole
    ran = run_metrics(listing, tmp_path / "out")
    for key in ("val_bleu1", "val_bleu4", "val_rougeL", "val_cider"):
        assert ran[key] == pytest.approx(evaluated.metrics[key], abs=1e-4), key
    if shift == "photometric":  # greedy captions differ here: what the user gives still wins
        greedy = run_metrics(listing, tmp_path / "greedy", beam=1)
        assert greedy["val_cider"] != pytest.approx(evaluated.metrics["val_cider"], abs=1e-3)


def test_eval_decodes_with_the_cards_inference_settings_else_the_runs_defaults() -> None:
    from vlm_caption.params import DescribeParams
    from vlm_caption.train import run_decoding

    defaults = DescribeParams()
    assert (run_decoding({}).beam, run_decoding({}).max_words) == (defaults.beam, 20)
    recorded = run_decoding({"inference": {"beam": 1, "max_words": 12}})
    assert (recorded.beam, recorded.max_words) == (1, 12)
