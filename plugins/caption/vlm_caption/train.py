"""Training `caption.describe` (and so every caption task) with the core trainer: a
:class:`~vlm_core.crossmodal.Captioner` on a caption / visual-QA CSV or a COCO captions JSON,
split by image, validated by BLEU, ROUGE-L and CIDEr of its captions.

`vlm eval` decodes the captions as `vlm run caption.describe` writes them at its defaults
(:func:`run_decoding`: the beam width and caption length the weights' card records under
``inference``, else the task's), so the two give the same figure on the same photos; training
validates with ``val_beam`` (greedy by default, for speed). A held-out list
(``heldout.csv``, what `vlm eval --shift` writes) is evaluated whole, without a split.

The setup also declares the familiarity features (:func:`vlm_caption.model.image_features`:
what a run taps), so training ends by fitting the captioner's model of its training photos:
a Gaussian of those features (Mahalanobis distance) over one item per training image, its
threshold calibrated on the validation images. ``purpose="fit"`` (``vlm train
--fit-ood-only``) builds the same from the weights' own card."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from vlm_caption.params import CaptionTrainParams, DescribeParams
from vlm_caption.shifts import HELD_OUT_FILE
from vlm_core.crossmodal import (
    CaptionDataset,
    Captioner,
    CaptionItem,
    Vocab,
    captioner_setup,
    read_captions,
    split_items,
)
from vlm_core.crossmodal.vocab import tokenize
from vlm_core.errors import InputError
from vlm_core.tasks import TrainContext
from vlm_core.training import TrainSetup

#: the file `vlm train caption.describe --data FOLDER` reads in a folder
DATA_FILES = ("captions.csv", "captions.json", HELD_OUT_FILE)
#: the run settings the captions of new weights are evaluated with, recorded in their card
#: (``inference``) so that `vlm run` keeps using them: `caption.describe`'s defaults
INFERENCE_KEYS = ("beam", "max_words")


def run_decoding(card: Mapping[str, Any]) -> DescribeParams:
    """`caption.describe`'s parameters at its defaults for weights with ``card``: the card's
    ``inference`` settings in place of the task's defaults (what `vlm run` decodes with)."""
    from vlm_core.params import under_given

    return under_given(DescribeParams(), card.get("inference"), owner="the weights' card")


def data_file(data: Path) -> Path:
    """``data`` itself, or the captions file inside a folder."""
    data = Path(data)
    if data.is_dir():
        for name in DATA_FILES:
            if (data / name).is_file():
                return data / name
        raise InputError(
            f"{data} holds no {' or '.join(DATA_FILES)}; give a caption CSV "
            "(image,caption[,question,answer]) or a COCO captions JSON"
        )
    return data


def build(data: Path, params: CaptionTrainParams, ctx: TrainContext) -> TrainSetup:
    """The TrainSetup of `vlm train caption.describe --data FILE_OR_FOLDER`."""
    path = data_file(data)
    items = read_captions(path)
    if path.name == HELD_OUT_FILE:
        if ctx.purpose != "eval":
            raise InputError(
                f"{path} is held-out evaluation data (written for `vlm eval --shift`); "
                "train or fit on another caption list"
            )
        train, val = items, list(items)  # measured whole; nothing trains in an evaluation
    else:
        train, val = split_items(items, params.val_fraction, seed=ctx.seed)
    if not train:
        raise InputError(f"{data}: no training images after holding out {params.val_fraction}")
    if params.val_captions_only:
        val = [item for item in val if item.question is None]
    card = ctx.weights_card
    if "architecture" in card and "vocab" in card:
        # evaluating trained weights: their architecture and vocabulary, not the data's
        model = Captioner.from_card(card, plugin="caption")
    elif params.init_weights:
        model = _fine_tuned(params.init_weights, train, ctx)
    else:
        vocab = Vocab.build(
            (text for item in train for text in item.texts()), min_count=params.min_count
        )
        arch = {
            "backbone": params.backbone,
            "image_size": params.image_size,
            "feature_level": params.feature_level,
            "width": params.width,
            "depth": params.depth,
            "heads": params.heads,
            "dropout": params.dropout,
            "max_positions": params.max_positions,
        }
        model = Captioner(
            arch, vocab, backbone_weights=params.backbone_weights or None, plugin="caption"
        )
    ctx.logger.info(
        "captioner: %d training items, %d validation items, vocabulary %d, %.2f M parameters",
        len(train), len(val), len(model.vocab), sum(p.numel() for p in model.parameters()) / 1e6,
    )  # fmt: skip
    if ctx.purpose == "eval":  # the captions `vlm run` writes with these weights
        decoding = run_decoding(card)
        val_beam, val_max_len = decoding.beam, decoding.max_words + 1
    else:
        val_beam, val_max_len = params.val_beam, None
    setup = captioner_setup(
        model,
        train,
        val or None,
        label_smoothing=params.label_smoothing,
        val_beam=val_beam,
        val_max_len=val_max_len,
        card={"inference": DescribeParams().model_dump(include=set(INFERENCE_KEYS))},
    )
    if params.augment != "none" and ctx.purpose != "eval":
        setup = augmented_setup(setup, model, train, val, params.augment, ctx.purpose)
    return familiar(setup, model, train, params.augment if ctx.purpose != "eval" else "none")


def augmented_setup(
    setup: TrainSetup,
    model: Captioner,
    train: list[CaptionItem],
    val: list[CaptionItem],
    augment: str,
    purpose: str,
) -> TrainSetup:
    """``setup`` training on ``augment``-ed photos (:mod:`vlm_caption.augment`). Validation
    stays on the photos as generated, except when only the familiarity model is fitted
    (``purpose="fit"``): its threshold is then calibrated on validation photos drawn like the
    ones it is fitted on."""
    from vlm_caption.augment import augmented

    transform = augmented(model.transform, augment)
    positions = model.arch.max_positions
    train_data = CaptionDataset(train, model.vocab, transform, max_positions=positions)
    val_data = setup.val_data
    if purpose == "fit" and val:
        val_data = CaptionDataset(val, model.vocab, transform, max_positions=positions,
                                  per_caption=False)  # fmt: skip
    return dataclasses.replace(setup, train_data=train_data, val_data=val_data)


def one_per_image(items: list[CaptionItem]) -> list[CaptionItem]:
    """One item per image (its caption item when it has one), in the items' order."""
    chosen: dict[Path, CaptionItem] = {}
    for item in items:
        if item.image not in chosen or (item.question is None and chosen[item.image].question):
            chosen[item.image] = item
    return list(chosen.values())


def familiar(
    setup: TrainSetup, model: Captioner, train: list[CaptionItem], augment: str = "none"
) -> TrainSetup:
    """``setup`` with the familiarity features of a run, fitted on each training image once
    (not once per caption) by Mahalanobis distance (README, "Knowing its limits"), drawn
    under ``augment`` as the captioner trains on them: a photo it was trained to read is not
    refused as unfamiliar."""
    from vlm_caption.augment import augmented
    from vlm_caption.model import image_features

    transform = augmented(model.transform, augment)
    images = CaptionDataset(one_per_image(train), model.vocab, transform,
                            max_positions=model.arch.max_positions, per_caption=False)  # fmt: skip
    return dataclasses.replace(setup, features=image_features, fit_data=images,
                               familiarity_method="mahalanobis")  # fmt: skip


def _fine_tuned(weights: str, train: list[CaptionItem], ctx: TrainContext) -> Captioner:
    """The captioner of ``weights`` ("bundled": the plugin's), to train further; words of the
    training texts outside its vocabulary are counted and become <unk>."""
    from vlm_caption.model import CAPTIONER
    from vlm_core.weights import load_model

    trained = load_model("" if weights == "bundled" else weights, CAPTIONER, fresh=True,
                         param="init_weights")  # fmt: skip
    model = cast(Captioner, trained.module)
    unknown = {w for item in train for text in item.texts() for w in tokenize(text)
               if model.vocab.id(w) == model.vocab.unk}  # fmt: skip
    if unknown:
        ctx.logger.warning(
            "fine-tuning %s: %d word(s) of the data are not in its vocabulary and train as "
            "<unk> (e.g. %s)", trained.path, len(unknown), ", ".join(sorted(unknown)[:5]),
        )  # fmt: skip
    ctx.logger.info("fine-tuning %s (sha256 %s)", trained.path, trained.sha256[:12])
    return model
