"""Structured channel pruning of `medical.segment`'s UNet, fine-tuned through the core trainer
(what `vlm compress medical.segment --method prune` calls).

Why torch-pruning and not ``torch.nn.utils.prune``: the latter only masks weights (a zero mask
multiplied in at every forward pass, plus the original tensor kept beside it), so the file
grows and nothing runs faster. torch-pruning traces the network into a dependency graph and
removes whole channels from every tensor that shares them (a convolution's outputs, the next
one's inputs, both halves of a skip connection's concatenation, a residual sum's two
branches), so the network really has fewer, smaller tensors.

Pruning is uniform: every coupled group of channels loses the same ``amount`` (those with the
smallest L2 norm of their weights across the group), and the two output layers keep their
classes. A MONAI UNet pruned this way is again a MONAI UNet, with each level's channels cut by
``amount`` (16-32-64-128 at 0.5: 8-16-32-64), so its card records only the new ``channels``
and the plugin's builder rebuilds it; this is checked by loading the pruned tensors strictly
into the network built from the card.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlm_core.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

    from vlm_core.weights import LoadedModel

#: the generator seed of the fine-tuning images: apart from the held-out parity and
#: calibration seeds (7_100_000, 7_200_000) and the plugin's training, validation and test
#: seeds (0-6100, see the weights' TRAINING.md)
FINETUNE_SEED = 7_300_000
#: fine-tuning by dimensions: generated images (128²) or volumes (64³), optimizer steps, batch
#: size, training patch side, peak learning rate and validation interval. The 2D setting takes
#: 6-8 minutes on two shared CPU cores; 300 steps on 96² patches at 1e-3 left the held-out Dice
#: 1.2 points under the unpruned network's, 600 steps on 64² patches at 2e-3 0.6 (README).
FINETUNE: dict[int, dict[str, Any]] = {
    2: {"images": 200, "steps": 600, "batch_size": 8, "patch": 64, "lr": 2e-3, "val_every": 200},
    3: {"images": 40, "steps": 300, "batch_size": 2, "patch": 48, "lr": 2e-3, "val_every": 100},
}
#: where the pruned, not yet fine-tuned weights go inside the output folder
PRUNED = "pruned"


def unet_channels(network: nn.Module) -> list[int]:
    """The channels of each level of a MONAI ``UNet`` as built: its down blocks' outputs,
    then the bottom block's (``Sequential(down, SkipConnection(inner), up)`` nested)."""
    from torch import nn

    def width(block: nn.Module) -> int:
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
        return int(convs[-1].out_channels)

    found: list[int] = []
    block: Any = network.model
    while True:
        found.append(width(block[0]))
        inner = block[1].submodule
        if isinstance(inner, nn.Sequential) and len(inner) == 3:
            block = inner
            continue
        found.append(width(inner))
        return found


def _prelu_handler(channels: Mapping[Any, int]) -> Any:
    """torch-pruning's PReLU handler, told the channel count each shared-slope PReLU sees.

    torch-pruning infers the channels of a concatenation's inputs by walking back through the
    graph; a PReLU with one slope reports none, and behind MONAI's identity residuals the walk
    then ends on the slope's own reshape (``sum(None)`` in ``update_concat_index_mapping``, as
    in VainF/Torch-Pruning#387). One forward pass records what each PReLU sees.
    """
    from torch_pruning.pruner.function import PReLUPruner

    class Handler(PReLUPruner):  # type: ignore[misc]
        def get_out_channels(self, layer: Any) -> int | None:
            return layer.num_parameters if layer.num_parameters > 1 else channels.get(layer)

        def get_in_channels(self, layer: Any) -> int | None:
            return self.get_out_channels(layer)

    return Handler()


def prune_unet(network: nn.Module, arch: Mapping[str, Any], amount: float) -> dict[str, Any]:
    """Remove ``amount`` of the channels of every layer of the MONAI UNet ``network`` (in
    place) with torch-pruning's dependency graph, keeping its input and output channels;
    returns the architecture that rebuilds it (``arch`` with the new ``channels``).

    Raises:
        WeightsError: the pruned tensors do not load strictly into the network built from
            that architecture (a UNet torch-pruning did not cut uniformly).
    """
    import torch
    import torch_pruning as tp
    from torch import nn

    from vlm_medical.networks import build_network

    dims = int(arch.get("spatial_dims", 3))
    levels = len(arch["channels"])
    example = torch.zeros(1, int(arch.get("in_channels", 1)), *[2 ** (levels + 1)] * dims)
    network.eval().requires_grad_(True)
    seen: dict[Any, int] = {}
    hooks = [
        m.register_forward_hook(lambda m, _i, out: seen.__setitem__(m, int(out.shape[1])))
        for m in network.modules()
        if isinstance(m, nn.PReLU)
    ]
    try:
        with torch.no_grad():
            network(example)
    finally:
        for hook in hooks:
            hook.remove()
    convs = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    out_channels = int(arch["out_channels"])
    # the top up-block's transposed convolution and last convolution give the classes
    outputs = [
        m
        for m in network.model[-1].modules()
        if isinstance(m, convs) and m.out_channels == out_channels
    ]
    pruner = tp.pruner.MetaPruner(
        network,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=amount,
        global_pruning=False,
        ignored_layers=outputs,
        customized_pruners={nn.PReLU: _prelu_handler(seen)},
    )
    pruner.step()
    pruned = {**arch, "channels": unet_channels(network)}
    from vlm_core.weights import load_into

    # the pruned tensors must fit the UNet the card describes (strict), or the card lies
    load_into(
        build_network(dict(pruned)),
        network.state_dict(),
        plugin="medical",
        source=f"the UNet pruned to channels {pruned['channels']}",
    )
    return pruned


def parameters(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def prune_segmenter(
    loaded: LoadedModel,
    amount: float,
    out: Path,
    seed: int,
    *,
    images: int | None = None,
    steps: int | None = None,
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Prune ``loaded`` (a `medical.segment` UNet, 2D or 3D) by ``amount`` of its channels and
    fine-tune it on generated data through the core trainer; returns the best checkpoint's
    ``model.safetensors`` in ``out`` (a `vlm train` folder: ``model.json`` beside it).

    The pruned weights before fine-tuning are kept in ``out/pruned`` (what the fine-tune
    starts from, ``-p init=``). The fine-tuning data (``images`` generated images or volumes,
    seed :data:`FINETUNE_SEED`) live in a temporary folder removed afterwards; ``seed`` is the
    held-out seed the caller measures on and never draws training data. A folder that
    already holds the fine-tune's checkpoints is resumed. ``images``, ``steps`` and
    ``config`` (trainer settings) override :data:`FINETUNE`.

    Raises:
        UsageError: ``loaded`` is not a UNet (SwinUNETR is not pruned), or is an export.
    """
    from vlm_core.training import checkpoint as ckpt
    from vlm_medical.generated_training import train_on_generated
    from vlm_medical.synthetic import write_dataset

    arch = dict(loaded.card.get("architecture") or {})
    if loaded.exported or arch.get("name") != "unet":
        raise UsageError(
            f"{loaded.path}: prune takes torch weights of a UNet "
            f"(this is {loaded.exported or arch.get('name')})"
        )
    if seed == FINETUNE_SEED:
        raise UsageError(f"seed {seed} is the fine-tuning data's; measure on another")
    dims = int(arch.get("spatial_dims", 3))
    plan = {**FINETUNE[dims], **({"images": images} if images else {})}
    plan.update({"steps": steps} if steps else {})
    out = Path(out)
    pruned_dir = out / PRUNED
    if ckpt.find_checkpoint(pruned_dir, "best") is None:
        network = copy.deepcopy(loaded.module).cpu().float()
        before = parameters(network)
        pruned = prune_unet(network, arch, amount)
        card = {
            **loaded.card,
            "architecture": pruned,
            "compression": {
                "method": "prune",
                "tool": "torch-pruning (dependency graph, uniform, L2 group magnitude)",
                "amount": amount,
                "channels_before": list(arch["channels"]),
                "channels_after": pruned["channels"],
                "parameters_before": before,
                "parameters_after": parameters(network),
                "source": str(loaded.path),
                "source_sha256": loaded.sha256,
                "finetune": {"data_seed": FINETUNE_SEED, **plan},
            },
        }
        sidecar = {"task": "medical.segment", "plugin": "medical",
                   "params": loaded.params, "card": card}  # fmt: skip
        state = {k: v.detach().contiguous() for k, v in network.state_dict().items()}
        ckpt.write_checkpoint(pruned_dir, 0, state, sidecar, None, best=True, keep_last=1)
    params = {**_known_params(loaded.params), "spatial_dims": dims, "network": "unet",
              "patch": plan["patch"], "init": str(pruned_dir)}  # fmt: skip
    settings = {
        "max_steps": plan["steps"],
        "batch_size": plan["batch_size"],
        "lr": plan["lr"],
        "warmup_steps": min(20, plan["steps"] // 10),
        "val_every": min(plan["val_every"], plan["steps"]),
        "seed": 0,
        "tensorboard": False,
        **dict(config or {}),
    }
    return train_on_generated(
        "medical.segment",
        lambda folder: write_dataset(folder, plan["images"], seed=FINETUNE_SEED, dims=dims),
        f"<write_dataset({plan['images']}, seed={FINETUNE_SEED}, dims={dims})>",
        out,
        params,
        settings,
    )


def _known_params(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """The source weights' training parameters that medical.segment still takes."""
    from vlm_medical.params import SegmentTrainParams

    fields = SegmentTrainParams.model_fields
    return {k: v for k, v in recorded.items() if k in fields and k != "init"}
