"""Exported networks as torch modules: an ONNX file run by onnxruntime, a ``.pt2`` program by
``torch.export``. A task's run calls them where it calls its torch network: tensors in,
tensors out (a tuple when the graph has several outputs), on the inputs' device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlm_core.deploy.formats import format_of


def _onnx_problem(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


class OnnxProgram(nn.Module):
    """An ONNX file run by an onnxruntime session (the CUDA execution provider on a CUDA
    device when onnxruntime has it, else the CPU one)."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        super().__init__()
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in (
            ort.get_available_providers()
        ):
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def forward(self, *tensors: torch.Tensor) -> Any:
        if len(tensors) != len(self.input_names):
            raise TypeError(
                f"{self.path.name} takes {len(self.input_names)} input(s) "
                f"({', '.join(self.input_names)}), got {len(tensors)}"
            )
        device = tensors[0].device if tensors else torch.device("cpu")
        feeds = {
            name: t.detach().cpu().contiguous().numpy()
            for name, t in zip(self.input_names, tensors, strict=True)
        }
        outs = [torch.from_numpy(o).to(device) for o in self.session.run(None, feeds)]
        return outs[0] if len(outs) == 1 else tuple(outs)


class Pt2Program(nn.Module):
    """A ``torch.export`` program saved as ``.pt2``, loaded with ``torch.export.load``."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        super().__init__()
        self.path = Path(path)
        self.program = torch.export.load(str(path))
        self.device = torch.device(device)
        graph = self.program.module()
        if self.device.type != "cpu":
            graph = graph.to(self.device)
        # kept out of the module tree: an exported program's module refuses train()/eval()
        self._graph = (graph,)

    def forward(self, *tensors: torch.Tensor) -> Any:
        with torch.no_grad():
            out = self._graph[0](*(t.to(self.device) for t in tensors))
        if isinstance(out, list):
            out = tuple(out)
        return out


def load_program(path: Path, device: str = "cpu") -> nn.Module:
    """The exported network in ``path`` (by its suffix) as a module in eval mode.

    Raises:
        ValueError: the file is not a readable program of its format (one line: why).
    """
    fmt = format_of(path)
    try:
        program: nn.Module = (
            OnnxProgram(path, device) if fmt == "onnx" else Pt2Program(path, device)
        )
    except ImportError:
        raise
    except Exception as exc:  # onnxruntime and torch.export raise their own types
        kind = "an ONNX model" if fmt == "onnx" else "a torch.export program"
        raise ValueError(f"{Path(path).name} is not {kind} ({_onnx_problem(exc)})") from None
    return program.eval()
