"""The art plugin's entry module: task specs only (no torch import here)."""

from __future__ import annotations

from vlm_art.params import (
    BUILTIN_STYLES,
    TRANSFER_IMAGE_LIMITS,
    GenerateParams,
    GenerateTrainParams,
    TransferParams,
    TransferTrainParams,
    network_file,
)
from vlm_art.shifts import (
    ACCEPTANCE_SEED,
    GENERATE_COUNT,
    GENERATE_SHIFTS,
    TRANSFER_COUNT,
    TRANSFER_SHIFTS,
)
from vlm_core import hookimpl
from vlm_core.kinds import Capability, Kind
from vlm_core.tasks import EvalShifts, Sample, TaskSpec, TinySettings, WeightsRef, package_file


def _generate() -> TaskSpec:
    return TaskSpec(
        id="art.generate",
        title="Paintings in procedural styles",
        description=(
            "Generates a series of paintings in named styles (geometric grids, concentric "
            "circles, stripe fields, pointillist dots, brush strokes) with a class-conditional "
            "GAN, reproducible by seed, with latent truncation; or an interpolation between two "
            "seeds or two styles as frames, one strip and a looping animation. Trains on a "
            "folder of images (one sub-folder per style, or unlabelled) with "
            "`vlm train art.generate`."
        ),
        domain="art",
        run="vlm_art.generate:run",
        train="vlm_art.train:build",
        params=GenerateParams,
        train_params=GenerateTrainParams,
        inputs=(),
        outputs=(Kind.IMAGE_SET, Kind.IMAGE, Kind.VIDEO),
        weights=(
            WeightsRef(
                name="cgan32",
                filename=str(package_file("vlm_art", "weights", "cgan32", "model.safetensors")),
            ),
        ),
        samples=(
            Sample("five styles", params={"count": 10, "seed": 1}, description="Two of each."),
            Sample(
                "circles to stripes",
                params={"mode": "interpolate", "between": "styles", "styles": "circles,stripes"},
                description="An interpolation between two styles at one seed.",
            ),
        ),
        memory_mb=200,
        capabilities=frozenset({Capability.RUN, Capability.TRAIN, Capability.EVAL}),
        # `vlm export art.generate`: the sampling generator (z, y) -> images (README, "Deploy")
        deploy="vlm_art.deploy:spec",
        # `vlm eval art.generate --shift none|truncation-1|truncation-05`: real images of the
        # styles from held-out seeds against generated ones drawn as `vlm run` draws them, with
        # the truncation a user may set (README, "Robustness under shift")
        shifts=EvalShifts(
            write="vlm_art.shift_data:write_generate_set",
            names=GENERATE_SHIFTS,
            seed=ACCEPTANCE_SEED,
            count=GENERATE_COUNT,
        ),
        # the trainer settings of the default weights (weights/cgan32/TRAINING.md)
        train_defaults={
            "max_steps": 10_000,
            "batch_size": 32,
            "lr": 2e-4,
            "schedule": "constant",
            "clip_grad_norm": None,
            "val_every": 1000,
        },
        # a few frames, and a 16 px DCGAN trained 2 steps on 8 images, for the conformance check
        tiny=TinySettings(
            params={"count": 2, "frames": 3, "upscale": 1},
            train_data="vlm_art.styles:write_dataset",
            train_data_args={
                "per_style": 4,
                "size": 16,
                "seed": 3,
                "styles": ("circles", "stripes"),
            },
            train_params={
                "family": "dcgan",
                "image_size": 16,
                "width": 8,
                "latent_dim": 8,
                "classifier_steps": 2,
                "val_fraction": 0.25,
            },
            train_config={"max_steps": 2, "batch_size": 4, "val_every": 2},
        ),
    )


def _style_transfer() -> TaskSpec:
    content = package_file("vlm_art", "samples", "content.png")
    return TaskSpec(
        id="art.style_transfer",
        title="Style transfer",
        description=(
            "Restyles each content image after a style (the `style` parameter). A built-in "
            f"style ({', '.join(BUILTIN_STYLES)}) runs through its trained feed-forward network "
            "(Johnson et al.): well under a second per image on a CPU. A style image (any "
            "painting, a path) is applied by optimising the pixels so that a backbone's feature "
            "maps keep the content and their Gram matrices match the style's (Gatys et al.): "
            "about a minute per image at 256 px on a 2-core CPU, with progress per step. Trains a "
            "network for any style image with `vlm train art.style_transfer`."
        ),
        domain="art",
        run="vlm_art.transfer:run",
        train="vlm_art.train_transfer:build",
        params=TransferParams,
        train_params=TransferTrainParams,
        inputs=(Kind.IMAGE,),
        image_limits=TRANSFER_IMAGE_LIMITS,
        outputs=(Kind.IMAGE,),
        weights=tuple(
            WeightsRef(name=f"style-{style}", filename=str(network_file(style)))
            for style in BUILTIN_STYLES
        ),
        samples=(
            Sample(
                "astronaut as a painting",
                (content,),
                params={"size": 128},
                description="scikit-image's astronaut (crop) through the 'painting' network.",
            ),
            Sample(
                "astronaut in circles, optimised",
                (content,),
                params={"style": "circles", "method": "optimize", "size": 64, "steps": 5},
                description="The optimisation method, 5 steps at 64 px (the default is 100).",
            ),
        ),
        memory_mb=800,
        capabilities=frozenset({Capability.RUN, Capability.TRAIN, Capability.EVAL}),
        bench="vlm_art.pipeline_bench:case",
        # `vlm eval art.style_transfer --shift none|dark|noise|blur|lowres`: crops of the
        # held-out photographs as cameras shift them (README, "Robustness under shift")
        shifts=EvalShifts(
            write="vlm_art.shift_data:write_transfer_set",
            names=TRANSFER_SHIFTS,
            seed=ACCEPTANCE_SEED,
            count=TRANSFER_COUNT,
        ),
        # the trainer settings of the bundled style networks (README, "Style networks")
        train_defaults={
            "max_steps": 400,
            "batch_size": 4,
            "lr": 2e-3,
            "weight_decay": 0.0,
            "schedule": "cosine",
            "val_every": 100,
        },
        # 32 px and 2 optimisation steps: edge inputs check handling, not quality; a 4-channel
        # network trained 2 steps on 32 px crops of the sample photograph
        tiny=TinySettings(
            params={"size": 32, "steps": 2},
            train_data="vlm_art.content:write_tiny",
            train_data_args={"count": 4, "size": 40},
            train_params={"width": 4, "blocks": 1, "crop": 32, "val_size": 32, "style_size": 32},
            train_config={"max_steps": 2, "batch_size": 2, "val_every": 2},
        ),
    )


@hookimpl
def register_tasks(register):  # type: ignore[no-untyped-def]
    register(_generate())
    register(_style_transfer())
