"""The one exception the weights package raises."""

from __future__ import annotations

from vlm_core.errors import VLMError


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
