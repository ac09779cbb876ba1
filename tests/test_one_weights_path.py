"""One path for a task's trained network (`vlm_core.weights.load_model`): no plugin loads,
fits or caches weights its own way; every plugin's bad weights= gives the same one-line error
(exit 2); and every plugin's network is built once per weights file, device and dtype."""

from __future__ import annotations

import ast
import importlib
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO, cli, pip_install_target

from vlm_core.errors import ParameterError
from vlm_core.runtime.cache import model_cache
from vlm_core.tasks import RunContext
from vlm_core.weights import LoadedModel, ModelRecipe, WeightsError, WeightsRequestError, load_model

PLUGIN_SOURCES = sorted(REPO.glob("plugins/*/vlm_*/**/*.py"))
SAMPLES = {name: REPO / "plugins" / name / f"vlm_{name}" / "samples" for name in
           ("art", "caption", "driving", "medical")}  # fmt: skip

#: (plugin, task to run, its inputs, other parameters, module:recipe of its network)
PLUGINS = [
    ("art", "art.generate", [], {"count": "1"}, "vlm_art.generate:GENERATOR"),
    ("caption", "caption.describe", [SAMPLES["caption"] / "teapot-crack.png"], {},
     "vlm_caption.model:CAPTIONER"),
    ("driving", "driving.detect", [SAMPLES["driving"] / "street.png"], {},
     "vlm_driving.detector:DETECTOR"),
    ("medical", "medical.classify", [SAMPLES["medical"] / "synthetic-lesion-32.nii.gz"], {},
     "vlm_medical.classify:CLASSIFIER"),
]  # fmt: skip
IDS = [p[0] for p in PLUGINS]

#: loading calls a plugin must leave to the core
FORBIDDEN_CALLS = {"torch.load", "load_state_dict", "load_file", "safe_open"}
#: what a module-level model cache is called
MODELISH = re.compile(
    r"model|network|detector|captioner|generator|classifier|backbone|encoder|loaded", re.I
)
#: what it holds
MODEL_TYPES = re.compile(MODELISH.pattern + r"|Module", re.I)


def _recipe(where: str) -> ModelRecipe:
    module, _, name = where.partition(":")
    recipe = getattr(importlib.import_module(module), name)
    assert isinstance(recipe, ModelRecipe)
    return recipe


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _value_type(annotation: ast.expr) -> str:
    """What a mapping annotation holds (``V`` of ``dict[K, V]``), else the annotation."""
    if isinstance(annotation, ast.Subscript) and isinstance(annotation.slice, ast.Tuple):
        return ast.unparse(annotation.slice.elts[-1])
    return ast.unparse(annotation)


def loading_problems(source: str, where: str) -> list[str]:
    """What in a plugin module loads, fits or caches weights outside the core's one path."""
    tree = ast.parse(source)
    found: list[str] = []
    core_loaders = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vlm_core.")
        for alias in node.names
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            last = name.rsplit(".", 1)[-1]
            core = name in core_loaders  # the core's safe loader, imported from vlm_core
            if name == "torch.load" or (last in FORBIDDEN_CALLS - {"torch.load"} and not core):
                found.append(f"{where}:{node.lineno} calls {name}()")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("safetensors"):
            loads = [a.name for a in node.names if a.name in {"load", "load_file", "safe_open"}]
            if loads:
                found.append(f"{where}:{node.lineno} imports {', '.join(loads)} from safetensors")
    for node in tree.body:  # module level only
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            is_map = isinstance(value, ast.Dict) or (
                isinstance(value, ast.Call)
                and _dotted(value.func).rsplit(".", 1)[-1]
                in {"dict", "OrderedDict", "WeakValueDictionary", "defaultdict"}
            )
            names = " ".join(_dotted(t) for t in targets)
            holds = _value_type(node.annotation) if isinstance(node, ast.AnnAssign) else ""
            modelish = MODEL_TYPES.search(holds) if holds else MODELISH.search(names)
            if is_map and (re.search(r"cache|loaded", names, re.I) or modelish):
                found.append(f"{where}:{node.lineno} keeps models in module-level {names}")
        if isinstance(node, ast.FunctionDef):
            cached = any(
                _dotted(d.func if isinstance(d, ast.Call) else d).rsplit(".", 1)[-1]
                in {"lru_cache", "cache"}
                for d in node.decorator_list
            )
            returns = ast.unparse(node.returns) if node.returns else ""
            if cached and (MODELISH.search(node.name) or MODEL_TYPES.search(returns)):
                found.append(f"{where}:{node.lineno} caches {node.name}() with functools")
    return found


def test_no_plugin_loads_fits_or_caches_weights_its_own_way() -> None:
    assert len(PLUGIN_SOURCES) > 40  # the four plugins' packages are there
    problems = [
        p
        for path in PLUGIN_SOURCES
        for p in loading_problems(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    ]
    assert problems == []


@pytest.mark.parametrize(
    "source",
    [
        "import torch\nstate = torch.load('w.pt')\n",
        "from safetensors.torch import load_file\n",
        "def f(net, state):\n    net.load_state_dict(state)\n",
        "from torch.nn import Module\nfit = Module.load_state_dict\nModule.load_state_dict(n, s)\n",
        "_loaded: dict[str, object] = {}\n",
        "_MODELS = dict()\n",
        "import functools\n@functools.lru_cache\ndef load_network(path): ...\n",
        "from functools import cache\n@cache\ndef weights(path) -> 'nn.Module': ...\n",
    ],
)
def test_the_source_check_finds_each_kind_of_own_loading(source: str) -> None:
    assert loading_problems(source, "x.py")


def test_the_source_check_lets_other_module_state_be() -> None:
    """Caches of what is not a model (a knowledge base, layer names) are no model cache."""
    source = (
        "from functools import lru_cache\nfrom safetensors.torch import save_file\n"
        "_CAM_LAYERS: dict[tuple[str, int], str] = {}\n"
        "NETWORKS: dict[str, dict[str, Any]] = {'unet': {}}\n"
        "from vlm_core.weights import load_state_dict\nstate = load_state_dict(path)\n"
        "@lru_cache(maxsize=8)\ndef _load(path: str) -> KnowledgeBase: ...\n"
    )
    assert loading_problems(source, "x.py") == []


# ---------------------------------------------------------------------------------------------
# one error form for weights a request names


def _bundled_folder(recipe: ModelRecipe) -> Path:
    assert recipe.default is not None
    path = Path(recipe.default())
    return path if path.is_dir() else path.parent


def bad_weights(plugin_recipe: ModelRecipe, bad: str, root: Path) -> Path:
    """A missing file; a corrupt file (not safetensors) beside the bundled model.json without
    its hashes; or a checkpoint folder whose file is not the one its sidecar's sha256 names
    (the bundled file with a byte flipped)."""
    bundled = _bundled_folder(plugin_recipe)
    if bad == "missing":
        return root / "nowhere" / "model.safetensors"
    if bad == "corrupt":
        sidecar = json.loads((bundled / "model.json").read_text())
        sidecar.pop("files")
        (root / "corrupt").mkdir()
        (root / "corrupt" / "model.json").write_text(json.dumps(sidecar))
        (root / "corrupt" / "model.safetensors").write_bytes(bytes(range(256)) * 16)
        return root / "corrupt" / "model.safetensors"
    shutil.copytree(bundled, root / "wrong-sha")
    data = bytearray((root / "wrong-sha" / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (root / "wrong-sha" / "model.safetensors").write_bytes(bytes(data))
    return root / "wrong-sha"


#: The one form of each error, whatever the plugin (VALUE: what weights= gave; SHA: a digest).
FORMS = {
    "missing": "error: weights='VALUE': plugin 'PLUGIN': weights 'model.safetensors' (no sha256 "
    "pinned): no such file: VALUE; check the path",
    "corrupt": "error: weights='VALUE': plugin 'PLUGIN': weights 'model.safetensors': VALUE is "
    "not a valid safetensors file: its header length field says 506097522914230528 bytes but "
    "only 4088 follow (truncated, or not a safetensors file); the file is truncated, corrupt or "
    "not weights; fetch or import it again",
    "wrong-sha": "error: weights='VALUE': plugin 'PLUGIN': weights 'model.safetensors' (expected "
    "sha256 SHA): sha256 mismatch: VALUE/model.safetensors has sha256 SHA, not the one its "
    "model.json records; the file is corrupt or was replaced; train, copy or fetch it again",
}


def _form(message: str, plugin: str, value: Path) -> str:
    """The message with what differs between plugins (name, paths, digests) taken out."""
    form = message.replace(str(value), "VALUE").replace(f"'{plugin}'", "'PLUGIN'")
    return re.sub(r"\b[0-9a-f]{64}\b", "SHA", form)


@pytest.mark.parametrize("bad", list(FORMS))
@pytest.mark.parametrize(("plugin", "task", "inputs", "extra", "where"), PLUGINS, ids=IDS)
def test_bad_weights_give_one_error_form_and_exit_2_in_every_plugin(
    plugin: str, task: str, inputs: list[Path], extra: dict[str, str], where: str, bad: str,
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:  # fmt: skip
    value = bad_weights(_recipe(where), bad, tmp_path)
    options = [a for k, v in {**extra, "weights": value}.items() for a in ("-p", f"{k}={v}")]
    out = tmp_path / "out"
    code, _, err = cli(["run", task, *map(str, inputs), *options, "--out", str(out)], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert _form(lines[0], plugin, value) == FORMS[bad]
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# one cache


@pytest.mark.parametrize(("plugin", "task", "where"), [(p[0], p[1], p[4]) for p in PLUGINS],
                         ids=IDS)  # fmt: skip
def test_two_runs_with_the_same_weights_share_one_cached_network(
    plugin: str, task: str, where: str
) -> None:
    recipe = _recipe(where)
    cache = model_cache()
    first_ctx, second_ctx = RunContext(task, plugin), RunContext(task, plugin)
    first = load_model("", recipe, ctx=first_ctx)
    before = cache.stats()
    second = load_model("", recipe, ctx=second_ctx)
    after = cache.stats()
    assert second.module is first.module and isinstance(second, LoadedModel)
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)
    assert not first.module.training and first.sha256 == second.sha256
    assert all(not p.requires_grad for p in first.module.parameters())
    assert second_ctx.weights_sha256 == {recipe.name: first.sha256}  # in the provenance
    fresh = load_model("", recipe, fresh=True)
    assert fresh.module is not first.module and fresh.module.training
    assert cache.stats().misses == after.misses  # a fresh module is never cached


def test_the_bundled_weights_failing_are_the_plugins_fault(tmp_path: Path) -> None:
    recipe = ModelRecipe(task="art.generate", build=lambda card: None,  # type: ignore[arg-type,return-value]
                         default=lambda: str(tmp_path / "gone.safetensors"))  # fmt: skip
    with pytest.raises(WeightsError) as info:
        load_model("", recipe)
    assert not isinstance(info.value, WeightsRequestError) and info.value.exit_code == 1
    assert "plugin 'art'" in str(info.value) and "no such file" in str(info.value)
    with pytest.raises(ParameterError, match="ships no weights"):
        load_model("", ModelRecipe(task="art.generate", build=lambda card: None))  # type: ignore[arg-type,return-value]


def test_weights_for_another_task_are_refused() -> None:
    art = _bundled_folder(_recipe("vlm_art.generate:GENERATOR"))
    with pytest.raises(WeightsRequestError, match=r"trained for task 'art.generate', not "
                       r"'caption.describe'") as info:  # fmt: skip
        load_model(str(art), _recipe("vlm_caption.model:CAPTIONER"))
    assert str(info.value).startswith(f"weights='{art}': plugin 'caption': ")


@pytest.mark.parametrize(
    "sidecar",
    sorted(REPO.glob("plugins/*/vlm_*/weights/*/model.json")),
    ids=lambda p: f"{p.parents[3].name}/{p.parent.name}",
)
def test_shipped_weights_name_no_path_of_the_machine_that_trained_them(sidecar: Path) -> None:
    from vlm_core.weights.trained import portable_sidecar

    data = json.loads(sidecar.read_text(encoding="utf-8"))
    assert portable_sidecar(data) == data
    assert "card" in data and "files" in data  # what load_model verifies and builds from


def test_a_scaffolded_plugin_installs_its_default_weights(tmp_path: Path) -> None:
    """The scaffold declares weights/**/* as package data: a real pip install carries them
    (without it a wheel would leave them out and the task would fail once installed)."""
    from vlm_core.scaffold import scaffold_plugin

    root = scaffold_plugin("hello", tmp_path)
    shipped = root / "vlm_hello" / "weights" / "net"
    shipped.mkdir(parents=True)
    (shipped / "model.safetensors").write_bytes(b"weights")
    (shipped / "model.json").write_text("{}")
    site = tmp_path / "site"
    pip_install_target([root], site)
    installed = site / "vlm_hello" / "weights" / "net"
    assert (installed / "model.safetensors").read_bytes() == b"weights"
    assert (installed / "model.json").is_file()
