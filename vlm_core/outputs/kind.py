"""One registration per kind of task output, and the table the host looks kinds up in.

An :class:`OutputKind` names everything the host does with one kind of output: the class a
task returns, its JSON summary (``result.json``, ``vlm run --json``), its exporters (the files
written under ``--out``), its one-line ``vlm run`` summary, its dashboard renderer and its view
on the History page. The runner, the exporters, the CLI and the dashboard look the kind up in
an :class:`OutputKinds` table instead of testing types one by one, so a new kind is one
registration. The core's own kinds register through the ``register_output_kinds`` hook like a
plugin's (:mod:`vlm_core.outputs.builtin`).

This module is imported when plugins load, so it stays light: the standard library only. Every
callable of a kind may be given as a ``"module:function"`` string (the class as
``"module:Class"``), imported on first use.
"""

from __future__ import annotations

import builtins
import dataclasses
import importlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

#: ``summary(output) -> dict``: the JSON-friendly fields of ``result.json`` (without ``kind``).
SummaryFunction = Callable[[Any], Mapping[str, Any]]
#: ``export(item, name, output)``: write one output's files of one format; ``item`` is the
#: :class:`vlm_core.export.writer.ItemExport` of the result the output belongs to.
ExportFunction = Callable[[Any, str, Any], None]
#: ``line(summary) -> str``: what ``vlm run`` prints after ``name:`` (from the JSON summary).
LineFunction = Callable[[Mapping[str, Any]], str]
#: ``render(name, output, source, key, **context)``: draw the output with Streamlit.
RenderFunction = Callable[..., None]
#: ``history(name, summary)``: draw a past run's output from its JSON summary with Streamlit.
HistoryFunction = Callable[[str, Mapping[str, Any]], None]

_CORE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
_FORMAT = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_IMPORT_PATH = re.compile(r"^[\w.]+:\w+$")
_CALLABLES = ("summary", "cli_line", "render", "history")


def _resolve(target: Any) -> Any:
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


@dataclass(frozen=True, eq=False)
class OutputKind:
    """One kind of task output and everything the host does with it.

    Functions (and ``type``) are callables or ``"module:function"`` strings imported on first
    use, so registering a kind imports nothing heavy. Only ``name`` and ``type`` are required;
    a kind without the others still runs, is summarised, listed and shown (see each field).
    """

    #: the kind's name: the core's are bare ("mask"); a plugin's are ``<plugin>.<kind>``
    name: str
    #: the class a task returns for this kind; its ``kind`` class attribute equals ``name``
    type: type | str
    #: ``summary(output) -> dict`` of JSON values for ``result.json``; None: the output's
    #: scalar fields (str, int, float, bool, None)
    summary: SummaryFunction | str | None = None
    #: file format → ``export(item, name, output)``, run in this order for every output of the
    #: kind when a run has ``--out``; empty: only ``result.json`` describes it
    exporters: Mapping[str, ExportFunction | str] = field(default_factory=dict)
    #: ``line(summary) -> str``, printed by ``vlm run`` as ``name: line``; None: the kind's name
    cli_line: LineFunction | str | None = None
    #: the dashboard renderer, ``render(name, output, source, key, **context)``; None: the
    #: JSON summary is shown
    render: RenderFunction | str | None = None
    #: the History page's view, ``history(name, summary)``; None: the JSON summary
    history: HistoryFunction | str | None = None
    #: one line, for listings and docs
    description: str = ""
    #: set by the host: the plugin that registered the kind ("" for the core's)
    plugin: str = ""

    def resolve_type(self) -> builtins.type:
        cls: builtins.type = _resolve(self.type)
        return cls

    def summarise(self, output: Any) -> dict[str, Any]:
        """``{"kind": name, ...}``: the JSON summary of ``output`` (an instance of the kind)."""
        if self.summary is None:
            fields = dataclasses.fields(output) if dataclasses.is_dataclass(output) else ()
            values = {f.name: getattr(output, f.name) for f in fields}
            scalars = (str, int, float, bool, type(None))
            return {
                "kind": self.name,
                **{k: v for k, v in values.items() if isinstance(v, scalars)},
            }
        func: SummaryFunction = _resolve(self.summary)
        return {"kind": self.name, **func(output)}

    def line(self, summary: Mapping[str, Any]) -> str:
        """What ``vlm run`` prints for one output, after its name."""
        if self.cli_line is None:
            return self.name
        func: LineFunction = _resolve(self.cli_line)
        return func(summary)

    def resolve_exporters(self) -> list[tuple[str, ExportFunction]]:
        return [(fmt, _resolve(func)) for fmt, func in self.exporters.items()]

    def resolve_render(self) -> RenderFunction | None:
        func: RenderFunction | None = _resolve(self.render)
        return func

    def resolve_history(self) -> HistoryFunction | None:
        func: HistoryFunction | None = _resolve(self.history)
        return func


def validate_output_kind(kind: object, plugin: str | None) -> list[str]:
    """Problems with a registered kind; an empty list means valid. ``plugin`` is the name of
    the plugin that registers it (None for the core's own kinds)."""
    if not isinstance(kind, OutputKind):
        return [f"registered {type(kind).__name__}, not an OutputKind"]
    problems: list[str] = []
    name = kind.name if isinstance(kind.name, str) else repr(kind.name)
    if plugin is None:
        if not _CORE_NAME.match(name):
            problems.append(f"output kind '{name}' must be lowercase letters, digits and '_'")
    elif not _PLUGIN_NAME.match(name) or not name.startswith(f"{plugin}."):
        problems.append(f"output kind '{name}' must be named '{plugin}.<kind>' (lowercase)")
    if isinstance(kind.type, str):
        if not _IMPORT_PATH.match(kind.type):
            problems.append(f"output kind '{name}': type must be 'module:Class', got '{kind.type}'")
    elif not isinstance(kind.type, type):
        problems.append(f"output kind '{name}': type is neither a class nor 'module:Class'")
    elif getattr(kind.type, "kind", None) != kind.name:
        found = getattr(kind.type, "kind", None)
        problems.append(
            f"output kind '{name}': {kind.type.__name__}.kind is {found!r}, not '{kind.name}'"
        )
    values = [(attr, getattr(kind, attr)) for attr in _CALLABLES]
    if not isinstance(kind.exporters, Mapping):
        problems.append(f"output kind '{name}': exporters must map a format to a function")
    else:
        for fmt, func in kind.exporters.items():
            if not isinstance(fmt, str) or not _FORMAT.match(fmt):
                problems.append(f"output kind '{name}': exporter format {fmt!r} is not a name")
            values.append((f"exporter '{fmt}'", func))
    for attr, value in values:
        if value is None and not attr.startswith("exporter"):
            continue
        if isinstance(value, str):
            if not _IMPORT_PATH.match(value):
                problems.append(
                    f"output kind '{name}': {attr} must be 'module:function', got '{value}'"
                )
        elif not callable(value):
            problems.append(
                f"output kind '{name}': {attr} is neither callable nor 'module:function'"
            )
    return problems


class OutputKinds(Mapping[str, OutputKind]):
    """The output kinds a host knows, by name: the core's and those plugins registered."""

    def __init__(self, kinds: Iterable[OutputKind] = ()) -> None:
        self._kinds: dict[str, OutputKind] = {}
        for kind in kinds:
            self.add(kind)

    def __getitem__(self, name: str) -> OutputKind:
        return self._kinds[str(name)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds)

    def __len__(self) -> int:
        return len(self._kinds)

    def add(self, kind: OutputKind) -> None:
        """Add ``kind``; a name already taken is a ``ValueError`` (validate before adding)."""
        if kind.name in self._kinds:
            raise ValueError(f"output kind '{kind.name}' is registered twice")
        self._kinds[kind.name] = kind

    def remove_plugin(self, plugin: str) -> None:
        """Forget the kinds ``plugin`` registered (it failed)."""
        for name in [n for n, k in self._kinds.items() if k.plugin == plugin and plugin]:
            del self._kinds[name]

    def for_output(self, output: object) -> OutputKind | None:
        """The kind of ``output``: the one named by its class's ``kind`` attribute, if
        ``output`` is an instance of that kind's class; else None."""
        found = self._kinds.get(str(getattr(type(output), "kind", "")))
        if found is None or not isinstance(output, found.resolve_type()):
            return None
        return found

    def of(self, output: object) -> OutputKind:
        """:meth:`for_output`, or a ``TypeError`` naming the type that has no kind."""
        found = self.for_output(output)
        if found is None:
            raise TypeError(
                f"no output kind for {type(output).__name__} (see docs/output-kinds.md)"
            )
        return found

    def summarise(self, output: object) -> dict[str, Any]:
        """The JSON summary of ``output``: ``{"kind": ..., ...}``."""
        return self.of(output).summarise(output)

    def line(self, summary: Mapping[str, Any]) -> str:
        """What ``vlm run`` prints for an output given its JSON summary; an unknown kind's
        name (a run whose plugin is gone) is printed as it is."""
        name = str(summary.get("kind", "?"))
        found = self._kinds.get(name)
        return found.line(summary) if found is not None else name
