"""One way to load a task's trained network: resolve, verify, build, load, place, cache.

A plugin declares once how its network is made from the card its training wrote
(:class:`ModelRecipe`), and every run, evaluation or fine-tune loads it with
:func:`load_model` (a task's run passes its context: ``ctx=ctx``)::

    from vlm_core.weights import ModelRecipe, load_model

    SEGMENTER = ModelRecipe(
        task="medical.segment",
        name="segment",
        build=lambda card: build_network(card["architecture"]),
        default=default_weights,  # the bundled weights/segment-unet3d/model.safetensors
    )

    def run(inputs, params, ctx):
        loaded = load_model(params.weights, SEGMENTER, ctx=ctx)  # "" = the bundled weights
        network, class_names = loaded.module, loaded.card["class_names"]

The steps, each the core's own:

1. **resolve** the reference the user gave (a ``vlm train`` output folder, a checkpoint
   folder, a weights file, a URL, ``hf-hub:org/repo/model.safetensors``; the sidecar of a hub
   file is fetched beside it) or, when empty, the plugin's bundled weights;
2. **verify** the file against the sha256 its ``model.json`` sidecar records, and that the
   sidecar was written for the recipe's task;
3. **build** the module from the card with the recipe's builder;
4. **load** the tensors safely (safetensors, or ``torch.load(weights_only=True)``) and fit them
   strictly (:func:`~vlm_core.weights.load_into`);
5. **place** it on the device in eval mode without gradients (prepared by the runtime policy
   when one is given: channels-last, weight casting, ``torch.compile``);
6. **cache** it in the process's :func:`~vlm_core.runtime.cache.model_cache`, keyed by
   (task and model name, sha256, device, dtype), evicted under the cache's memory budget.

Weights a parameter names that cannot be used are the request's fault
(:class:`~vlm_core.weights.WeightsRequestError`, exit 2), with one message form for every
plugin; the bundled weights failing are the plugin's (:class:`~vlm_core.weights.WeightsError`,
exit 1). torch is imported only when a model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from vlm_core.deploy.formats import format_of
from vlm_core.errors import ParameterError, VLMError
from vlm_core.weights.errors import ChecksumError, WeightsError, requested
from vlm_core.weights.hashing import sha256_of
from vlm_core.weights.layout import MODEL_FILE, SIDECAR_FILE, read_sidecar
from vlm_core.weights.load import load_into, load_state_dict
from vlm_core.weights.refs import parse_ref
from vlm_core.weights.resolve import resolve

if TYPE_CHECKING:
    import torch
    from pydantic import BaseModel
    from torch import nn

    from vlm_core.familiarity import Familiarity, Ood
    from vlm_core.runtime.cache import CacheKey
    from vlm_core.runtime.policy import RuntimePolicy
    from vlm_core.tasks import RunContext

log = logging.getLogger(__name__)

ParamsT = TypeVar("ParamsT", bound="BaseModel")

#: ``build(card) -> nn.Module``: a fresh module (random weights) of the card's architecture.
ModelBuilder = Callable[[Mapping[str, Any]], "nn.Module"]
#: ``adapt(state, card) -> state``: the tensors of the file as the module's ``load_state_dict``
#: takes them (select, rename, reshape). When they cannot be, raise :class:`WeightsError` with
#: the problem alone ("holds no generator weights"): the core says which file, for which plugin.
StateAdapter = Callable[[dict[str, "torch.Tensor"], Mapping[str, Any]], dict[str, "torch.Tensor"]]


@dataclass(frozen=True)
class ModelRecipe:
    """How a plugin's network is made from its weights: what a plugin declares once, per
    network, for :func:`load_model`."""

    #: the task the weights must be trained for (checked against the sidecar's ``task``); its
    #: plugin is named in every error
    task: str
    #: builds the module from the card (``model.json``'s ``card``: the architecture, class
    #: names, vocabulary... as the task's training builder recorded them)
    build: ModelBuilder
    #: the network's name: the model cache's key, the provenance's ``weights_sha256`` key
    name: str = "model"
    #: the weights the plugin ships (a path, usually ``package_file(...)``), loaded when the
    #: request names none; None: the task ships none and a reference is required
    default: Callable[[], str] | None = None
    #: card entries the builder needs; weights whose card lacks one are refused
    needs: tuple[str, ...] = ("architecture",)
    #: the card of weights that carry none (pretrained files of another library); a sidecar's
    #: card wins over it
    card: Mapping[str, Any] | None = field(default=None, hash=False)
    #: maps the file's tensors to what the module loads (None: as they are)
    adapt: StateAdapter | None = None
    #: dotted attribute of the built module that the tensors load into ("" the module itself),
    #: e.g. a GAN's ``generator`` when only the generator's weights ship
    part: str = ""

    @property
    def plugin(self) -> str:
        return self.task.split(".", 1)[0]


@dataclass(eq=False)
class LoadedModel:
    """A trained network ready to run, with where its weights came from.

    ``module`` is the network itself (eval mode, no gradients, on the device); ``model`` is
    what to call, the same module unless the runtime policy compiled it. Callers that change
    the module's state for one call (thresholds, hooks) hold ``lock`` while they do: cached
    models are shared by concurrent runs.
    """

    module: nn.Module
    model: Any
    sha256: str
    path: Path
    sidecar: dict[str, Any]
    recipe: ModelRecipe
    policy: RuntimePolicy | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _familiarity: Any = field(default=None, repr=False)

    @property
    def familiarity(self) -> Familiarity | None:
        """The familiarity model fitted with these weights (``familiarity.safetensors``
        beside them, checked against the sha256 ``model.json`` records), or None for weights
        that have none (a hub checkpoint, weights trained before vlm fitted one): their
        results say ``ood = None``. Read once and kept with the cached model."""
        if self._familiarity is None:
            self._familiarity = familiarity_of(self.path, self.sidecar) or False
        return self._familiarity or None

    def judge(self, features: Any) -> list[Ood | None]:
        """The familiarity verdict of each row of (N, D) ``features`` (pooled features of the
        layers the familiarity model was fitted on; a
        :class:`~vlm_core.familiarity.FeatureTap` captures them): N ``None`` when the
        weights have no familiarity model."""
        model = self.familiarity
        if model is None:
            return [None] * len(features)
        return list(model.judge(features))

    @property
    def card(self) -> dict[str, Any]:
        """The card the weights carry (or the recipe's, for files without one)."""
        return dict(self.sidecar.get("card") or self.recipe.card or {})

    @property
    def params(self) -> dict[str, Any]:
        """The task parameters the weights were trained with (empty when not recorded)."""
        return dict(self.sidecar.get("params") or {})

    def run_params(self, params: ParamsT) -> ParamsT:
        """The run's ``params`` with the settings these weights were made for (their card's
        ``inference`` entry, e.g. a sliding window's ``roi``) wherever the user gave none:
        what `vlm run` uses, so that it gives what `vlm eval` measured."""
        from vlm_core.params import under_given

        return under_given(params, self.card.get("inference"), owner=f"weights {self.path}")

    @property
    def exported(self) -> str:
        """The format of an exported network (``"onnx"``, ``"pt2"``: ``module`` runs the
        file, tensors in and out, and has no parameters, hooks or gradients), or "" for torch
        weights."""
        from vlm_core.deploy.formats import format_of

        return format_of(self.path)

    @property
    def device(self) -> torch.device:
        import torch

        first = next(self.module.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    @property
    def nbytes(self) -> int:
        """What the model cache counts against its budget."""
        from vlm_core.runtime.cache import module_nbytes

        if self.exported:
            return self.path.stat().st_size
        return module_nbytes(self.module)


def load_model(
    weights: str,
    recipe: ModelRecipe,
    *,
    device: str = "cpu",
    policy: RuntimePolicy | None = None,
    param: str = "weights",
    fresh: bool = False,
    ctx: RunContext | None = None,
) -> LoadedModel:
    """The network of ``recipe`` with the weights ``weights`` names, through the model cache.

    Args:
        weights: what the request named (a training or checkpoint folder, a weights file, a
            URL, an ``hf-hub:`` reference); empty: the recipe's bundled weights.
        recipe: how the network is built and which task's weights it takes.
        device: the torch device to place it on (ignored when ``policy`` is given).
        policy: the runtime policy that prepares the module (device, channels-last, weight
            dtype, ``torch.compile``); None: eval mode in float32 on ``device``.
        param: the name of the parameter ``weights`` came from, named in its errors.
        fresh: a module of its own, to train or change (fine-tuning, a feature network that
            training moves to its device): left in train mode with gradients on the CPU, and
            never cached.
        ctx: the run loading it (a task's ``run``): its device (instead of ``device``), and
            the weights' sha256 recorded in its provenance under ``recipe.name``.

    Returns:
        The loaded model. Two calls with the same weights file, device and dtype return the
        same module while the cache holds it.

    Raises:
        WeightsRequestError: the weights ``weights`` names cannot be used (missing, corrupt,
            another sha256 than their sidecar records, made for another task or network, no
            card): the request's fault, exit 2.
        WeightsError: the same for the bundled weights: the plugin's fault, exit 1.
        ParameterError: ``weights`` is empty and the recipe ships no weights.
    """
    ref = weights or _default(recipe, param)
    with requested(param, weights):
        path, sidecar, sha = _verified(ref, recipe)
        if format_of(path):
            _check_exported(path, sidecar, recipe, fresh)
    if ctx is not None:
        ctx.record_weights(recipe.name, sha)
    if fresh:
        return _loaded(path, sidecar, sha, recipe, None, weights, param, fresh=True)
    if policy is None:
        from vlm_core.devices import resolve_device

        dtype, where = "float32", resolve_device(ctx.device if ctx is not None else device)
    else:
        dtype, where = policy.dtype_name, str(policy.device)
    key = _cache_key(recipe, sha, where, dtype, policy, sidecar)

    def build() -> LoadedModel:
        log.info("loading %s (%s) on %s", recipe.name, path, where)
        return _loaded(path, sidecar, sha, recipe, policy, weights, param, device=where)

    from vlm_core.runtime.cache import model_cache

    cache = model_cache()
    loaded: LoadedModel = cache.acquire(key, build)
    cache.release(key)  # stays cached (LRU) but evictable between runs; the caller holds it
    with requested(param, weights):  # its familiarity file, checked with the weights
        loaded.familiarity  # noqa: B018
    return loaded


def _default(recipe: ModelRecipe, param: str) -> str:
    if recipe.default is None:
        raise ParameterError(
            f"{param} is empty and {recipe.task} ships no weights; name a `vlm train` output "
            "folder, a checkpoint or a weights file"
        )
    return str(recipe.default())


def _verified(ref: str, recipe: ModelRecipe) -> tuple[Path, dict[str, Any], str]:
    """The file of ``ref``, its sidecar and its sha256, after checking the sha256 the sidecar
    records, the task it was trained for and the card entries the recipe needs."""
    plugin = recipe.plugin
    path = resolve(ref, plugin=plugin)
    sidecar = read_sidecar(path)
    if sidecar is None:
        sidecar = _hub_sidecar(ref, path, plugin)
    if not sidecar and format_of(path):
        raise WeightsError(
            f"{path} has no {SIDECAR_FILE} beside it; an exported network runs with the "
            f"sidecar `vlm export` wrote (its task and card)",
            plugin=plugin,
            filename=path.name,
            hint=f"copy the whole `vlm export {recipe.task}` output folder",
        )
    found = sha256_of(path)
    expected = (sidecar.get("files") or {}).get(path.name)
    if expected and expected != found:
        raise ChecksumError(
            f"sha256 mismatch: {path} has sha256 {found}, not the one its {SIDECAR_FILE} records",
            found=found,
            plugin=plugin,
            filename=path.name,
            sha256=str(expected),
            hint="the file is corrupt or was replaced; train, copy or fetch it again",
        )
    trained_for = sidecar.get("task")
    if trained_for and trained_for != recipe.task:
        raise WeightsError(
            f"{path} was trained for task '{trained_for}', not '{recipe.task}'",
            plugin=plugin,
            filename=path.name,
            hint=f"give weights that `vlm train {recipe.task}` wrote",
        )
    card = sidecar.get("card") or recipe.card or {}
    missing = [entry for entry in recipe.needs if entry not in card]
    if missing:
        load_state_dict(path, sha256=found, plugin=plugin)  # not weights at all: say that first
        raise WeightsError(
            f"{path} has no {' or '.join(missing)} in the card of its {SIDECAR_FILE}, so the "
            f"network of {recipe.task} cannot be built from it",
            plugin=plugin,
            filename=path.name,
            hint=f"give the output folder or a checkpoint of `vlm train {recipe.task}`, or its "
            f"{MODEL_FILE} with the {SIDECAR_FILE} beside it",
        )
    return path, sidecar, found


def _hub_sidecar(ref: str, path: Path, plugin: str) -> dict[str, Any]:
    """The sidecar of a file fetched from a Hugging Face repo: ``model.json`` beside it in the
    repo, fetched into the same snapshot folder ({} when the repo has none)."""
    source = parse_ref(ref, plugin=plugin)
    if source.kind != "hf-hub":
        return {}
    folder = (source.path_in_repo or MODEL_FILE).rpartition("/")[0]
    sibling = f"{folder}/{SIDECAR_FILE}" if folder else SIDECAR_FILE
    revision = f"@{source.revision}" if source.revision else ""
    try:
        resolve(f"hf-hub:{source.target}/{sibling}{revision}", plugin=plugin)
    except WeightsError as exc:
        log.info("%s has no %s beside it: %s", ref, SIDECAR_FILE, exc.problem)
        return {}
    return read_sidecar(path) or {}


def _cache_key(
    recipe: ModelRecipe,
    sha: str,
    device: str,
    dtype: str,
    policy: RuntimePolicy | None,
    sidecar: Mapping[str, Any],
) -> CacheKey:
    from vlm_core.familiarity.model import FAMILIARITY_FILE
    from vlm_core.runtime.cache import CacheKey

    name = f"{recipe.task}:{recipe.name}"
    # the same tensors with another card (a temperature, class names) or another familiarity
    # model (or none) are another cached model: what a run reads of them differs
    card = json.dumps(sidecar.get("card") or {}, sort_keys=True, default=str).encode("utf-8")
    name += f"[card={hashlib.sha256(card).hexdigest()[:12]}]"
    familiar = (sidecar.get("files") or {}).get(FAMILIARITY_FILE)
    if familiar:
        name += f"[familiarity={str(familiar)[:16]}]"
    if policy is not None:
        name += (
            f"[compile={policy.compile},channels_last={policy.channels_last},"
            f"cast={policy.cast_weights}]"
        )
    return CacheKey(name, sha, device, dtype)


def _built(recipe: ModelRecipe, card: dict[str, Any], path: Path) -> nn.Module:
    """``recipe.build(card)``, a card it cannot build from said as a weights problem."""
    try:
        return recipe.build(card)
    except VLMError:
        raise
    except (KeyError, ValueError, TypeError) as exc:
        raise WeightsError(
            f"the card of {path} does not describe a network {recipe.task} can build "
            f"({type(exc).__name__}: {exc})",
            plugin=recipe.plugin,
            filename=path.name,
            hint=f"give weights that `vlm train {recipe.task}` wrote",
        ) from None


def _adapted(
    adapt: StateAdapter,
    state: dict[str, torch.Tensor],
    card: dict[str, Any],
    path: Path,
    plugin: str,
) -> dict[str, torch.Tensor]:
    """``adapt(state, card)``; a problem it raises without naming a file is said of ``path``."""
    try:
        return adapt(state, card)
    except WeightsError as exc:
        if exc.filename:
            raise
        raise WeightsError(
            f"{path}: {exc.problem}", plugin=plugin, filename=path.name, hint=exc.hint
        ) from None


def _loaded(
    path: Path,
    sidecar: dict[str, Any],
    sha: str,
    recipe: ModelRecipe,
    policy: RuntimePolicy | None,
    weights: str,
    param: str,
    *,
    device: str = "cpu",
    fresh: bool = False,
) -> LoadedModel:
    plugin = recipe.plugin
    card = dict(sidecar.get("card") or recipe.card or {})
    if format_of(path):
        with requested(param, weights):
            return _exported(path, sidecar, sha, recipe, device)
    with requested(param, weights):
        module = _built(recipe, card, path)
        state = load_state_dict(path, sha256=sha, plugin=plugin)
        if recipe.adapt is not None:
            state = _adapted(recipe.adapt, state, card, path, plugin)
        target = module.get_submodule(recipe.part) if recipe.part else module
        load_into(target, state, plugin=plugin, source=path)
    if fresh:
        return LoadedModel(module.train(), module, sha, path, sidecar, recipe)
    if policy is not None:
        from vlm_core.runtime.policy import prepare_model

        model = prepare_model(module, policy)
    else:
        module.eval().requires_grad_(False).to(device)
        model = module
    return LoadedModel(module, model, sha, path, sidecar, recipe, policy)


def _check_exported(path: Path, sidecar: dict[str, Any], recipe: ModelRecipe, fresh: bool) -> None:
    """Refuse an exported network where the caller needs more than the export holds."""
    export = dict(sidecar.get("export") or {})
    if fresh:
        raise WeightsError(
            f"{path} is an exported network; it cannot be trained or fine-tuned",
            plugin=recipe.plugin,
            filename=path.name,
            hint="give the torch weights it was exported from",
        )
    network = export.get("network", recipe.name)
    if not export.get("runs", True) or network != recipe.name:
        what = str(export.get("note") or f"part of {recipe.task}'s {network}")
        raise WeightsError(
            f"{path} cannot run as {recipe.task}'s {recipe.name}: the export holds {what}",
            plugin=recipe.plugin,
            filename=path.name,
            hint="run with the torch weights; the export is for deployment elsewhere",
        )


def _exported(
    path: Path,
    sidecar: dict[str, Any],
    sha: str,
    recipe: ModelRecipe,
    device: str,
) -> LoadedModel:
    """An exported network (`vlm export`'s ONNX or ``.pt2``) as a loaded model: ``module`` runs
    the file."""
    from vlm_core.deploy.programs import load_program

    try:
        module = load_program(path, device)
    except ValueError as exc:
        raise WeightsError(str(exc), plugin=recipe.plugin, filename=path.name) from None
    return LoadedModel(module, module, sha, path, sidecar, recipe)


def familiarity_of(path: Path, sidecar: Mapping[str, Any]) -> Familiarity | None:
    """The familiarity model beside weights file ``path`` that its sidecar lists, checked
    against the sha256 the sidecar records (None when it lists none).

    Raises:
        WeightsError: the file does not match its sha256 or cannot be read.
    """
    from vlm_core.familiarity.model import FAMILIARITY_FILE, Familiarity, FamiliarityError

    sha = (sidecar.get("files") or {}).get(FAMILIARITY_FILE)
    if not sha:
        return None
    where = path.parent / FAMILIARITY_FILE
    if not where.is_file():
        log.warning("%s lists %s, which is missing: no familiarity check", path, FAMILIARITY_FILE)
        return None
    try:
        return Familiarity.load(where, sha256=str(sha))
    except FamiliarityError as exc:
        raise WeightsError(
            str(exc),
            plugin=str(sidecar.get("plugin") or "core"),
            filename=FAMILIARITY_FILE,
            hint="the file is corrupt or was replaced; fit it again with `vlm train TASK "
            "--fit-ood-only`",
        ) from None
