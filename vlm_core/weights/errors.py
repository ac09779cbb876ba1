"""The exceptions the weights package raises, and whose fault they are.

Weights a plugin ships or declares that cannot be used are the plugin's (or the machine's)
problem: :class:`WeightsError`, exit 1. Weights the user named in a parameter that cannot be
used (missing, not a weights file, refused, made for another network) are a bad request:
inside :func:`requested` a :class:`WeightsError` becomes a :class:`WeightsRequestError`, exit 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from vlm_core.errors import ParameterError, VLMError


class WeightsError(VLMError):
    """Weights cannot be found, fetched, verified, extracted or loaded safely.

    The message names the plugin that asked, the file, the sha256 it should have and what to
    do, for example::

        plugin 'driving': weights 'model.safetensors' (expected sha256 3f2a…): not in the vlm
        weights store or the local caches and downloading is off (VLM_OFFLINE=1); copy the file
        to this machine and run `vlm weights import PATH`, or unset VLM_OFFLINE

    Args:
        problem: what went wrong, without the plugin/file prefix.
        plugin: the plugin on whose behalf the weights were requested (``"core"`` by default).
        filename: the weights file (or archive) concerned, when there is one.
        sha256: the expected sha256 (64 hex digits), when one is pinned.
        hint: what the user can do about it; appended after a semicolon.
        mention_sha: say "no sha256 pinned" when ``sha256`` is None (resolution errors do, so
            that the user knows which file to bring).
    """

    def __init__(
        self,
        problem: str,
        *,
        plugin: str = "core",
        filename: str | None = None,
        sha256: str | None = None,
        hint: str = "",
        mention_sha: bool = False,
    ) -> None:
        subject = f"plugin '{plugin}'"
        if filename:
            subject += f": weights '{filename}'"
        if sha256:
            subject += f" (expected sha256 {sha256})"
        elif mention_sha:
            subject += " (no sha256 pinned)"
        message = f"{subject}: {problem}"
        if hint:
            message += f"; {hint}"
        super().__init__(message)
        self.plugin = plugin
        self.filename = filename
        self.sha256 = sha256
        self.problem = problem
        self.hint = hint


class ChecksumError(WeightsError):
    """A file's sha256 differs from the expected one; ``found`` holds the file's digest."""

    def __init__(
        self,
        problem: str,
        *,
        found: str,
        plugin: str = "core",
        filename: str | None = None,
        sha256: str | None = None,
        hint: str = "",
    ) -> None:
        super().__init__(problem, plugin=plugin, filename=filename, sha256=sha256, hint=hint)
        self.found = found


class WeightsRequestError(WeightsError, ParameterError):
    """Weights that a parameter of the request names cannot be used: a bad request (exit 2).

    The message is the parameter and its value, then the :class:`WeightsError` it replaces::

        weights='/data/w.safetensors': plugin 'art': weights 'w.safetensors' (no sha256
        pinned): no such file: /data/w.safetensors; check the path
    """

    def __init__(self, param: str, value: str, cause: WeightsError) -> None:
        super().__init__(
            cause.problem,
            plugin=cause.plugin,
            filename=cause.filename,
            sha256=cause.sha256,
            hint=cause.hint,
        )
        self.args = (f"{param}={value!r}: {cause}",)
        self.param = param
        self.value = value


@contextmanager
def requested(param: str, value: object) -> Iterator[None]:
    """Make weights errors inside the block the request's fault when ``value`` is set.

    Wrap what resolves, loads and fits the weights that parameter ``param`` names::

        with requested("weights", params.weights):
            trained = load_trained(params.weights or default_weights(), plugin="art")
            load_into(network, trained.state_dict, source=trained.path)

    An empty ``value`` means the plugin's own default weights: their errors pass unchanged.
    """
    if not value:
        yield
        return
    try:
        yield
    except WeightsRequestError:
        raise
    except WeightsError as exc:
        raise WeightsRequestError(param, str(value), exc) from exc
