"""`caption.describe` in `vlm bench --pipeline`: generated product photos at 96 px (the bundled
samples' size, the generator's default) as PNG files, against the captioner's network passes
alone on the decoded, preprocessed photos (:data:`NOTE`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlm_core.bench.pipeline import PipelineCase

SIZE = 96
NOTE = (
    "the captioner on preprocessed photos, one call per batch: the image tower once (with the "
    "familiarity tap's pooled features) and its memory projected once, the caption's beam "
    "search, and the default tags' teacher-forced scoring of every candidate answer to the 9 "
    "recognition questions over that memory"
)


def make_inputs(folder: Path, count: int, seed: int) -> None:
    """``count`` photos of data seed ``seed`` (photo ``i`` as ``write_dataset(seed=seed)``
    draws it; the bundled captioner trained on data seed 0, so 0 is refused)."""
    from PIL import Image

    from vlm_caption.products import render_photo

    if seed == 0:
        raise ValueError("data seed 0 is the bundled captioner's training data; pick another")
    for i in range(count):
        photo = render_photo(SIZE, seed * 1_000_003 + i)
        Image.fromarray(photo.pixels).save(folder / f"photo-{i:05d}.png")


def model_only(files: list[Path], params: Any, batch: int, device: str) -> Callable[[], Any]:
    """The passes of a default `caption.describe` (``params``: its DescribeParams) over
    ``files``, ``batch`` photos a call; the callable returns the captions."""
    from PIL import Image

    from vlm_caption.knowledge import load_knowledge_base
    from vlm_caption.model import answer_logits, load_captioner, tapped

    loaded = load_captioner(params.weights, device=device)
    model, kb, max_len = loaded.captioner, load_knowledge_base(), params.max_words + 1
    pixels = model.pixels([Image.open(f).convert("RGB") for f in files]).to(model.device)

    def run() -> list[str]:
        import torch

        texts: list[str] = []
        for start in range(0, len(files), batch):
            with torch.inference_mode():
                with tapped(loaded) as check:
                    memory = model.memory(model.encode_images(pixels[start : start + batch]))
                if check.tap is not None:
                    check.tap.features()
                answer_logits(loaded, memory, kb)
                if params.beam == 1:
                    decoded = model.greedy(None, max_len=max_len, memory=memory)
                else:
                    decoded = model.beam_search(None, beam=params.beam, max_len=max_len,
                                                memory=memory)  # fmt: skip
            texts.extend(decoded.texts)
        return texts

    return run


def case() -> PipelineCase:
    return PipelineCase(make_inputs, model_only, note=NOTE)
