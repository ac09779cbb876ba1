"""The caption plugin's entry module: task specs only (no torch import here)."""

from __future__ import annotations

from pathlib import Path

from vlm_caption.params import AnswerParams, CaptionTrainParams, DescribeParams, SearchParams
from vlm_caption.shifts import EVAL_SEED, SHIFTS
from vlm_core import hookimpl
from vlm_core.kinds import Capability, Kind
from vlm_core.tasks import (
    EvalShifts,
    ImageLimits,
    Sample,
    TaskSpec,
    TinySettings,
    WeightsRef,
    package_file,
)

#: The photos the tasks read: the captioner squashes the whole image into its square (open_clip
#: models crop the centre square), so a strip more elongated than 8:1 would be unrecognisable
#: (or mostly cut away), and an image under 16 px has nothing to describe.
IMAGE_LIMITS = ImageLimits(min_side=16, max_aspect=8)

#: photos per call of `caption.describe` and `caption.answer` when `vlm run` does not say
BATCH_SIZE = 16


def _weights() -> tuple[WeightsRef, ...]:
    path = package_file("vlm_caption", "weights", "captioner", "model.safetensors")
    return (WeightsRef(name="captioner", filename=str(path)),)


def _sample(name: str) -> Path:
    return package_file("vlm_caption", "samples", name)


def _describe() -> TaskSpec:
    return TaskSpec(
        id="caption.describe",
        title="Describe a product photo",
        description=(
            "Writes a caption of each image (beam search of the captioner: an image tower with "
            "a Transformer decoder that cross-attends to it) and tags it with the most likely "
            "labels. The bundled captioner knows the six products of the generated catalogue "
            "(mug, bottle, box, bowl, vase, teapot), eight colours and four defects; anything "
            "else it calls an unknown object, and a photo unlike its training photos is flagged "
            "and its caption marked as a guess. Give `clip_model`/`clip_weights` to tag with an "
            "open_clip model instead. Trains on image-caption pairs and image-question-answer "
            "triples with `vlm train caption.describe`."
        ),
        domain="customer service",
        run="vlm_caption.describe:run",
        train="vlm_caption.train:build",
        params=DescribeParams,
        train_params=CaptionTrainParams,
        inputs=(Kind.IMAGE,),
        image_limits=IMAGE_LIMITS,
        outputs=(Kind.CAPTION,),
        weights=_weights(),
        samples=(
            Sample("cracked teapot", (_sample("teapot-crack.png"),)),
            Sample("mug without its handle", (_sample("mug-missing.png"),)),
        ),
        memory_mb=200,
        # photos a call: the image tower, the caption's beam search and the tags' scoring each
        # run once per batch (README, "Speed")
        batch_size=BATCH_SIZE,
        bench="vlm_caption.pipeline_bench:case",
        # which pixels make the captioner say its caption, or one word of it (docs/explain.md)
        explain="vlm_caption.explain_target:describe_target",
        explainers=("gradcam", "integrated_gradients", "occlusion", "kernel_shap", "lime"),
        capabilities=frozenset({Capability.RUN, Capability.TRAIN, Capability.EVAL}),
        # `vlm export caption.describe`: the captioner's image encoder, pixels -> memory tokens
        # (README, "Deploy"); the decoder stays in torch, so runs refuse the export
        deploy="vlm_caption.deploy:spec",
        # the trainer settings of the bundled captioner (weights/captioner/TRAINING.md)
        train_defaults={"max_steps": 6000, "batch_size": 64, "lr": 2e-3, "val_every": 2000},
        # `vlm eval caption.describe --shift NAME`: held-out photos under exposure, blur and JPEG
        # shifts (README, "Robustness under shift"), every one measured
        shifts=EvalShifts(
            write="vlm_caption.shift_data:write_eval_set", names=SHIFTS, seed=EVAL_SEED
        ),
        # greedy decoding; and a one-block captioner trained 2 steps on 4 photos of 32 px, for
        # the conformance check
        tiny=TinySettings(
            params={"beam": 1, "max_words": 8},
            train_data="vlm_caption.products:write_dataset",
            train_data_args={"n": 4, "size": 32, "seed": 5},
            train_params={"image_size": 32, "width": 32, "depth": 1, "val_fraction": 0.25},
            train_config={"max_steps": 2, "batch_size": 4, "val_every": 2},
        ),
    )


def _answer() -> TaskSpec:
    return TaskSpec(
        id="caption.answer",
        title="Answer a customer's photo and message",
        description=(
            "Reads the customer's photo and message, recognises the product, its colour and "
            "the problem (crack, stain, dent, missing part, wrong item), looks the problem up "
            "in the support knowledge base (a YAML file the operator edits: problem, policy, "
            "reply template) and writes a reply that says what it saw. When it is not sure of "
            "the product or the problem, or the photo does not show what the message says, it "
            "asks a clarifying question instead of guessing; a photo unlike its training photos "
            "gets a request for a photo of the product."
        ),
        domain="customer service",
        run="vlm_caption.answer:run",
        params=AnswerParams,
        inputs=(Kind.IMAGE,),
        image_limits=IMAGE_LIMITS,
        outputs=(Kind.REPLY, Kind.CAPTION),
        weights=_weights(),
        batch_size=BATCH_SIZE,
        samples=(
            Sample(
                "cracked teapot",
                (_sample("teapot-crack.png"),),
                params={"message": "Hi, my teapot arrived today and it is cracked."},
            ),
            Sample(
                "wrong item",
                (_sample("mug-missing.png"),),
                params={"message": "I ordered a bottle, this is not what I ordered"},
            ),
        ),
        memory_mb=200,
    )


def _search() -> TaskSpec:
    return TaskSpec(
        id="caption.search",
        title="Search the catalogue",
        description=(
            "Finds the catalogue images (a folder, indexed on first use and re-indexed when "
            "its files change) that best match a text, or that look most like an image. "
            "With the bundled captioner a text ranks images by how likely the captioner is to "
            "say it of each image, and images compare by the captioner's pooled image "
            "features; with `clip_model`/`clip_weights`, by open_clip embeddings."
        ),
        domain="customer service",
        run="vlm_caption.search:run",
        params=SearchParams,
        inputs=(),
        outputs=(Kind.IMAGE_SET,),
        weights=_weights(),
        samples=(
            Sample(
                "red items in the sample catalogue",
                params={
                    "folder": str(package_file("vlm_caption", "samples")),
                    "query": "a red mug",
                },
            ),
        ),
        memory_mb=300,
    )


@hookimpl
def register_tasks(register):  # type: ignore[no-untyped-def]
    register(_describe())
    register(_answer())
    register(_search())
