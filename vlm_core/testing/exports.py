"""Bad exported weights for a plugin's tests: an export folder as `vlm export` writes it whose
``model.onnx`` is not a graph, and the check that `vlm run` refuses it, and its damaged
variants, on one line with exit code 2 (docs/deploy.md, "Running an exported file").
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

#: bytes that are no ONNX graph (a protobuf field tag, then text)
NOT_A_GRAPH = b"\x08\x07not an onnx graph" * 40


def corrupt_onnx_export(folder: Path, task: str, source: Path, network: str) -> Path:
    """``folder/model.onnx`` holding :data:`NOT_A_GRAPH`, with the ``model.json`` `vlm export`
    would write beside it: ``task``, the card of the torch weights' sidecar ``source`` and the
    file's sha256 (so what is refused is the file, not a checksum). Returns the ONNX file."""
    from vlm_core.weights import sha256_of

    folder.mkdir(parents=True, exist_ok=True)
    onnx_file = folder / "model.onnx"
    onnx_file.write_bytes(NOT_A_GRAPH)
    sidecar = {
        "task": task,
        "plugin": task.split(".")[0],
        "card": json.loads(Path(source).read_text())["card"],
        "files": {onnx_file.name: sha256_of(onnx_file)},
        "export": {"format": "onnx", "network": network, "runs": True},
    }
    (folder / "model.json").write_text(json.dumps(sidecar))
    return onnx_file


Cli = Callable[..., subprocess.CompletedProcess[str]]


def check_corrupt_exports_refused(run: Cli, argv: Sequence[str], onnx_file: Path) -> None:
    """`vlm ARGV -p weights=...` (``run``: the ``vlm_cli`` fixture) exits 2 on one line for
    the file of :func:`corrupt_onnx_export` ("not an ONNX model"), for its folder once the
    file is cut short ("sha256 mismatch") and for the file without its ``model.json``."""
    cases = (
        (lambda: None, onnx_file, "model.onnx is not an ONNX model"),
        (lambda: onnx_file.write_bytes(NOT_A_GRAPH[:100]), onnx_file.parent, "sha256 mismatch"),
        (lambda: (onnx_file.parent / "model.json").unlink(), onnx_file, "no model.json beside it"),
    )
    for spoil, weights, message in cases:
        spoil()
        done = run(*argv, "-p", f"weights={weights}")
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr
