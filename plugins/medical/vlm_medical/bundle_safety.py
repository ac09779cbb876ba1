"""Safety checks of a MONAI bundle, made before anything in it is evaluated or unpickled.

A MONAI bundle config is a program: ``$`` strings are Python expressions passed to ``eval``,
``_target_`` names any importable callable, ``%`` copies content from other files and
``$import x`` imports modules. This module decides whether a bundle may run at all:

* **trust** (:func:`check_trusted`): a bundle folder must lie under a trusted root (the
  plugin's bundled samples, MONAI's bundle cache that :func:`monai.bundle.download` fills from
  the model zoo, the folders in ``VLM_TRUSTED_BUNDLES`` or in ``trusted-bundles.txt`` in the
  vlm config folder) unless the operator passes ``trust=true`` for that run;
* **macros** (:func:`read_bundle_config`): ``%`` references are expanded here, from JSON or YAML
  files that must resolve inside the bundle folder, so that MONAI never opens another file;
* **static scan** (:func:`scan_config`), independent of trust: every ``$`` expression is
  parsed with :mod:`ast` and may only use a small expression subset, ``@`` references, safe
  builtins and attribute chains on allow-listed modules (``monai``, ``torch``, ``numpy``, plus
  ``os.path``/``glob``/``math`` basics) that resolve to objects living in those packages and
  off a deny-list (deserialisation, file writers, compilers, processes, downloads, MONAI's own
  config machinery); every ``_target_`` must resolve the same way (or be a MONAI component
  name or a safe builtin). The first violation refuses the bundle with one line naming the
  config key and the offending name.

At run time expressions also see a reduced ``__builtins__`` (:func:`safe_builtins`), a
second line of defence should the scan miss something.
"""

from __future__ import annotations

import ast
import builtins
import copy
import importlib
import json
import logging
import os
import pydoc
import re
from collections.abc import Iterator
from functools import cache
from itertools import islice
from pathlib import Path
from types import ModuleType
from typing import Any

from vlm_core.errors import UsageError

log = logging.getLogger(__name__)

#: Packages whose names ``$`` expressions and ``_target_`` may reach.
ALLOWED_ROOTS: tuple[str, ...] = ("monai", "torch", "numpy")
#: Names every MONAI expression sees (``monai.bundle.config_parser._default_globals``).
DEFAULT_GLOBALS = {"monai": "monai", "torch": "torch", "np": "numpy", "numpy": "numpy"}
#: Standard-library modules a config may import, and the names of them it may use.
STDLIB_IMPORTS = frozenset({"os", "os.path", "glob", "math"})
STDLIB_NAMES = frozenset(
    {f"os.path.{n}" for n in ("join", "basename", "dirname", "splitext", "exists", "isfile")}
    | {"os.path.isdir", "os.path.abspath", "os.path.normpath", "os.sep", "glob.glob"}
)
STDLIB_OPEN = frozenset({"math"})  # every public name of these is allowed
#: Builtins an expression may name (also the ``__builtins__`` it runs with, plus ``setattr``).
SAFE_BUILTINS = frozenset({
    "abs", "all", "any", "bool", "dict", "divmod", "enumerate", "filter", "float", "frozenset",
    "int", "isinstance", "len", "list", "map", "max", "min", "pow", "range", "reversed",
    "round", "set", "slice", "sorted", "str", "sum", "tuple", "zip",
})  # fmt: skip
#: Builtins a ``_target_`` may name.
SAFE_TARGET_BUILTINS = frozenset({
    "dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bool", "range",
    "slice", "min", "max", "sum", "abs", "round", "len", "sorted", "zip", "enumerate",
})  # fmt: skip
#: Names inside the allowed packages that are refused, with why (prefixes of dotted names).
DENIED: dict[str, str] = {
    **dict.fromkeys(
        ("torch.load", "torch.serialization", "torch.jit", "torch.package", "torch.hub",
         "torch.utils.model_zoo", "numpy.load", "numpy.lib.npyio", "numpy.lib.format",
         "numpy.fromfile", "numpy.fromregex", "numpy.memmap", "numpy.loadtxt", "numpy.genfromtxt",
         "numpy.DataSource", "numpy.lib._datasource", "monai.data.torchscript_utils",
         "monai.apps.mmars"),
        "loads files that can hold code (pickle, TorchScript)",
    ),
    **dict.fromkeys(
        ("torch.save", "numpy.save", "numpy.savez", "numpy.savez_compressed", "numpy.savetxt",
         "torch.utils.tensorboard", "torch.profiler", "torch.autograd.profiler", "torch.onnx",
         "torch.export", "torch.from_file", "monai.utils.misc.save_obj",
         "monai.networks.utils.convert_to_torchscript", "monai.networks.utils.convert_to_onnx",
         "monai.networks.utils.convert_to_trt", "monai.handlers.checkpoint_saver",
         "monai.data.dataset.PersistentDataset", "monai.data.dataset.LMDBDataset",
         "monai.data.dataset.GDSDataset", "monai.data.dataset.CacheNTransDataset",
         "monai.networks.utils.save_state", "torch.utils.data.datapipes"),
        "writes files",
    ),
    **dict.fromkeys(
        ("torch.utils.cpp_extension", "torch.utils.benchmark", "torch.utils.bottleneck",
         "torch.utils.collect_env", "torch.ops", "torch._ops", "torch.classes", "torch._classes",
         "torch.library", "torch.compile", "torch.compiler", "torch._dynamo", "torch._inductor",
         "torch.fx", "torch.distributed", "torch.multiprocessing", "torch.testing",
         "torch.cuda.memory.CUDAPluggableAllocator", "torch.cuda.memory.change_current_allocator",
         "numpy.ctypeslib", "numpy.f2py", "numpy.distutils",
         "numpy.testing", "monai.utils.misc.run_cmd", "monai.networks.trt_compiler",
         "monai.auto3dseg", "monai.apps.auto3dseg", "monai.apps.nnunet",
         "monai.config.check_env"),
        "compiles or loads native code, or starts processes",
    ),
    **dict.fromkeys(
        ("monai.bundle", "monai.utils.module", "monai.utils.safeeval", "monai.fl"),
        "evaluates configs or imports by name (it would bypass this scan)",
    ),
    **dict.fromkeys(
        ("monai.apps.utils", "monai.apps.datasets", "monai.apps.tcia", "monai.losses.perceptual",
         "monai.networks.nets.resnet.get_pretrained_resnet_medicalnet"),
        "downloads files or code",
    ),
}  # fmt: skip
#: Attribute names refused anywhere (on references, call results and allowed modules alike).
DENIED_ATTRS = frozenset({
    "system", "popen", "spawnl", "spawnv", "execv", "execve", "exec", "eval", "compile", "load",
    "loads", "save", "savez", "savetxt", "dump", "dumps", "tofile", "fromfile", "from_file",
    "unlink", "remove", "rmdir", "rmtree", "removedirs", "rename", "renames", "chmod", "chown",
    "symlink", "symlink_to", "hardlink_to", "link", "write", "writelines", "write_text",
    "write_bytes", "open", "touch", "mkdir", "makedirs", "import_module", "load_library",
    "load_inline", "run_cmd", "check_output", "check_call", "execl", "execle", "execlp",
    "execlpe", "execvp", "execvpe", "spawnle", "spawnlp", "spawnve", "spawnvp", "posix_spawn",
    "posix_spawnp", "fork", "forkpty", "kill", "killpg", "putenv", "unsetenv", "setuid",
    "chdir", "chroot", "mro", "gi_frame", "gi_code", "ag_frame", "cr_frame", "f_back",
    "f_globals", "f_locals", "f_builtins", "f_code", "tb_frame", "tb_next", "co_code",
    "load_from", "download", "download_url", "hf_hub_download", "urlopen", "urlretrieve",
})  # fmt: skip
#: Component keys that make a network fetch weights by itself when instantiated.
FETCH_KEY = re.compile(r"^(pretrained\w*|\w*_url|\w*weights?_path|\w*ckpt_path)$")
ALLOWED_MODES = frozenset({"default", "callable"})
#: Modules whose settings ``setattr`` may change (MONAI's cudnn.benchmark idiom).
SETATTR_MODULES = ("torch.backends.",)

MAX_CONFIG_BYTES = 8 * 1024**2
MAX_CONFIG_NODES = 200_000
MAX_MACRO_DEPTH = 8
#: How ``@id`` references appear in an expression once MONAI rewrote it.
REFS = "__local_refs"
TRUST_FILE = "trusted-bundles.txt"
TRUST_ENV = "VLM_TRUSTED_BUNDLES"


class BundleError(UsageError):
    """A bundle cannot be used: missing files, a config that fails, an unreachable zoo."""


class BundleRefused(BundleError):
    """A bundle is refused: untrusted location, or config or weights reaching unsafe code.

    Nothing from the bundle has been evaluated, instantiated or unpickled when it is raised.
    """


class _Unsafe(Exception):
    """A violation found by the scanner; :func:`scan_config` adds the config key."""


# ---------------------------------------------------------------------------------------------
# Trust


def trusted_roots() -> list[tuple[Path, str]]:
    """Folders whose bundles run without ``trust=true``, each with where it comes from."""
    import torch.hub

    from vlm_core.config import settings
    from vlm_core.tasks import package_file

    roots = [
        (package_file("vlm_medical", "samples"), "the plugin's bundled samples"),
        (Path(torch.hub.get_dir()) / "bundle", "the MONAI bundle cache"),
    ]
    for entry in os.environ.get(TRUST_ENV, "").split(os.pathsep):
        if entry.strip():
            roots.append((Path(entry.strip()).expanduser(), TRUST_ENV))
    listing = settings().config_dir / TRUST_FILE
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    except OSError as exc:
        raise BundleError(f"cannot read the trusted-bundle list {listing}: {exc}") from None
    for line in lines:
        entry = line.split("#", 1)[0].strip()
        if entry:
            roots.append((listing.parent / Path(entry).expanduser(), str(listing)))
    return [(root.resolve(), where) for root, where in roots]


def check_trusted(folder: Path, *, trust: bool, label: str) -> str:
    """Say why ``folder`` may run (``"trusted: ..."``) or raise :class:`BundleRefused`."""
    real = folder.resolve()
    for root, where in trusted_roots():
        if real == root or root in real.parents:
            return f"trusted: under {root} ({where})"
    if trust:
        log.warning("running bundle %s from an untrusted location on the operator's word", real)
        return "trusted by the operator (trust=true)"
    raise BundleRefused(
        f"bundle '{label}' refused: {real} is not under a trusted bundle folder (the plugin's "
        f"samples, the MONAI bundle cache, {TRUST_ENV} or {TRUST_FILE} in the vlm config "
        f"folder); add its folder to {TRUST_ENV} or pass trust=true if you trust its source"
    )


def inside(path: Path, root: Path) -> bool:
    """True when ``path`` (symlinks followed) lies inside ``root``."""
    real, base = path.resolve(), root.resolve()
    return real == base or base in real.parents


# ---------------------------------------------------------------------------------------------
# Reading the config: safe loaders and macro expansion


def load_config_file(path: Path, root: Path, label: str) -> Any:
    """A JSON or YAML file of the bundle, read without constructing any Python object."""
    if not inside(path, root):
        raise BundleRefused(f"bundle '{label}' refused: {path} resolves outside the bundle folder")
    if not path.is_file():
        raise BundleError(f"bundle '{label}': no such config file {path}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise BundleRefused(
            f"bundle '{label}' refused: {path.name} is larger than {MAX_CONFIG_BYTES} bytes"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"bundle '{label}': {path.name} is not UTF-8 text") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except ValueError as exc:  # json.JSONDecodeError
        raise BundleError(f"bundle '{label}': {path.name} is not valid JSON ({exc})") from None
    except Exception as exc:  # yaml.YAMLError and its constructor errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"bundle '{label}': {path.name} is not valid YAML ({first})") from None


def read_bundle_config(config: Path, metadata: Path | None, root: Path, label: str) -> dict:
    """The config as MONAI would see it (metadata under ``_meta_``), ``%`` macros expanded.

    Macros may only name ``.json``/``.yaml``/``.yml`` files inside ``root`` (relative paths are
    looked up from the bundle folder, then from its ``configs`` folder); they are expanded
    recursively, up to :data:`MAX_MACRO_DEPTH` levels.
    """
    from monai.bundle import ConfigParser

    meta = load_config_file(metadata, root, label) if metadata is not None else {}
    content = load_config_file(config, root, label)
    if not isinstance(content, dict) or not isinstance(meta, dict):
        raise BundleError(f"bundle '{label}': {config.name} must hold a mapping at the top level")
    tree = {"_meta_": meta, **content}
    _count_nodes(tree, label)
    files: dict[Path, Any] = {}

    def source(path_text: str, key: str) -> Any:
        raw = Path(path_text)
        candidates = [raw] if raw.is_absolute() else [root / raw, config.parent / raw]
        path = next((p for p in candidates if p.is_file()), candidates[0])
        if not inside(path, root):
            raise BundleRefused(
                f"bundle '{label}' refused: config key '{key}' includes '{path_text}', which "
                "is outside the bundle folder"
            )
        real = path.resolve()
        if real not in files:
            files[real] = load_config_file(real, root, label)
        return files[real]

    budget = [MAX_CONFIG_NODES]

    def expand(value: Any, key: str, whole: Any, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise BundleRefused(
                f"bundle '{label}' refused: its config has more than {MAX_CONFIG_NODES} entries "
                "once its '%' macros are expanded"
            )
        if isinstance(value, dict):
            return {k: expand(v, _join(key, k), whole, depth) for k, v in value.items()}
        if isinstance(value, list):
            return [expand(v, _join(key, i), whole, depth) for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        try:
            value = ConfigParser.resolve_relative_ids(key, value)
        except ValueError as exc:
            raise BundleError(f"bundle '{label}': config key '{key}': {exc}") from None
        if not value.startswith("%"):
            return value
        if depth >= MAX_MACRO_DEPTH:
            raise BundleRefused(
                f"bundle '{label}' refused: config key '{key}' nests '%' macros more than "
                f"{MAX_MACRO_DEPTH} deep"
            )
        path_text, ids = ConfigParser.split_path_id(value[1:])
        origin = source(path_text, key) if path_text else whole
        included = copy.deepcopy(_lookup(origin, ids, key, label))
        return expand(included, key, origin, depth + 1)

    return expand(tree, "", tree, 0)


def _join(key: str, sub: Any) -> str:
    return f"{key}::{sub}" if key else str(sub)


def _lookup(config: Any, ids: str, key: str, label: str) -> Any:
    current = config
    for part in [p for p in ids.replace("#", "::").split("::") if p] if ids else []:
        try:
            current = current[int(part)] if isinstance(current, list) else current[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise BundleError(
                f"bundle '{label}': config key '{key}' includes '{ids}', which does not exist"
            ) from None
    return current


def _count_nodes(tree: Any, label: str) -> None:
    if sum(1 for _ in islice(_walk(tree), MAX_CONFIG_NODES + 1)) > MAX_CONFIG_NODES:
        raise BundleRefused(
            f"bundle '{label}' refused: its config has more than {MAX_CONFIG_NODES} entries"
        )


def _walk(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """Every (id, value) of a config tree, ids as MONAI writes them (``a::b::0``)."""
    yield key, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, _join(key, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, _join(key, i))


# ---------------------------------------------------------------------------------------------
# Resolving names inside the allowed packages


def _denied(dotted: str) -> str | None:
    for prefix, why in DENIED.items():
        if dotted == prefix or dotted.startswith(prefix + "."):
            return why
    return None


def _home(obj: Any) -> str:
    """The module an object comes from."""
    if isinstance(obj, ModuleType):
        return obj.__name__
    for candidate in (obj, getattr(obj, "__objclass__", None), getattr(obj, "__self__", None)):
        module = getattr(candidate, "__module__", None) if candidate is not None else None
        if isinstance(module, str):
            return module
    return type(obj).__module__


def _is_plain_data(obj: Any) -> bool:
    return obj is None or type(obj) in (bool, int, float, complex, str, bytes)


def _check_object(obj: Any, written: str) -> None:
    if _is_plain_data(obj):
        return
    home = _home(obj)
    qualname = getattr(obj, "__qualname__", None)
    canonical = f"{home}.{qualname}" if isinstance(qualname, str) else home
    if home.split(".")[0] not in ALLOWED_ROOTS:
        raise _Unsafe(f"reaches '{written}', which is '{canonical}', outside {_roots()}")
    why = _denied(canonical)
    if why:
        raise _Unsafe(f"reaches '{written}' ({canonical}), which {why}")


def _check_written(dotted: str) -> None:
    parts = dotted.split(".")
    if parts[0] not in ALLOWED_ROOTS:
        raise _Unsafe(f"reaches '{dotted}', outside {_roots()}")
    for part in parts:
        if not part.isidentifier() or part.startswith("_"):
            raise _Unsafe(f"reaches the private or malformed name '{part}' in '{dotted}'")
        if part in DENIED_ATTRS:
            raise _Unsafe(f"reaches '{dotted}' ('{part}' is never allowed)")
    why = _denied(dotted)
    if why:
        raise _Unsafe(f"reaches '{dotted}', which {why}")


def resolve_attribute_path(dotted: str) -> Any:
    """The object ``dotted`` names by attribute access from its package, if allowed."""
    _check_written(dotted)
    parts = dotted.split(".")
    obj: Any = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=2):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            if not isinstance(obj, ModuleType):
                raise _Unsafe(f"names '{dotted}', which does not exist") from None
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                raise _Unsafe(f"names '{dotted}', which does not exist") from None
    _check_object(obj, dotted)
    return obj


def resolve_target(name: str) -> Any:
    """The callable a ``_target_`` string names, exactly as MONAI would locate it, if allowed."""
    module = _locator().get_component_module_name(name)
    if isinstance(module, list):  # MONAI takes the first of several: every one must pass
        for other in module[1:]:
            _check_written(f"{other}.{name}")
        module = module[0]
    if module:
        dotted = f"{module}.{name}"
    elif "." in name:
        dotted = name
    elif name in SAFE_TARGET_BUILTINS:
        return getattr(builtins, name)
    else:
        raise _Unsafe(
            f"names '{name}', which is not a MONAI component, a dotted name in {_roots()} or "
            "an allowed builtin"
        )
    _check_written(dotted)
    obj = pydoc.locate(dotted)
    if obj is None:
        raise _Unsafe(f"names '{dotted}', which does not exist")
    _check_object(obj, dotted)
    if isinstance(obj, ModuleType) or not callable(obj):
        raise _Unsafe(f"names '{dotted}', which is not callable")
    return obj


@cache
def _locator() -> Any:
    from monai.bundle import ComponentLocator

    return ComponentLocator()


def _roots() -> str:
    return "the allow-list (" + ", ".join(f"{r}.*" for r in ALLOWED_ROOTS) + ", safe builtins)"


def safe_builtins() -> dict[str, Any]:
    """The ``__builtins__`` bundle expressions run with."""
    names = SAFE_BUILTINS | {"setattr", "True", "False", "None"}
    return {name: getattr(builtins, name) for name in sorted(names)}


# ---------------------------------------------------------------------------------------------
# The static scan


def expression_code(value: str) -> str:
    """The Python source MONAI evaluates for the ``$`` string ``value`` (references rewritten
    to ``__local_refs['id']``), without the ``$``."""
    from monai.bundle.reference_resolver import ReferenceResolver

    refs = ReferenceResolver.match_refs_pattern(value)
    return str(ReferenceResolver.update_refs_pattern(value, dict.fromkeys(refs)))[1:]


def scan_config(config: dict, label: str) -> int:
    """Check every ``$`` expression, ``_target_``, ``_mode_`` and macro in ``config``.

    Returns:
        The number of ``$`` expressions plus the number of components checked.

    Raises:
        BundleRefused: on the first violation, naming the config key and the offending name.
    """
    scanner = _Scanner()
    entries = list(_walk(config))
    checked = 0
    for key, value in entries:  # imports first: MONAI runs all of them before anything else
        if isinstance(value, str) and value.startswith("$"):
            try:
                scanner.imports(value)
            except _Unsafe as exc:
                raise BundleRefused(f"bundle '{label}' refused: config key '{key}' {exc}") from None
    for key, value in entries:
        try:
            if isinstance(value, dict) and "_target_" in value:
                scanner.component(key, value)
                checked += 1
            elif isinstance(value, str) and value.startswith("$"):
                scanner.expression(value)
                checked += 1
            elif isinstance(value, str) and value.startswith("%"):
                raise _Unsafe(f"holds the unexpanded macro '{value[:80]}'")
        except _Unsafe as exc:
            raise BundleRefused(f"bundle '{label}' refused: config key '{key}' {exc}") from None
    return checked


class _Scanner:
    def __init__(self) -> None:
        self.aliases: dict[str, str] = dict(DEFAULT_GLOBALS)

    # -- imports -------------------------------------------------------------------------------
    def imports(self, value: str) -> int:
        """Record a ``$import`` / ``$from ... import`` (returns 1), else return 0."""
        code = expression_code(value)
        try:
            tree = ast.parse(code, mode="exec")
        except SyntaxError:
            return 0  # reported as an expression in the second pass
        if not tree.body or not isinstance(tree.body[0], ast.Import | ast.ImportFrom):
            if any(isinstance(n, ast.Import | ast.ImportFrom) for n in ast.walk(tree)):
                raise _Unsafe("holds an import that is not a single import statement")
            return 0
        node = tree.body[0]
        if len(tree.body) > 1 or len(node.names) > 1:
            raise _Unsafe("holds more than one statement or import; write one import per key")
        alias = node.names[0]
        if isinstance(node, ast.ImportFrom):
            if node.level or not node.module or alias.name == "*":
                raise _Unsafe(f"holds the import '{code.strip()}', which is not allowed")
            target = f"{node.module}.{alias.name}"
        else:
            target = alias.name
        if not (target in STDLIB_IMPORTS or _stdlib_name(target)):
            if target.split(".")[0] not in ALLOWED_ROOTS:
                raise _Unsafe(f"imports '{target}', outside {_roots()}")
            resolve_attribute_path(target)
        bound = alias.asname or alias.name
        if bound in SAFE_BUILTINS or bound in ("setattr", REFS):
            raise _Unsafe(f"imports '{target}' under the builtin name '{bound}'")
        if self.aliases.get(bound, target) != target and bound not in DEFAULT_GLOBALS:
            raise _Unsafe(f"binds '{bound}' to '{target}' and to '{self.aliases[bound]}'")
        self.aliases[bound] = target
        return 1

    # -- components ----------------------------------------------------------------------------
    def component(self, key: str, value: dict) -> None:
        target = value["_target_"]
        if not isinstance(target, str):
            raise _Unsafe(f"has a _target_ of type {type(target).__name__}; it must be a name")
        if not target.startswith(("$", "@")):
            resolve_target(target)  # expressions and references are checked where they stand
        mode = value.get("_mode_", "default")
        if not isinstance(mode, str) or mode.strip().lower() not in ALLOWED_MODES:
            raise _Unsafe(f"asks for _mode_ '{mode}'; only 'default' and 'callable' are allowed")
        if value.get("_debug_"):
            raise _Unsafe("asks for _debug_, which starts a debugger")
        for arg, setting in value.items():
            if FETCH_KEY.match(str(arg)) and setting not in (False, None, "", 0, "false", "False"):
                raise _Unsafe(
                    f"sets '{arg}', which makes '{target}' fetch weights by itself; the "
                    "bundle's models/ file is loaded instead"
                )

    # -- expressions ---------------------------------------------------------------------------
    def expression(self, value: str) -> None:
        code = expression_code(value)
        try:
            module = ast.parse(code, mode="exec")
        except SyntaxError as exc:
            raise _Unsafe(f"is not valid Python ({exc.msg})") from None
        if len(module.body) == 1 and isinstance(module.body[0], ast.Import | ast.ImportFrom):
            return  # checked by imports()
        try:
            tree = ast.parse(code.strip(), mode="eval")
        except SyntaxError:
            raise _Unsafe("is not a single Python expression") from None
        self.visit(tree.body, frozenset())

    def visit(self, node: ast.AST, local: frozenset[str]) -> None:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str | bytes) and "__" in str(node.value):
                raise _Unsafe(f"uses the text {node.value!r}, which names a dunder")
        elif isinstance(node, ast.Name):
            self.name(node.id, local)
        elif isinstance(node, ast.Attribute):
            self.attribute(node, local)
        elif isinstance(node, ast.Subscript) and _is_reference(node):
            return
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id == "setattr":
                if node.func.id in local:
                    raise _Unsafe("shadows 'setattr'")
                self.setattr_call(node, local)
                return
            for keyword in node.keywords:
                value = keyword.value
                fetch = keyword.arg is not None and FETCH_KEY.match(keyword.arg)
                if fetch and not (isinstance(value, ast.Constant) and not value.value):
                    raise _Unsafe(f"passes '{keyword.arg}', which makes a network fetch weights")
            for child in ast.iter_child_nodes(node):
                self.visit(child, local)
        elif isinstance(node, ast.Lambda):
            args = node.args
            for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
                self.visit(default, local)
            params = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            self.visit(node.body, local | {a.arg for a in params if a is not None})
        elif isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            scope = local
            for gen in node.generators:
                if gen.is_async:
                    raise _Unsafe("uses an async comprehension")
                self.visit(gen.iter, scope)
                scope = scope | _target_names(gen.target)
                for condition in gen.ifs:
                    self.visit(condition, scope)
            parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            for part in parts:
                self.visit(part, scope)
        elif isinstance(node, _STRUCTURAL):
            for child in ast.iter_child_nodes(node):
                self.visit(child, local)
        else:
            raise _Unsafe(f"uses the Python construct '{type(node).__name__}', not allowed")

    def name(self, name: str, local: frozenset[str]) -> None:
        if name in local:
            return
        if name in self.aliases:
            self.dotted(self.aliases[name], as_value=True)
            return
        if name in SAFE_BUILTINS:
            return
        raise _Unsafe(f"uses the name '{name}', which is not allowed")

    def attribute(self, node: ast.Attribute, local: frozenset[str]) -> None:
        chain: list[str] = []
        base: ast.AST = node
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        chain.reverse()
        for attr in chain:
            if attr.startswith("_"):
                raise _Unsafe(f"uses the private attribute '{attr}'")
            if attr in DENIED_ATTRS:
                raise _Unsafe(f"uses the attribute '{attr}', which is never allowed")
        if isinstance(base, ast.Name) and base.id not in local and base.id in self.aliases:
            self.dotted(".".join([self.aliases[base.id], *chain]), as_value=True)
        else:
            self.visit(base, local)

    def dotted(self, dotted: str, *, as_value: bool) -> None:
        root = dotted.split(".")[0]
        if root in ALLOWED_ROOTS:
            obj = resolve_attribute_path(dotted)
            if as_value and isinstance(obj, ModuleType):
                raise _Unsafe(f"uses the module '{dotted}' as a value; name what it holds")
        elif _stdlib_name(dotted) or (dotted in STDLIB_IMPORTS and not as_value):
            return
        else:
            raise _Unsafe(f"reaches '{dotted}', outside {_roots()}")

    def setattr_call(self, node: ast.Call, local: frozenset[str]) -> None:
        """``setattr(<allowed module or reference>, '<public name>', <constant>)`` only, as in
        MONAI's ``setattr(torch.backends.cudnn, 'benchmark', True)``."""
        shape_ok = len(node.args) == 3 and not node.keywords
        name = node.args[1] if shape_ok else None
        value = node.args[2] if shape_ok else None
        if not (
            isinstance(name, ast.Constant)
            and isinstance(name.value, str)
            and name.value.isidentifier()
            and not name.value.startswith("_")
            and isinstance(value, ast.Constant)
            and _is_plain_data(value.value)
        ):
            raise _Unsafe("calls setattr other than as setattr(obj, 'public_name', constant)")
        if name.value in DENIED_ATTRS:
            raise _Unsafe(f"sets the attribute '{name.value}', which is never allowed")
        self.visit(value, local)
        obj = node.args[0]
        dotted = _dotted_name(obj)
        if dotted and dotted.split(".")[0] in self.aliases and dotted.split(".")[0] not in local:
            head, _, rest = dotted.partition(".")
            full = ".".join(p for p in (self.aliases[head], rest) if p)
            if not full.startswith(SETATTR_MODULES):
                raise _Unsafe(f"sets an attribute of '{full}'; only {SETATTR_MODULES} may be set")
            self.dotted(full, as_value=False)
        else:
            self.visit(obj, local)


_STRUCTURAL = (
    ast.Tuple, ast.List, ast.Set, ast.Dict, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare,
    ast.IfExp, ast.Slice, ast.Starred, ast.JoinedStr, ast.FormattedValue, ast.keyword,
    ast.Subscript, ast.expr_context, ast.operator, ast.unaryop, ast.boolop, ast.cmpop,
)  # fmt: skip


def _stdlib_name(dotted: str) -> bool:
    parts = dotted.split(".")
    if dotted in STDLIB_NAMES:
        return True
    return len(parts) == 2 and parts[0] in STDLIB_OPEN and not parts[1].startswith("_")


def _is_reference(node: ast.Subscript) -> bool:
    return (
        isinstance(node.value, ast.Name)
        and node.value.id == REFS
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, str)
    )


def _target_names(target: ast.AST) -> set[str]:
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, ast.Tuple | ast.List):
        return set().union(*(_target_names(t) for t in target.elts))
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    raise _Unsafe(f"assigns to '{type(target).__name__}' in a comprehension")


def _dotted_name(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])
