"""The caption tasks' fast path gives what the slow one gave: each batch goes through the image
tower once, and the caption's beam search and every tagging pass read that one memory (the
cross-attention's keys and values projected once per image, not once per candidate), with the
same captions and the same tags as before, recorded from the code before the change
(``data/caption_outputs.json``; ``python plugins/caption/tests/test_caption_speed.py`` rewrote
it); and the `vlm bench --pipeline` case of `caption.describe` runs on two tiny inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PIL

from vlm_core.errors import VLMError
from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest, run_task

SAMPLES = Path(__file__).resolve().parents[1] / "vlm_caption" / "samples"
RECORDED = Path(__file__).resolve().parent / "data" / "caption_outputs.json"
#: generated photos of data seed 41 (never trained or fitted on) beside the bundled samples
HELD_OUT_SEED, HELD_OUT = 41, 6
#: user tags: the caption-likelihood classifier's path (describe.caption_tags)
USER_TAGS = "mug, red mug, bottle, teapot, a cracked teapot"
MESSAGE = "Hi, my teapot arrived today and it is cracked."


@pytest.fixture(autouse=True)
def _private_home(vlm_home: Path) -> Path:
    return vlm_home


def _inputs(folder: Path) -> list[Path]:
    """The ten bundled samples and six held-out generated photos (96 px)."""
    from vlm_caption.products import render_photo

    folder.mkdir(parents=True, exist_ok=True)
    out = sorted(SAMPLES.glob("*.png"))
    for i in range(HELD_OUT):
        path = folder / f"held-{i}.png"
        PIL.fromarray(render_photo(96, HELD_OUT_SEED * 1_000_003 + i).pixels).save(path)
        out.append(path)
    return out


def _run(task: str, inputs: list[Path], **params: Any) -> list[dict[str, Any]]:
    request = RunRequest(task, [str(p) for p in inputs], params, device="cpu")
    outcome = run_task(request, registry=load_registry(), keep_results=True)
    assert not outcome.failures
    rows = []
    for result in outcome.results:
        caption = result.outputs["caption"]
        source = result.input.source if result.input is not None else None
        row: dict[str, Any] = {"name": Path(source).name if source else "", "ood": result.ood,
                               "caption": caption.text, "score": caption.score,
                               "tags": caption.tags}  # fmt: skip
        if "reply" in result.outputs:
            reply = result.outputs["reply"]
            row["reply"] = {"text": reply.text, "confidence": reply.confidence}
        rows.append(row)
    return rows


def _recognition(inputs: list[Path]) -> list[dict[str, dict[str, float]]]:
    """Every candidate's probability (unrounded) of each recognition question."""
    import numpy as np
    from vlm_caption.knowledge import load_knowledge_base
    from vlm_caption.model import load_captioner, recognise

    from vlm_core.types import Image

    images = [Image(np.asarray(PIL.open(p).convert("RGB"))) for p in inputs]
    seen = recognise(load_captioner(), images, load_knowledge_base())
    return [
        {kind: dict(getattr(s, kind).candidates) for kind in ("product", "colour", "problem")}
        for s in seen
    ]


def _outputs(folder: Path) -> dict[str, Any]:
    inputs = _inputs(folder)
    return {
        "describe": _run("caption.describe", inputs),
        "describe_tags": _run("caption.describe", inputs, tags=USER_TAGS),
        "describe_greedy": _run("caption.describe", inputs, beam=1),
        "answer": _run("caption.answer", inputs, message=MESSAGE),
        "recognition": _recognition(inputs),
    }


def _close(got: dict[str, float], want: dict[str, float], tol: float, what: str) -> None:
    assert got.keys() == want.keys(), what
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=tol), f"{what}: {key}"


def test_outputs_equal_the_recorded_ones_of_the_old_path(tmp_path: Path) -> None:
    """Same captions (exactly) and same tags, scores and reply confidences (within float
    noise: 2e-4 of a value rounded to 4 places, 1e-5 unrounded) as the code before the
    change, on 16 photos in two batches."""
    want = json.loads(RECORDED.read_text())
    got = _outputs(tmp_path)
    for run in ("describe", "describe_tags", "describe_greedy", "answer"):
        assert len(got[run]) == len(want[run]), run
        for g, w in zip(got[run], want[run], strict=True):
            what = f"{run} {w['name']}"
            assert g["name"] == w["name"] and g["caption"] == w["caption"], what
            if w["score"] is not None:
                assert g["score"] == pytest.approx(w["score"], abs=2e-4), what
            _close(g["tags"], w["tags"], 2e-4, what)
            if w["ood"] is not None:
                assert g["ood"]["flagged"] == w["ood"]["flagged"], what
                assert g["ood"]["score"] == pytest.approx(w["ood"]["score"], rel=1e-4), what
            if "reply" in w:
                assert g["reply"]["text"] == w["reply"]["text"], what
                assert g["reply"]["confidence"] == pytest.approx(
                    w["reply"]["confidence"], abs=2e-4
                ), what
    for i, (g, w) in enumerate(zip(got["recognition"], want["recognition"], strict=True)):
        for kind in w:
            _close(g[kind], w[kind], 1e-5, f"recognition {i} {kind}")


def test_one_memory_serves_every_decoding_and_scoring() -> None:
    """Decoding and scoring from a kept :class:`Memory` (or its bare tokens) give what they
    give from the images, which go through the image tower each time; several rows per image
    (beams, candidates) read the image's memory once."""
    import torch
    from vlm_caption.model import load_captioner

    model = load_captioner().captioner
    pixels = model.pixels([PIL.open(p).convert("RGB") for p in sorted(SAMPLES.glob("*.png"))[:3]])
    with torch.inference_mode():
        tokens = model.encode_images(pixels)
    memory = model.memory(tokens)
    assert len(memory) == 3 and len(memory.kv) == model.arch.depth
    assert memory.kv[0][0].shape[0] == 3  # one row per image, not per beam or candidate
    for kept in (memory, tokens):
        for decode in (model.greedy, lambda *a, **k: model.beam_search(*a, beam=3, **k)):
            want = decode(pixels, ["what colour is it?", None, None])
            got = decode(None, ["what colour is it?", None, None], memory=kept)
            assert got.texts == want.texts
            torch.testing.assert_close(torch.tensor(got.log_probs), torch.tensor(want.log_probs))
    vocab = model.vocab
    candidates = [[vocab.id("red"), vocab.eos], [vocab.id("a"), vocab.id("mug"), vocab.eos]]
    want = model.score_candidates(pixels, candidates, "what colour is it?")
    got = model.score_candidates(None, candidates, "what colour is it?", memory=memory)
    torch.testing.assert_close(got, want)
    with pytest.raises(VLMError, match="either images or their memory"):
        model.greedy(pixels, memory=memory)
    with pytest.raises(VLMError, match="memory must be"):
        model.memory(tokens[..., :3])


def test_bench_case_runs_the_model_on_two_inputs(tmp_path: Path) -> None:
    """The pipeline benchmark's case writes its inputs and its model-only callable runs the
    tower, the beam search and the tagging over them."""
    from vlm_caption.params import DescribeParams
    from vlm_caption.pipeline_bench import case

    bench = case()
    bench.make_inputs(tmp_path, 2, 1234)
    files = sorted(tmp_path.glob("*.png"))
    assert len(files) == 2 and PIL.open(files[0]).size == (96, 96)
    out = bench.model_only(files, DescribeParams(), 2, "cpu")()
    assert len(out) == 2 and all(text for text in out)
    assert bench.note and "beam search" in bench.note
    spec = load_registry().task("caption.describe")
    assert spec.resolve_bench() is not None and spec.batch_size > 1


def main() -> None:
    """Write the recorded outputs (run before a change to the captioner's decoding)."""
    import os
    import tempfile

    os.environ["VLM_HOME"] = tempfile.mkdtemp(prefix="vlm-home-")
    with tempfile.TemporaryDirectory() as tmp:
        outputs = _outputs(Path(tmp))
    RECORDED.parent.mkdir(parents=True, exist_ok=True)
    RECORDED.write_text(json.dumps(outputs, indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORDED}", file=sys.stderr)


if __name__ == "__main__":
    main()
