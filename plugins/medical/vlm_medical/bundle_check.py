"""Check a bundle config against the allow-list before any of it runs; hand MONAI the result.

:func:`check_config` starts from the pieces the task builds (``network_def``,
``preprocessing``, ``inferer``, ``postprocessing``) and follows what MONAI's own
:class:`~monai.bundle.reference_resolver.ReferenceResolver` would resolve for them: every
sub-item, every ``@`` reference, every ``$`` expression. Each ``_target_`` and each name and
attribute in each expression must be on the allow-list (:mod:`vlm_medical.bundle_allowlist`).
The first item that is not refuses the bundle with one line naming its config key.

What MONAI then gets (:class:`CheckedConfig`) is a rewritten config, so that nothing in it is
looked up by name any more:

* every checked ``_target_`` string is replaced by the allowed object itself (by a
  :class:`~vlm_medical.bundle_allowlist.Checked` stand-in where the object has an argument
  rule), so MONAI never imports or locates anything;
* everything the task does not build (``evaluator``, ``handlers``, ``initialize``, ``run``,
  ``dataset``, ...) and every ``$import`` is removed: not checked, so never evaluated;
* MONAI's result writers written as steps of the ``preprocessing``/``postprocessing``
  ``Compose`` (how zoo configs end) become disabled components, which MONAI leaves out;
* ``$`` expressions see only :attr:`CheckedConfig.globals`: a reduced ``__builtins__`` and,
  for ``torch``, ``monai``, ``np`` and each import they use, a :class:`Namespace` holding
  exactly the allowed objects the expressions name, not the module.
"""

from __future__ import annotations

import ast
import builtins
import importlib
from collections import deque
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any, NoReturn

from vlm_core.errors import describe_exception
from vlm_medical.bundle_allowlist import (
    BUILTINS,
    IMPORT_ROOTS,
    IMPORT_STDLIB,
    METHODS,
    UNKNOWN,
    Checked,
    bound_arguments,
    entry,
    is_inert,
    short_names,
    writer_steps,
)
from vlm_medical.bundle_safety import BundleError, BundleRefused, config_key

#: The names MONAI gives every expression (``monai.bundle.config_parser._default_globals``).
DEFAULT_MODULES = {"monai": "monai", "torch": "torch", "np": "numpy", "numpy": "numpy"}
#: The pipelines whose ``Compose`` steps may be result writers left out unbuilt.
PIPELINES = ("preprocessing", "postprocessing")
MODES = frozenset({"default", "callable"})
#: How MONAI rewrites ``@id`` inside an expression.
REFS = "__local_refs"
SEE = "(see BUNDLE.md)"
_MISSING = object()


@dataclass
class CheckedConfig:
    """A config that passed the allow-list, ready for :class:`monai.bundle.ConfigParser`."""

    config: dict  # the rewritten config (see the module docstring)
    globals: dict[str, Any]  # what its expressions see
    checked: int  # components and expressions checked
    dropped: tuple[str, ...] = ()  # config keys of result writers left out


class Namespace:
    """What an expression sees as ``torch``, ``monai.transforms``, ...: only the allowed
    objects the config names, not the module."""

    __slots__ = ("_vlm_members", "_vlm_name")

    def __init__(self, name: str) -> None:
        self._vlm_name = name
        self._vlm_members: dict[str, Any] = {}

    def __getattr__(self, attr: str) -> Any:
        try:
            return self._vlm_members[attr]
        except KeyError:
            raise AttributeError(
                f"'{self._vlm_name}.{attr}' is not on the bundle allow-list"
            ) from None

    def __repr__(self) -> str:
        return f"<allowed names of {self._vlm_name}>"


@dataclass(frozen=True)
class _Import:
    key: str  # where the import statement is
    module: str
    name: str | None  # from MODULE import NAME


@dataclass
class _Binding:
    module: ModuleType | None = None  # a module (its namespace is filled as it is used)
    value: Any = None


def check_config(
    tree: dict, roots: list[str], label: str, packages: frozenset[str] = frozenset()
) -> CheckedConfig:
    """Check what building ``roots`` of ``tree`` would run, and return the config to build.

    Args:
        tree: the config with ``%`` macros expanded (:func:`~vlm_medical.bundle_safety.
            read_bundle_config`) and the task's overrides set.
        roots: the config keys the task builds.
        label: the bundle's name in messages.
        packages: the bundle's own top-level Python packages, importable because the operator
            passed ``trust_code`` (their objects are then allowed too).

    Raises:
        BundleRefused: at the first item off the allow-list, naming its config key.
        BundleError: when a reference names an id the config does not define.
    """
    checker = _Checker(tree, label, packages)
    for root in roots:
        checker.follow(root, None)
    try:
        checker.drain()
        return checker.result()
    except RecursionError:
        raise BundleRefused(
            f"bundle '{label}' refused: its config nests too deeply to be checked {SEE}"
        ) from None


class _Checker:
    def __init__(self, tree: dict, label: str, packages: frozenset[str]) -> None:
        self.tree = tree
        self.label = label
        self.packages = packages
        self.imports = _collect_imports(tree)
        self.visited: set[str] = set()
        self.todo: deque[tuple[str, str | None]] = deque()  # in config order, breadth first
        self.referrer: dict[str, str] = {}  # id -> the key that first referenced it
        self.targets: dict[str, Any] = {}  # component key -> what MONAI calls
        self.dropped: list[str] = []
        self.bindings: dict[str, _Binding] = {}
        self.env: dict[str, Any] = {}
        self.count = 0

    # -- messages --------------------------------------------------------------------------------
    def refuse(self, key: str, problem: str) -> NoReturn:
        via = self.referrer.get(_root_id(key, self.referrer))
        where = f"config key '{key}'" + (f" (referenced from '{via}')" if via else "")
        raise BundleRefused(f"bundle '{self.label}' refused: {where} {problem} {SEE}")

    # -- the walk over the config ----------------------------------------------------------------
    def follow(self, ref: str, origin: str | None) -> None:
        """Check the item ``ref`` names (after the current one), as MONAI would build it."""
        key = ref.replace("#", "::")
        if origin is not None:
            self.referrer.setdefault(key, origin)
        self.todo.append((key, origin))

    def drain(self) -> None:
        while self.todo:
            key, origin = self.todo.popleft()
            for dropped in self.dropped:
                if origin and (key == dropped or key.startswith(dropped + "::")):
                    problem = f"refers to '@{key}', a result writer, which is not built"
                    self.refuse(origin, problem)
            if key in self.visited:
                continue
            try:
                value = config_key(self.tree, key)
            except KeyError:
                where = f"config key '{origin}' refers to '@{key}'" if origin else f"'{key}'"
                raise BundleError(
                    f"bundle '{self.label}': {where}, which its config does not define"
                ) from None
            self.visit(key, value)

    def visit(self, key: str, value: Any) -> None:
        if key in self.visited:
            return
        self.visited.add(key)
        if isinstance(value, dict) and "_target_" in value:
            self.component(key, value)
        elif isinstance(value, dict):
            for k, v in value.items():
                self.visit(_join(key, k), v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.visit(_join(key, i), v)
        elif isinstance(value, str) and value.startswith("$"):
            self.expression(key, value)
        elif isinstance(value, str) and value.startswith("@"):
            for ref in _refs(value):
                self.follow(ref, key)
        elif isinstance(value, str) and value.startswith("%"):
            self.refuse(key, f"holds the unexpanded macro '{value[:80]}'")

    def component(self, key: str, value: dict) -> None:
        self.count += 1
        target = value["_target_"]
        if "_debug_" in value:
            self.refuse(key, "asks for _debug_, which starts a debugger")
        mode = value.get("_mode_", "default")
        if not isinstance(mode, str) or mode.strip().lower() not in MODES:
            self.refuse(key, f"asks for _mode_ '{mode}'; only 'default' and 'callable' are allowed")
        obj: Any = None
        if isinstance(target, str) and not target.startswith(("$", "@")):
            obj = self.target(key, target)
            self.check_rule(key, obj, (), _literal_args(value))
            found = entry(obj)
            where = f"bundle '{self.label}' refused: config key '{key}'"
            self.targets[key] = Checked(found, where) if found and found.rule else obj
        elif isinstance(target, str):
            self.visit(_join(key, "_target_"), target)
        else:
            self.refuse(key, f"has a _target_ of type {type(target).__name__}; it must be a name")
        pipeline = key in PIPELINES and obj is short_names().get("Compose")
        for arg, setting in value.items():
            sub = _join(key, arg)
            if arg == "_target_":
                continue
            if pipeline and arg == "transforms" and isinstance(setting, list):
                self.visited.add(sub)
                for i, step in enumerate(setting):
                    if self.is_writer(step):
                        self.dropped.append(_join(sub, i))
                        self.visited.add(_join(sub, i))
                    else:
                        self.visit(_join(sub, i), step)
            else:
                self.visit(sub, setting)

    def is_writer(self, step: Any) -> bool:
        target = step.get("_target_") if isinstance(step, dict) else None
        if not isinstance(target, str) or target.startswith(("$", "@")):
            return False
        obj = short_names().get(target) if "." not in target else _quiet_locate(target)
        return any(obj is w for w in writer_steps())

    # -- names ----------------------------------------------------------------------------------
    def allowed(self, obj: Any) -> bool:
        if entry(obj) is not None:
            return True
        home = getattr(obj, "__module__", None)
        return (
            bool(self.packages)
            and not isinstance(obj, ModuleType)
            and isinstance(home, str)
            and home.split(".")[0] in self.packages
        )

    def importable(self, module: str) -> bool:
        root = module.split(".")[0]
        return root in IMPORT_ROOTS or module in IMPORT_STDLIB or root in self.packages

    def target(self, key: str, name: str) -> Any:
        """The object a ``_target_`` string names, resolved as MONAI would, if allowed."""
        if "." not in name:
            obj = short_names().get(name)
            if obj is None:
                module = _locator().get_component_module_name(name)
                module = module[0] if isinstance(module, list) else module
                shown = f"{module}.{name}" if module else f"'{name}'"
                self.refuse(key, f"targets {shown}, which is not on the allow-list")
        else:
            parts = name.split(".")
            if not self.importable(parts[0]):
                self.refuse(key, f"targets '{name}', outside the modules a bundle may use")
            module = self.load(key, parts[0])
            if module is None:
                self.refuse(key, f"targets '{name}', whose module '{parts[0]}' does not exist")
            obj, used = self.walk(key, module, parts[0], parts[1:])
            if used < len(parts) - 1:
                self.refuse(key, f"targets '{name}', which is not a class or function")
        if isinstance(obj, ModuleType) or not callable(obj):
            self.refuse(key, f"targets '{name}', which is not a class or function")
        if not self.allowed(obj):
            self.refuse(key, f"targets {_shown(name, obj)}, which is not on the allow-list")
        return obj

    def walk(self, key: str, start: Any, name: str, parts: list[str]) -> tuple[Any, int]:
        """Follow ``parts`` from the module ``start`` through modules (and classes, for their
        constants) to the first allowed object or plain value; returns it and how many parts
        it took. Modules are imported only where a bundle may import them."""
        obj = start
        for i, part in enumerate(parts):
            if not part.isidentifier() or part.startswith("_"):
                self.refuse(key, f"uses the private or malformed name '{part}' in '{name}'")
            if isinstance(obj, ModuleType):
                nxt = getattr(obj, part, _MISSING)
                sub = f"{obj.__name__}.{part}"
                if nxt is _MISSING and self.importable(sub):
                    loaded = self.load(key, sub)
                    nxt = _MISSING if loaded is None else loaded
            elif isinstance(obj, type) and not self.allowed(obj):
                nxt = getattr(obj, part, _MISSING)  # enum-like constants: CommonKeys.IMAGE
            else:
                return obj, i
            if nxt is _MISSING:
                self.refuse(key, f"names '{name}.{part}', which does not exist")
            obj, name = nxt, f"{name}.{part}"
            if not isinstance(obj, ModuleType) and (self.allowed(obj) or is_inert(obj)):
                return obj, i + 1
        if isinstance(obj, ModuleType):
            self.refuse(key, f"uses the module '{name}' as a value; name what it holds")
        if not (self.allowed(obj) or is_inert(obj)):
            self.refuse(key, f"names {_shown(name, obj)}, which is not on the allow-list")
        return obj, len(parts)

    def load(self, key: str, module: str) -> ModuleType | None:
        """Import ``module`` (one a bundle may use), or None when there is no such module.

        Importing runs the module's code: the bundle's own (with ``trust_code``) may fail in
        any way, which is the bundle's failure, reported as such."""
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
                return None
            problem = describe_exception(exc)
        except Exception as exc:  # whatever the imported code raises
            problem = describe_exception(exc)
        raise BundleError(
            f"bundle '{self.label}': config key '{key}' needs '{module}', and importing it "
            f"failed: {problem}"
        )

    def binding(self, key: str, name: str) -> _Binding | None:
        """What the global ``name`` of an expression is: a module, an allowed value, or
        (for builtins, which ``__builtins__`` provides) None."""
        if name in self.bindings:
            return self.bindings[name]
        imported = self.imports.get(name)
        if imported is not None:
            found = self.import_binding(key, imported)
        elif name in DEFAULT_MODULES:
            found = _Binding(module=importlib.import_module(DEFAULT_MODULES[name]))
        elif name in BUILTINS:
            return None
        else:
            self.refuse(key, f"uses the name '{name}', which is not on the allow-list")
        self.bindings[name] = found
        if found.module is not None:
            self.env[name] = Namespace(name)
        else:
            self.env[name] = self.stand_in(key, found.value)
        return found

    def import_binding(self, key: str, imported: _Import) -> _Binding:
        where = f"imports '{imported.module}'" + (f" ({imported.name})" if imported.name else "")
        if not self.importable(imported.module):
            self.refuse(imported.key, f"{where}, which is not on the allow-list (used by '{key}')")
        module = self.load(imported.key, imported.module)
        if module is None:
            self.refuse(imported.key, f"{where}, which does not exist")
        if imported.name is None:
            return _Binding(module=module)
        obj, _ = self.walk(imported.key, module, imported.module, [imported.name])
        if isinstance(obj, ModuleType):
            return _Binding(module=obj)
        return _Binding(value=obj)

    def record(self, root: str, parts: list[str], value: Any, key: str) -> None:
        """Make ``root.parts`` evaluate to ``value`` in the expressions' namespaces."""
        space = self.env[root]
        for part in parts[:-1]:
            inner = space._vlm_members.get(part)
            if not isinstance(inner, Namespace):
                inner = space._vlm_members[part] = Namespace(f"{space._vlm_name}.{part}")
            space = inner
        space._vlm_members[parts[-1]] = self.stand_in(key, value)

    def stand_in(self, key: str, value: Any) -> Any:
        found = entry(value)
        if found is not None and found.rule is not None:
            return Checked(found, f"bundle '{self.label}' refused: config key '{key}'")
        return value

    def check_rule(self, key: str, obj: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        found = entry(obj)
        if found is None or found.rule is None:
            return
        problem = found.rule(bound_arguments(obj, args, kwargs))
        if problem:
            self.refuse(key, f"calls {found.name} {problem}")

    # -- expressions ----------------------------------------------------------------------------
    def expression(self, key: str, value: str) -> None:
        from monai.bundle.reference_resolver import ReferenceResolver

        self.count += 1
        refs = _refs(value)
        for ref in refs:
            self.follow(ref, key)
        code = str(ReferenceResolver.update_refs_pattern(value, dict.fromkeys(refs)))[1:]
        try:
            tree = ast.parse(code.strip(), mode="eval")
        except SyntaxError:
            if _import_statement(value) is not None:
                self.refuse(key, "is an import statement used as a value")
            self.refuse(key, "is not a single Python expression")
        except (RecursionError, MemoryError):
            self.refuse(key, "nests too deeply to be checked")
        try:
            _Expression(self, key, set(refs)).visit(tree.body, frozenset())
        except RecursionError:
            self.refuse(key, "nests too deeply to be checked")

    # -- the result -----------------------------------------------------------------------------
    def result(self) -> CheckedConfig:
        from monai.transforms import Identity

        above = {k.rsplit("::", i)[0] for k in self.visited for i in range(k.count("::") + 1)}
        dropped = set(self.dropped)

        def clean(key: str, value: Any) -> Any:
            if key in dropped:
                return {"_target_": Identity, "_disabled_": True}
            if isinstance(value, dict):
                code = "_target_" in value
                if code and key not in self.visited and key not in above:
                    return None
                out = {k: clean(_join(key, k), v) for k, v in value.items() if k != "_target_"}
                if code and key in self.visited:
                    out["_target_"] = self.targets.get(key, value["_target_"])
                return out
            if isinstance(value, list):
                return [clean(_join(key, i), v) for i, v in enumerate(value)]
            if isinstance(value, str) and value.startswith("$") and key not in self.visited:
                return None
            return value

        config = {k: clean(str(k), v) for k, v in self.tree.items()}
        names: dict[str, Any] = {n: Namespace(n) for n in DEFAULT_MODULES}
        names.update(self.env)
        names["__builtins__"] = {n: getattr(builtins, n) for n in sorted(BUILTINS)}
        return CheckedConfig(config, names, self.count, tuple(self.dropped))


class _Expression:
    """The check of one ``$`` expression's syntax tree."""

    def __init__(self, checker: _Checker, key: str, refs: set[str]) -> None:
        self.checker = checker
        self.key = key
        self.refs = {r.replace("#", "::") for r in refs}

    def refuse(self, problem: str) -> NoReturn:
        self.checker.refuse(self.key, problem)

    def visit(self, node: ast.AST, local: frozenset[str]) -> Any:
        """Check ``node``; return the object it statically names, when it names one."""
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str | bytes) and "__" in str(node.value):
                self.refuse(f"uses the text {str(node.value)[:40]!r}, which names a dunder")
        elif isinstance(node, ast.Name):
            return self.name(node.id, local)
        elif isinstance(node, ast.Attribute):
            return self.attribute(node, local)
        elif isinstance(node, ast.Subscript) and _is_ref(node):
            ref = node.slice.value  # type: ignore[attr-defined]
            if ref not in self.refs:
                self.refuse(f"uses '{REFS}' directly; write @{ref}")
        elif isinstance(node, ast.Call):
            self.call(node, local)
        elif isinstance(node, ast.Lambda):
            args = node.args
            for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
                self.visit(default, local)
            params = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            names = {a.arg for a in params if a is not None}
            self.local_names(names)
            self.visit(node.body, local | names)
        elif isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            scope = local
            for gen in node.generators:
                if gen.is_async:
                    self.refuse("uses an async comprehension")
                self.visit(gen.iter, scope)
                scope = scope | self.targets(gen.target)
                for condition in gen.ifs:
                    self.visit(condition, scope)
            parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            for part in parts:
                self.visit(part, scope)
        elif isinstance(node, _STRUCTURAL):
            for child in ast.iter_child_nodes(node):
                self.visit(child, local)
        else:
            self.refuse(f"uses the Python construct '{type(node).__name__}', which is not allowed")
        return None

    def name(self, name: str, local: frozenset[str]) -> Any:
        if name in local:
            return None
        if name == REFS:
            self.refuse(f"uses '{REFS}' directly")
        found = self.checker.binding(self.key, name)
        if found is None:
            return getattr(builtins, name)
        if found.module is not None:
            self.refuse(f"uses the module '{name}' as a value; name what it holds")
        return found.value

    def attribute(self, node: ast.Attribute, local: frozenset[str]) -> Any:
        chain: list[str] = []
        base: ast.AST = node
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        chain.reverse()
        for attr in chain:
            if attr.startswith("_"):
                self.refuse(f"uses the private attribute '{attr}'")
        named: Any = None
        rest = chain
        root = base.id if isinstance(base, ast.Name) else None
        bound = None
        if root is not None and root not in local and root != REFS:
            bound = self.checker.binding(self.key, root)
        if root is not None and bound is not None and bound.module is not None:
            named, used = self.checker.walk(self.key, bound.module, root, chain)
            self.checker.record(root, chain[:used], named, self.key)
            rest = chain[used:]
        else:
            self.visit(base, local)
        for attr in rest:
            if attr not in METHODS:
                self.refuse(
                    f"uses the attribute '{attr}', which is not on the allow-list of methods"
                )
        return named if not rest else None

    def call(self, node: ast.Call, local: frozenset[str]) -> None:
        callee = self.visit(node.func, local)
        for arg in node.args:
            self.visit(arg, local)
        for keyword in node.keywords:
            self.visit(keyword.value, local)
        if callee is None or any(k.arg is None for k in node.keywords):
            return
        args = tuple(UNKNOWN if isinstance(a, ast.Starred) else _literal(a) for a in node.args)
        kwargs = {str(k.arg): _literal(k.value) for k in node.keywords}
        self.checker.check_rule(self.key, callee, args, kwargs)

    def local_names(self, names: set[str] | frozenset[str]) -> None:
        for name in names:
            if name.startswith("__"):
                self.refuse(f"binds the dunder name '{name}'")

    def targets(self, target: ast.AST) -> frozenset[str]:
        if isinstance(target, ast.Name):
            self.local_names({target.id})
            return frozenset({target.id})
        if isinstance(target, ast.Tuple | ast.List):
            return frozenset().union(*(self.targets(t) for t in target.elts))
        if isinstance(target, ast.Starred):
            return self.targets(target.value)
        self.refuse(f"assigns to '{type(target).__name__}' in a comprehension")


_STRUCTURAL = (
    ast.Tuple, ast.List, ast.Set, ast.Dict, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare,
    ast.IfExp, ast.Slice, ast.Starred, ast.JoinedStr, ast.FormattedValue, ast.keyword,
    ast.Subscript, ast.expr_context, ast.operator, ast.unaryop, ast.boolop, ast.cmpop,
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Helpers


def _join(key: str, sub: Any) -> str:
    return f"{key}::{sub}" if key else str(sub)


def _root_id(key: str, referrer: dict[str, str]) -> str:
    """The referenced id ``key`` lies in (itself or an ancestor), for 'referenced from'."""
    parts = key.split("::")
    for n in range(len(parts), 0, -1):
        candidate = "::".join(parts[:n])
        if candidate in referrer:
            return candidate
    return key


def _refs(value: str) -> list[str]:
    from monai.bundle.reference_resolver import ReferenceResolver

    return list(ReferenceResolver.match_refs_pattern(value))


def _is_ref(node: ast.Subscript) -> bool:
    return (
        isinstance(node.value, ast.Name)
        and node.value.id == REFS
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, str)
    )


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return UNKNOWN


def _literal_args(component: dict) -> dict[str, Any]:
    """A component's arguments, each as its value when it is plain data, else UNKNOWN."""
    return {
        str(k): v if _is_plain(v) else UNKNOWN
        for k, v in component.items()
        if not (isinstance(k, str) and k.startswith("_") and k.endswith("_"))
    }


def _is_plain(value: Any) -> bool:
    if isinstance(value, str):
        return not value.startswith(("$", "@", "%"))
    if isinstance(value, dict):
        return "_target_" not in value and all(_is_plain(v) for v in value.values())
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    return True


def _shown(written: str, obj: Any) -> str:
    home = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    canonical = f"{home}.{qualname}" if isinstance(home, str) and qualname else None
    if canonical and canonical != written:
        return f"'{written}' ({canonical})"
    return f"'{written}'"


def _import_statement(value: str) -> ast.Import | ast.ImportFrom | None:
    """The import MONAI would run for the ``$`` string ``value`` (its first statement)."""
    if "import" not in value:
        return None
    try:
        tree = ast.parse(value[1:])
    except SyntaxError:
        return None
    first = tree.body[0] if tree.body else None
    return first if isinstance(first, ast.Import | ast.ImportFrom) else None


def _collect_imports(tree: Any) -> dict[str, _Import]:
    """The names every ``$import`` in the config binds, as MONAI binds them (the first alias
    of each statement; a later statement wins)."""
    found: dict[str, _Import] = {}
    stack: list[tuple[str, Any]] = [("", tree)]
    seen: list[tuple[str, Any]] = []
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((_join(key, k), v) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((_join(key, i), v) for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, str) and value.startswith("$"):
            seen.append((key, value))
    for key, value in seen:
        node = _import_statement(value)
        if node is None or not node.names:
            continue
        alias = node.names[0]
        if isinstance(node, ast.ImportFrom):
            if node.level or not node.module:
                continue
            found[alias.asname or alias.name] = _Import(key, node.module, alias.name)
        else:
            found[alias.asname or alias.name] = _Import(key, alias.name, None)
    return found


def _quiet_locate(dotted: str) -> Any:
    """The object a dotted ``_target_`` names, if it is one of the allow-list's modules' own
    (no import of anything else), else None."""
    module, _, name = dotted.rpartition(".")
    if module.split(".")[0] not in IMPORT_ROOTS:
        return None
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


@cache
def _locator() -> Any:
    from monai.bundle import ComponentLocator

    return ComponentLocator()
