"""What a task declares so that `vlm export` and `vlm compress` can take its network out of
Python: :class:`DeploySpec`, returned by the function a task names in ``TaskSpec.deploy``.

The core does the rest for every task alike: export (ONNX through ``torch.onnx.export``,
``.pt2`` through ``torch.export``), the parity check on held-out inputs, the sidecar, running
the exported file from `vlm run`, int8 quantisation, and the compression reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from vlm_core.tasks import TaskParams
    from vlm_core.weights import LoadedModel

#: what a parity metric calls: the network (torch or exported) on its inputs, returning what
#: the torch network returns (a tensor or a tuple of tensors)
Network = Callable[..., Any]


@dataclass(frozen=True)
class Axis:
    """A dynamic axis of an exported input: its name (inputs sharing an axis use one name, e.g.
    ``batch``), its bounds and the multiple its size must be (a detector's padded sides)."""

    name: str
    min: int = 1
    max: int = 4096
    multiple: int = 1


@dataclass(frozen=True)
class TensorSpec:
    """One input of the exported graph: its name and its dynamic axes by index (the other axes
    keep the example input's size)."""

    name: str
    dynamic: Mapping[int, Axis] = field(default_factory=dict)


@dataclass
class ParityCases:
    """Held-out data to compare the torch network with its export (and a compressed network
    with the original).

    ``inputs`` are the network's own inputs (tuples of tensors, already preprocessed), compared
    output by output; ``metric(network)`` is the task metric (e.g. Dice, mAP@.5, accuracy) of
    the task's own inference with ``network`` in place of its torch module, on held-out
    generated data with ground truth; ``higher_is_better`` says which way it goes.
    """

    inputs: Sequence[tuple[torch.Tensor, ...]]
    metric: Callable[[Network], float] | None = None
    metric_name: str = ""
    higher_is_better: bool = True
    #: how many examples the metric is computed on (reported beside it)
    metric_count: int = 0


@dataclass(frozen=True)
class DeploySpec:
    """How a task's network is exported, checked and compressed.

    Functions take the loaded model (:class:`~vlm_core.weights.LoadedModel`, loaded on the CPU
    by ``load``) so that they can read its card (input size, classes).
    """

    #: the trained network the request names: ``load(weights, params)`` (empty ``weights``: the
    #: bundled ones), through :func:`vlm_core.weights.load_model`
    load: Callable[[str, TaskParams], LoadedModel]
    #: the inputs of the exported graph, in the order the network takes them; a function of the
    #: loaded model where they depend on it (a 2D or a 3D UNet's windows)
    inputs: tuple[TensorSpec, ...] | Callable[[LoadedModel], tuple[TensorSpec, ...]]
    #: the names of its outputs, in the order the network returns them
    outputs: tuple[str, ...]
    #: an example input (a tuple of CPU tensors) of the sizes the run uses
    example: Callable[[LoadedModel], tuple[torch.Tensor, ...]]
    #: held-out data: ``cases(loaded, count, seed)``; the core calls it with the held-out seed
    #: for parity and metrics, and with another seed for int8 calibration
    cases: Callable[[LoadedModel, int, int], ParityCases]
    #: the module that is exported (None: ``loaded.module``); must return a tensor or a tuple
    #: of tensors
    network: Callable[[LoadedModel], nn.Module] | None = None
    #: whether `vlm run TASK -p weights=EXPORTED` runs the exported file (the export is the
    #: whole network the run calls, and the plugin's run takes it)
    runs: bool = True
    #: what the exported graph leaves to the caller (e.g. "decoding and NMS run in Python"),
    #: written in the sidecar and printed
    note: str = ""
    #: structured channel pruning: ``prune(loaded, amount, out, seed) -> weights file`` (a
    #: `vlm train`-style folder's model.safetensors with its model.json, fine-tuned)
    prune: Callable[[LoadedModel, float, Path, int], Path] | None = None
    #: distillation into a smaller student: ``distill(loaded, out, seed) -> weights file``
    distill: Callable[[LoadedModel, Path, int], Path] | None = None

    def input_specs(self, loaded: LoadedModel) -> tuple[TensorSpec, ...]:
        """The exported graph's inputs for ``loaded``."""
        return self.inputs(loaded) if callable(self.inputs) else self.inputs

    def module(self, loaded: LoadedModel) -> nn.Module:
        """The module that is exported, in eval mode on the CPU."""
        net = self.network(loaded) if self.network is not None else loaded.module
        return net.eval().cpu()


def dynamic_shapes(inputs: Sequence[TensorSpec]) -> tuple[dict[int, Any], ...]:
    """``torch.export``'s ``dynamic_shapes`` for ``inputs``: one ``Dim`` per axis name (inputs
    sharing a name share it), a multiple as ``multiple * Dim``."""
    from torch.export import Dim

    dims: dict[str, Any] = {}

    def dim(axis: Axis) -> Any:
        if axis.name not in dims:
            if axis.multiple > 1:
                low = max(1, math.ceil(axis.min / axis.multiple))
                dims[axis.name] = axis.multiple * Dim(
                    f"{axis.name}_over_{axis.multiple}", min=low, max=axis.max // axis.multiple
                )
            else:
                dims[axis.name] = Dim(axis.name, min=axis.min, max=axis.max)
        return dims[axis.name]

    return tuple({index: dim(axis) for index, axis in spec.dynamic.items()} for spec in inputs)
