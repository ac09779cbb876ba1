"""Plugin discovery, validation and isolation.

Nothing happens at import time: :func:`load_registry` finds the entry points of the
``vlm.plugins`` group, imports each plugin module, checks its hooks against the hookspecs and
collects its tasks, input readers and output kinds through the ``register`` callbacks (the
core's own output kinds and input readers come through the same hooks, registered first, from
:mod:`vlm_core.outputs.builtin` and :mod:`vlm_core.io.core_readers`). A plugin that fails at
any step (even by raising ``SystemExit``) is recorded as failed with its reason, and the others
keep working; with ``VLM_STRICT_PLUGINS=1`` the first failure raises
:class:`~vlm_core.errors.PluginError`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

import pluggy

from vlm_core import hookspecs
from vlm_core.config import Quarantine, Settings, read_user_config, settings
from vlm_core.errors import (
    PluginError,
    PluginValidationError,
    UnknownPluginError,
    UnknownTaskError,
    describe_exception,
    did_you_mean,
)
from vlm_core.io import core_readers
from vlm_core.io.readers import InputReader, validate_reader
from vlm_core.outputs import builtin as builtin_kinds
from vlm_core.outputs.kind import OutputKind, OutputKinds, validate_output_kind
from vlm_core.tasks import TaskSpec, validate_spec

log = logging.getLogger("vlm.plugins")

Status = Literal["healthy", "failed", "disabled"]


@dataclass
class PluginRecord:
    """What the host knows about one plugin."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    status: Status = "healthy"
    error: str | None = None
    stage: str | None = None  # where it failed: import, validate, register, run
    tasks: list[str] = field(default_factory=list)
    readers: list[str] = field(default_factory=list)  # formats it reads (register_readers)
    output_kinds: list[str] = field(default_factory=list)  # its kinds (register_output_kinds)
    #: when, why and by which run it was quarantined (failed at stage "run"); None otherwise
    quarantine: Quarantine | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "stage": self.stage,
            "tasks": list(self.tasks),
            "readers": list(self.readers),
            "output_kinds": list(self.output_kinds),
            "quarantine": self.quarantine.to_json() if self.quarantine else None,
        }


@dataclass
class Registry:
    """Loaded plugins, the tasks they registered and their input readers (by format)."""

    plugins: dict[str, PluginRecord]
    tasks: dict[str, TaskSpec]
    manager: pluggy.PluginManager
    readers: dict[str, InputReader] = field(default_factory=dict)
    #: the output kinds: the core's and those the plugins registered (register_output_kinds)
    output_kinds: OutputKinds = field(default_factory=OutputKinds)

    def task(self, task_id: str) -> TaskSpec:
        try:
            return self.tasks[task_id]
        except KeyError:
            owner = self.plugins.get(task_id.split(".", 1)[0])
            if owner is not None and owner.status != "healthy":
                raise UnknownTaskError(
                    f"task '{task_id}' is unavailable: plugin '{owner.name}' is {owner.status}"
                    + (f" ({owner.error})" if owner.error else "")
                ) from None
            hint = did_you_mean(task_id, self.tasks) or (
                "" if self.tasks else "; no tasks are installed (see `vlm plugins list`)"
            )
            raise UnknownTaskError(f"unknown task '{task_id}'{hint}") from None

    def plugin(self, name: str) -> PluginRecord:
        try:
            return self.plugins[name]
        except KeyError:
            raise UnknownPluginError(
                f"unknown plugin '{name}'{did_you_mean(name, self.plugins)}"
            ) from None

    def mark_failed(
        self, name: str, stage: str, reason: str, quarantine: Quarantine | None = None
    ) -> None:
        """Disable a plugin for the rest of this process (its tasks and readers disappear)."""
        record = self.plugins[name]
        record.status, record.stage, record.error = "failed", stage, reason
        record.quarantine = quarantine
        for task_id in record.tasks:
            self.tasks.pop(task_id, None)
        for fmt in record.readers:
            if fmt in self.readers and self.readers[fmt].plugin == name:
                del self.readers[fmt]
        self.output_kinds.remove_plugin(name)


def get_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager that knows the ``vlm`` hookspecs and nothing else."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def hook_names(pm: pluggy.PluginManager) -> list[str]:
    """Names of the hooks that have a spec."""
    return sorted(name for name, caller in vars(pm.hook).items() if caller.spec is not None)


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Hook implementations of ``plugin`` that match no hookspec (misspelled hook names)."""
    known = hook_names(pm)
    return [
        f"unknown hook '{caller.name}'{did_you_mean(caller.name, known)}"
        for caller in pm.get_hookcallers(plugin) or []
        if caller.spec is None
    ]


def _collect(pm: pluggy.PluginManager, hook: str, plugin: object) -> list[Any]:
    """Call the plugin's own implementation of ``hook`` and return what it registered."""
    collected: list[Any] = []
    others = [p for p in pm.get_plugins() if p is not plugin]
    caller = pm.subset_hook_caller(hook, remove_plugins=others)
    caller(register=collected.append)
    return collected


def _reader_problems(readers: list[Any], taken: Mapping[str, InputReader]) -> list[str]:
    """Problems with the readers one plugin registered, given the formats already taken."""
    problems: list[str] = []
    formats = [r.format for r in readers if isinstance(r, InputReader)]
    for reader in readers:
        found = validate_reader(reader)
        if found:
            problems += found
            continue
        owner = taken.get(reader.format)
        if owner is not None and owner.plugin == core_readers.CORE_PLUGIN:
            problems.append(f"reader format '{reader.format}' is decoded by the core")
        elif owner is not None:
            problems.append(
                f"format '{reader.format}' already has a reader from plugin '{owner.plugin}'"
            )
        elif formats.count(reader.format) > 1:
            problems.append(f"format '{reader.format}' is registered twice")
    return list(dict.fromkeys(problems))


def _kind_problems(kinds: list[Any], plugin: str) -> list[str]:
    """Problems with the output kinds one plugin registered (named ``<plugin>.<kind>``, so no
    other plugin's can clash)."""
    problems: list[str] = []
    names = [k.name for k in kinds if isinstance(k, OutputKind)]
    for kind in kinds:
        problems += validate_output_kind(kind, plugin)
        if isinstance(kind, OutputKind) and names.count(kind.name) > 1:
            problems.append(f"output kind '{kind.name}' is registered twice")
    return list(dict.fromkeys(problems))


class _Loader:
    def __init__(self, s: Settings) -> None:
        self.settings = s
        self.pm = get_plugin_manager()
        self.records: dict[str, PluginRecord] = {}
        self.tasks: dict[str, TaskSpec] = {}
        self.readers: dict[str, InputReader] = {}
        self.kinds = OutputKinds()
        # the core's output kinds, through the same hook as a plugin's
        self.pm.register(builtin_kinds, name="vlm_core.outputs")
        for kind in _collect(self.pm, "register_output_kinds", builtin_kinds):
            self.kinds.add(kind)
        self.core_kinds = list(self.kinds)  # what any plugin's tasks may return
        # the core's input readers, through the same hook and first: their formats are taken
        self.pm.register(core_readers, name=core_readers.__name__)
        for reader in _collect(self.pm, "register_readers", core_readers):
            self.readers[reader.format] = replace(reader, plugin=core_readers.CORE_PLUGIN)

    def fail(self, record: PluginRecord, stage: str, reason: str, exc: type = PluginError) -> None:
        record.status, record.stage, record.error = "failed", stage, reason
        record.tasks, record.readers, record.output_kinds = [], [], []
        log.info("plugin '%s' failed at %s: %s", record.name, stage, reason)
        if self.settings.strict_plugins:
            raise exc(record.name, f"{stage}: {reason}")

    def add(self, record: PluginRecord, load: Any) -> None:
        """Import (``load()``), validate and register one plugin, isolating its failures."""
        self.records[record.name] = record
        try:
            plugin = load()
        except (KeyboardInterrupt, PluginError):
            raise
        except BaseException as exc:
            return self.fail(record, "import", describe_exception(exc))
        try:
            self.pm.register(plugin, name=record.name)
        except Exception as exc:  # pluggy's own validation of hook signatures
            return self.fail(record, "validate", describe_exception(exc), PluginValidationError)
        problems = _unknown_hooks(self.pm, plugin)
        if problems:
            self.pm.unregister(plugin)
            return self.fail(record, "validate", "; ".join(problems), PluginValidationError)
        try:
            specs = _collect(self.pm, "register_tasks", plugin)
            readers = _collect(self.pm, "register_readers", plugin)
            kinds = _collect(self.pm, "register_output_kinds", plugin)
        except (KeyboardInterrupt, PluginError):
            raise
        except BaseException as exc:
            self.pm.unregister(plugin)
            return self.fail(record, "register", describe_exception(exc))
        problems = _kind_problems(kinds, record.name)
        own = [k.name for k in kinds if not validate_output_kind(k, record.name)]
        for spec in specs:
            if not isinstance(spec, TaskSpec):
                problems.append(f"registered {type(spec).__name__}, not a TaskSpec")
                continue
            problems += validate_spec(spec, record.name, [*self.core_kinds, *own])
            if spec.id in self.tasks or [s.id for s in specs].count(spec.id) > 1:
                problems.append(f"task id '{spec.id}' is registered twice")
        problems += _reader_problems(readers, self.readers)
        if problems:
            self.pm.unregister(plugin)
            return self.fail(record, "validate", "; ".join(problems), PluginValidationError)
        record.tasks = [spec.id for spec in specs]
        self.tasks.update({spec.id: spec for spec in specs})
        record.readers = [reader.format for reader in readers]
        self.readers.update({r.format: replace(r, plugin=record.name) for r in readers})
        record.output_kinds = own
        for kind in kinds:
            self.kinds.add(replace(kind, plugin=record.name))
        return None


def _entry_points() -> list[EntryPoint]:
    found = sorted(entry_points(group=hookspecs.ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    unique: dict[str, EntryPoint] = {}
    for ep in found:  # the same distribution seen twice on sys.path: keep the first
        unique.setdefault(ep.name, ep)
    return list(unique.values())


def load_registry(
    s: Settings | None = None,
    *,
    extra: Mapping[str, object] | None = None,
    use_entry_points: bool = True,
) -> Registry:
    """Discover, import, validate and register plugins.

    Args:
        s: settings (read from the environment when omitted).
        extra: in-process plugins by name, loaded as if they came from entry points (tests,
            notebooks). They obey the allow-list and the user config like the others.
        use_entry_points: set False to load only ``extra``.
    """
    s = s or settings()
    config = read_user_config(s)
    loader = _Loader(s)
    candidates: list[tuple[PluginRecord, Any]] = []
    if use_entry_points:
        for ep in _entry_points():
            dist = ep.dist
            record = PluginRecord(
                name=ep.name,
                module=ep.value,
                distribution=dist.metadata["Name"] if dist else None,
                version=dist.version if dist else None,
            )
            candidates.append((record, ep.load))
    for name, obj in (extra or {}).items():
        module = getattr(obj, "__name__", type(obj).__name__)
        candidates.append((PluginRecord(name=name, module=module), lambda obj=obj: obj))
    for record, load in candidates:
        if s.plugin_allow_list is not None and record.name not in s.plugin_allow_list:
            continue
        if record.name in config.disabled:
            record.status, record.error = "disabled", "disabled by the user"
            loader.records[record.name] = record
            continue
        if record.name in config.quarantined:
            record.status, record.stage = "failed", "run"
            record.quarantine = config.quarantined[record.name]
            record.error = record.quarantine.reason
            loader.records[record.name] = record
            if s.strict_plugins:
                raise PluginError(record.name, f"run: {record.error}")
            continue
        loader.add(record, load)
    return Registry(
        plugins=loader.records,
        tasks=loader.tasks,
        manager=loader.pm,
        readers=loader.readers,
        output_kinds=loader.kinds,
    )


_cached: Registry | None = None
_lock = threading.Lock()


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry, loaded once on first use."""
    global _cached
    with _lock:
        if _cached is None or reload:
            _cached = load_registry()
        return _cached
