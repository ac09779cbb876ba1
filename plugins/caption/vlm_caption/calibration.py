"""Recognition confidences that mean something: temperature scaling of the captioner's three
questions (product, colour, problem).

The recognition (:func:`vlm_caption.model.recognise`) scores every candidate answer of a
question by its mean log-probability over the question's wordings and takes a softmax over
the candidates: those mean log-probabilities are the logits. One temperature ``T`` per
question is fitted on held-out generated photos (their product, colour and problem are known)
by the core's :func:`~vlm_core.familiarity.calibration.calibrate` (minimum negative
log-likelihood of the right answer), and the recognition then takes ``softmax(logits / T)``.
The ranking, and so every answer's accuracy, is unchanged; what changes is how sure
`caption.answer` is (its ``min_confidence`` rule) and the tags `caption.describe` reports.

Expected calibration error is reported per question on the probabilities the tasks report:
those of the values (the texts "missing handle", "missing lid"... all stand for "missing
part", whose probability is their sum).

``python -m vlm_caption.calibration [--weights W] [--seed 25] [--n 600] [--check-seed 40]
[--augment photometric] [--write]`` fits the temperatures on ``n`` photos of data seed
``seed`` (half 96 px, half 128 px), prints ECE before and after on them and on ``n`` photos of
``--check-seed``, and with ``--write`` records them as ``recognition_calibration`` in the card
of the weights' ``model.json``, which every later run reads. ``--augment photometric`` draws
both sets under the training augmentation (:mod:`vlm_caption.augment`), for weights trained
with it: on clean photos alone such a captioner is right so often that the fit only sharpens.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vlm_caption.augment import AUGMENTS
from vlm_caption.model import CALIBRATION_KEY, Loaded, answer_logits, encode
from vlm_caption.products import Photo, answers, render_photo

if TYPE_CHECKING:
    from vlm_caption.knowledge import KnowledgeBase

#: the photo sizes the fitting and checking photos alternate between
SIZES = (96, 128)


def photos(n: int, seed: int, augment: str = "none") -> list[Photo]:
    """``n`` generated photos of data seed ``seed`` (photo ``i`` as ``write_dataset`` draws
    it), alternately :data:`SIZES` px; with ``augment`` (a name of
    :data:`vlm_caption.augment.AUGMENTS`) each under its own draw of that augmentation, seeded
    by ``seed`` (the global torch generator is left as it was)."""
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augment '{augment}' (augments: {', '.join(AUGMENTS)})")
    shots = [render_photo(SIZES[i % len(SIZES)], seed * 1_000_003 + i) for i in range(n)]
    if augment == "none":
        return shots
    import dataclasses

    import torch
    from torchvision.transforms.v2 import functional as F

    from vlm_caption.augment import photometric

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return [
            dataclasses.replace(
                shot, pixels=photometric(F.to_image(np.array(shot.pixels))).permute(1, 2, 0).numpy()
            )
            for shot in shots
        ]


class Logits:
    """One question's logits on a set of photos: ``logits`` (N, T) over the candidate
    ``texts``, ``labels`` (N,) the index of each photo's right text, ``values`` the value each
    text stands for."""

    def __init__(self, logits: np.ndarray, labels: np.ndarray, texts: list[str],
                 values: list[str]) -> None:  # fmt: skip
        self.logits, self.labels, self.texts, self.values = logits, labels, texts, values

    def value_probabilities(self, temperature: float) -> tuple[np.ndarray, np.ndarray]:
        """(N, V) probabilities of the distinct values at ``temperature`` and (N,) the index
        of each photo's right value."""
        import torch

        probs = torch.softmax(torch.as_tensor(self.logits) / temperature, dim=1).numpy()
        names = list(dict.fromkeys(self.values))
        merged = np.zeros((len(probs), len(names)))
        for j, value in enumerate(self.values):
            merged[:, names.index(value)] += probs[:, j]
        right = np.asarray([names.index(self.values[i]) for i in self.labels])
        return merged, right

    def ece(self, temperature: float) -> float:
        """Expected calibration error of the value probabilities at ``temperature``."""
        from vlm_core.familiarity.calibration import expected_calibration_error

        merged, right = self.value_probabilities(temperature)
        return expected_calibration_error(np.log(np.clip(merged, 1e-12, 1.0)), right)


def recognition_logits(
    loaded: Loaded, shots: Sequence[Photo], kb: KnowledgeBase, *, batch: int = 50
) -> dict[str, Logits]:
    """Per question kind, the raw (temperature 1) logits of the recognition on ``shots``."""
    import torch

    from vlm_core.types import Image

    parts: dict[str, list[torch.Tensor]] = {}
    texts: dict[str, list[str]] = {}
    values: dict[str, list[str]] = {}
    for start in range(0, len(shots), batch):
        chunk = [Image(p.pixels) for p in shots[start : start + batch]]
        for kind, (logits, kind_texts, kind_values) in answer_logits(
            loaded, encode(loaded, chunk), kb
        ).items():
            parts.setdefault(kind, []).append(logits)
            texts[kind], values[kind] = kind_texts, kind_values
    out = {}
    for kind, rows in parts.items():
        labels = np.asarray([texts[kind].index(answers(p)[kind]) for p in shots])
        out[kind] = Logits(torch.cat(rows).numpy(), labels, texts[kind], values[kind])
    return out


def fit_temperatures(loaded: Loaded, shots: Sequence[Photo], kb: KnowledgeBase
                     ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per question kind, the fitted temperature with the ECE (of the value probabilities)
    and NLL before and after on ``shots``: the card entry to record."""
    from vlm_core.familiarity.calibration import calibrate

    out = {}
    for kind, found in recognition_logits(loaded, shots, kb).items():
        report = calibrate(found.logits, found.labels)
        out[kind] = {
            **report.to_dict(),
            "ece_before": round(found.ece(1.0), 6),
            "ece_after": round(found.ece(report.temperature), 6),
        }
    return out


def check(loaded: Loaded, shots: Sequence[Photo], kb: KnowledgeBase,
          temperatures: dict[str, float]) -> dict[str, dict[str, float]]:  # fmt: skip
    """ECE before (T = 1) and after (``temperatures``) on other photos, per question."""
    return {
        kind: {
            "ece_before": round(found.ece(1.0), 6),
            "ece_after": round(found.ece(temperatures[kind]), 6),
            "accuracy": round(float((found.logits.argmax(1) == found.labels).mean()), 4),
            "samples": len(found.labels),
        }
        for kind, found in recognition_logits(loaded, shots, kb).items()
    }


def record(weights_file: Path, entry: dict[str, Any]) -> Path:
    """Write ``entry`` as ``card.recognition_calibration`` of the ``model.json`` beside
    ``weights_file`` (atomically); returns that file."""
    from vlm_core.weights.layout import record_in_card

    return record_in_card(weights_file, CALIBRATION_KEY, entry)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vlm_caption.calibration",
        description="Fit the temperature of the captioner's product, colour and problem "
        "questions on held-out generated photos.",
    )
    parser.add_argument("--weights", default="",
                        help="a vlm train output folder, checkpoint or model file (default: the "
                        "bundled captioner)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=25,
                        help="data seed of the fitting photos (default 25; not 0, the bundled "
                        "captioner's training data)")  # fmt: skip
    parser.add_argument("--n", type=int, default=600, help="fitting photos (default 600)")
    parser.add_argument("--check-seed", type=int, default=40,
                        help="data seed of as many photos to check the ECE on "
                        "(default 40)")  # fmt: skip
    parser.add_argument("--augment", default="none", choices=AUGMENTS,
                        help="draw the photos under this training augmentation (default "
                        "none; photometric for weights trained with it)")  # fmt: skip
    parser.add_argument("--write", action="store_true",
                        help="record the temperatures in the weights' model.json")  # fmt: skip
    args = parser.parse_args(argv)
    from vlm_caption.knowledge import load_knowledge_base
    from vlm_caption.model import load_captioner
    from vlm_core.errors import VLMError

    if args.n < 10 or args.seed == args.check_seed:
        parser.error("give at least 10 photos, and a check seed other than the fitting seed")
    try:
        loaded = load_captioner(args.weights)
        kb = load_knowledge_base()
        # fit at temperature 1 whatever the weights record
        fitted = fit_temperatures(loaded, photos(args.n, args.seed, args.augment), kb)
        entry = {kind: {**e, "data_seed": args.seed, "sizes": list(SIZES),
                        "augment": args.augment} for kind, e in fitted.items()}  # fmt: skip
        temperatures = {kind: e["temperature"] for kind, e in fitted.items()}
        held = check(loaded, photos(args.n, args.check_seed, args.augment), kb, temperatures)
        print(json.dumps({"fit": entry, f"check (data seed {args.check_seed})": held}, indent=2))
        if args.write:
            print(f"recorded in {record(Path(loaded.path), entry)}")
    except VLMError as exc:
        print(f"error: {exc}")
        return int(getattr(exc, "exit_code", 2)) or 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
