"""Write results to an output folder: per-item files, run-level files and JSON summaries.

What is written for an output is looked up in the table of output kinds
(:class:`~vlm_core.outputs.kind.OutputKinds`): its summary goes into ``result.json`` and each of
its exporters writes its files through an :class:`ItemExport`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from vlm_core.export.images import write_image
from vlm_core.fileio import atomic_write_bytes, atomic_write_text
from vlm_core.outdir import safe_name
from vlm_core.outputs.builtin import builtin_output_kinds
from vlm_core.outputs.kind import OutputKinds
from vlm_core.outputs.summaries import box_items, tracks_summary
from vlm_core.types import Output, Result, Video

__all__ = [
    "ExportOptions",
    "ItemExport",
    "RunExport",
    "box_items",
    "dumps",
    "export_results",
    "output_summary",
    "result_summary",
    "tracks_summary",
    "video_under",
]


@dataclass(frozen=True)
class ExportOptions:
    """How images are written."""

    image_format: Literal["png", "jpeg"] = "png"
    jpeg_quality: int = 95  # 1..100, JPEG only
    overlay_opacity: float = 0.5  # 0..1, weight of the label colour in overlays
    #: write the previews: the exporters a kind registers under the format name
    #: :data:`PREVIEW` (`vlm run --no-preview` leaves them out)
    previews: bool = True
    #: the format of the previews' images: JPEG (a 640x360 overlay encodes in about 1 ms, a
    #: PNG in 20 ms at zlib level 1 and 90 ms at PIL's default 6: a preview is for looking at,
    #: the data are in the kind's other files), or PNG when asked for (`--preview-format png`)
    preview_format: Literal["png", "jpeg"] = "jpeg"


#: The format name of a kind's preview exporter (an overlay drawn for people to look at; the
#: data is in the kind's other files).
PREVIEW = "overlay"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, indent=2, ensure_ascii=False)


def output_summary(output: Output, kinds: OutputKinds | None = None) -> dict[str, Any]:
    """A JSON-friendly summary of one output (full data for small outputs), from its kind in
    ``kinds`` (default: the core's kinds)."""
    return (kinds if kinds is not None else builtin_output_kinds()).summarise(output)


def result_summary(result: Result, kinds: OutputKinds | None = None) -> dict[str, Any]:
    """What ``result.json`` holds: task, input, output summaries, provenance, the warnings
    the input came with (what its reader had to assume, e.g. a volume's slice spacing) and
    whether the input looks unlike the training data (``ood``, :mod:`vlm_core.familiarity`).
    ``kinds``: the output kinds to summarise with (default: the core's)."""
    kinds = kinds if kinds is not None else builtin_output_kinds()
    return {
        "task": result.task,
        "input": result.provenance.inputs[0].path if result.provenance.inputs else None,
        "outputs": {name: kinds.summarise(out) for name, out in result.outputs.items()},
        "warnings": list(getattr(result.input, "warnings", ())),
        "ood": dict(result.ood) if result.ood is not None else None,
        "provenance": dataclasses.asdict(result.provenance),
    }


def video_under(source: object, size: tuple[int, int]) -> Video | None:
    """``source`` if it is a displayable video (1, 3 or 4 channels) of (height, width) ``size``
    with at least one frame: the video tracked boxes can be drawn on."""
    if not isinstance(source, Video) or not len(source.frames):
        return None
    _, height, width, channels = source.frames.shape
    return source if (height, width) == tuple(size) and channels in (1, 3, 4) else None


class RunFile(Protocol):
    """A file of the whole run (under ``OUT/``), filled item by item and written at the end."""

    def finish(self, run: RunExport) -> None: ...


RunFileT = TypeVar("RunFileT", bound=RunFile)


class RunExport:
    """One run's export: its folder, options and kinds, the files written so far and the
    run-level files still open."""

    def __init__(self, out_dir: Path, options: ExportOptions, kinds: OutputKinds) -> None:
        self.out = out_dir
        self.options = options
        self.kinds = kinds
        self.run_files: dict[str, RunFile] = {}
        self.used: set[str] = set()
        self.files: list[Path] = []

    def item_dir(self, result: Result) -> Path:
        """A folder of its own for each result, named after its input (made safe: no control
        characters, separators or dot names), ``-2``, ``-3``, … for repeated names."""
        base = safe_name(getattr(result.input, "name", "") or "result")
        name, n = base, 1
        while name in self.used:
            n += 1
            name = f"{base}-{n}"
        self.used.add(name)
        return self.out / name

    def image(self, pixels: np.ndarray, path: Path, *, preview: bool = False) -> None:
        """``path`` + ``.png``, or ``.jpg`` when the options ask for JPEG (``image_format``;
        ``preview_format`` for a preview) and the pixels are 8-bit (JPEG cannot hold 16-bit
        data)."""
        fmt = self.options.preview_format if preview else self.options.image_format
        if fmt == "jpeg" and pixels.dtype != np.uint8:
            fmt = "png"
        suffix = ".jpg" if fmt == "jpeg" else ".png"
        self.files.append(
            write_image(pixels, path.with_suffix(suffix), fmt, self.options.jpeg_quality)
        )

    def write_bytes(self, data: bytes, path: Path) -> None:
        atomic_write_bytes(path, data)
        self.files.append(path)

    def write_text(self, text: str, path: Path) -> None:
        atomic_write_text(path, text)
        self.files.append(path)

    def write_output(self, name: str, output: Output, result: Result, folder: Path) -> None:
        """Run every exporter of the output's kind (a ``TypeError`` for an output of no
        kind)."""
        for fmt, export in self.kinds.of(output).resolve_exporters():
            if fmt != PREVIEW or self.options.previews:
                export(ItemExport(self, folder, result, preview=fmt == PREVIEW), name, output)

    def finish(self, run: dict[str, Any]) -> None:
        for run_file in self.run_files.values():
            run_file.finish(self)
        self.write_text(dumps(run), self.out / "run.json")


@dataclass(frozen=True)
class ItemExport:
    """What an exporter gets for one result: where to write and the helpers that write.

    Every file goes through :meth:`image`, :meth:`write_bytes` or :meth:`write_text` (or is
    recorded with :meth:`add`), so it is written atomically and listed in ``result.json``.
    """

    run: RunExport
    folder: Path  # OUT/<item>/, the result's own folder
    result: Result
    preview: bool = False  # a preview exporter's (its images in the preview format)

    @property
    def source(self) -> Any:
        """The input the result was made from (None for a task without inputs)."""
        return self.result.input

    @property
    def options(self) -> ExportOptions:
        return self.run.options

    def image(self, pixels: np.ndarray, path: Path) -> None:
        """Write ``pixels`` as ``path.png`` (``.jpg`` with ``--image-format jpeg``; for a
        preview exporter, ``.jpg`` unless ``--preview-format png``)."""
        self.run.image(pixels, path, preview=self.preview)

    def write_bytes(self, data: bytes, path: Path) -> None:
        self.run.write_bytes(data, path)

    def write_text(self, text: str, path: Path) -> None:
        self.run.write_text(text, path)

    def add(self, path: Path) -> None:
        """List a file the exporter wrote itself (atomically) among the run's files."""
        self.run.files.append(path)

    def summarise(self, output: Output) -> dict[str, Any]:
        """The output's JSON summary, as in ``result.json``."""
        return self.run.kinds.summarise(output)

    def run_file(self, key: str, factory: Callable[[], RunFileT]) -> RunFileT:
        """The run-level file under ``key``, made by ``factory`` on first use; its
        ``finish(run)`` writes it when every result has been exported."""
        found = self.run.run_files.get(key)
        if found is None:
            found = self.run.run_files[key] = factory()
        return found  # type: ignore[return-value]  # one factory type per key


def export_results(
    results: Iterable[Result],
    out_dir: Path,
    options: ExportOptions | None = None,
    kinds: OutputKinds | None = None,
) -> list[Path]:
    """Write every result's outputs and its ``result.json``, then the run-level files.

    ``kinds``: the output kinds to look outputs up in (the plugin registry's
    ``output_kinds``; default: the core's kinds only). Returns the written paths. Each file is
    written atomically (temporary file, then rename).
    """
    kinds = kinds if kinds is not None else builtin_output_kinds()
    export = RunExport(out_dir, options or ExportOptions(), kinds)
    items = []
    head: Result | None = None  # the first result, for the run-level record
    for result in results:  # any iterable: results are written as they come
        head = head or result
        folder = export.item_dir(result)
        first = len(export.files)
        for name, output in result.outputs.items():
            export.write_output(safe_name(name, "output"), output, result, folder)
        summary = result_summary(result, kinds)
        summary["files"] = [str(p.relative_to(out_dir)) for p in export.files[first:]]
        atomic_write_text(folder / "result.json", dumps(summary))
        export.files.append(folder / "result.json")
        items.append({"item": folder.name, "input": summary["input"], "files": summary["files"]})
    run: dict[str, Any] = {"task": head.task if head else None, "items": items}
    if head is not None:
        prov = head.provenance
        run.update(run_id=prov.run_id, params=dict(prov.params), core_version=prov.core_version)
    export.finish(run)
    return export.files
