"""`vlm weights ...`: list, fetch, verify and import model weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vlm_core.cli.output import emit_json, table

if TYPE_CHECKING:
    from vlm_core.tasks import WeightsRef
    from vlm_core.weights import WeightsError

_STATUS_STYLE = {
    "present": "[green]present[/]",
    "ok": "[green]ok[/]",
    "missing": "[yellow]missing[/]",
    "unpinned": "[yellow]unpinned[/]",
    "mismatch": "[red]mismatch[/]",
    "error": "[red]error[/]",
    "failed": "[red]failed[/]",
}


@click.group("weights")
def weights() -> None:
    """List, fetch, verify and import model weights (see docs/weights.md)."""


def _declared(task_ids: Sequence[str] = ()) -> list[tuple[str, WeightsRef]]:
    """(task id, weights) for the named tasks, or for every installed task when none."""
    from vlm_core.plugins import get_registry

    registry = get_registry()
    specs = (
        [registry.task(t) for t in task_ids]
        if task_ids
        else sorted(registry.tasks.values(), key=lambda s: s.id)
    )
    return [(spec.id, ref) for spec in specs for ref in spec.weights]


def _short(sha256: str | None) -> str:
    return sha256[:12] if sha256 else "-"


#: `vlm weights list` hashes a present file no sidecar describes up to this size (bigger ones
#: would make the listing slow; `vlm weights verify` hashes every file).
HASH_ON_LIST_BYTES = 512 * 2**20


def _present_sha256(path: Path, declared: str | None) -> tuple[str | None, str | None]:
    """The sha256 of a present weights file and where it comes from: the task's declaration,
    the ``model.json`` that `vlm train`/`vlm weights ship` wrote beside it, or the file itself
    (hashed once per process, up to :data:`HASH_ON_LIST_BYTES`)."""
    from vlm_core.weights import sha256_of
    from vlm_core.weights.layout import read_sidecar

    if declared:
        return declared, "declared"
    recorded = ((read_sidecar(path) or {}).get("files") or {}).get(path.name)
    if isinstance(recorded, str) and len(recorded) == 64:
        return recorded, "sidecar"
    if path.stat().st_size <= HASH_ON_LIST_BYTES:
        return sha256_of(path), "file"
    return None, None


def _raise_failures(failures: list[WeightsError], total: int, verb: str) -> None:
    """Raise the only failure as is, or one line counting several (the first one in full)."""
    if not failures:
        return
    if len(failures) == 1:
        raise failures[0]
    from vlm_core.errors import VLMError

    raise VLMError(f"{len(failures)} of {total} weights {verb}; the first: {failures[0]}")


@weights.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(as_json: bool) -> None:
    """List the weights installed tasks declare (present or missing) and the weights store.

    Nothing is downloaded: present means in the store, at its local path or in a cache. The
    sha256 is the declared one, else the one recorded beside the file (model.json), else the
    file's own (files over 512 MiB without either: `vlm weights verify` hashes them).
    """
    from vlm_core.weights import WeightsError, list_store, locate, store_dir

    rows: list[dict[str, Any]] = []
    for task_id, ref in _declared():
        plugin = task_id.split(".", 1)[0]
        error = ""
        try:
            path = locate(ref, plugin=plugin)
        except WeightsError as exc:
            path, error = None, exc.problem
        sha256, sha256_from = (
            _present_sha256(path, ref.sha256) if path else (ref.sha256, "declared")
        )
        rows.append(
            {
                "task": task_id,
                "name": ref.name,
                "filename": ref.filename,
                "source": ref.source,
                "sha256": sha256,
                "sha256_from": sha256_from if sha256 else None,
                "size_mb": ref.size_mb,
                "status": "error" if error else "present" if path else "missing",
                "path": str(path) if path else None,
                "error": error or None,
            }
        )
    listed = {r["path"] for r in rows}
    for entry in list_store():
        if str(entry.path) in listed:
            continue
        rows.append(
            {
                "task": None,
                "name": entry.filename,
                "filename": entry.filename,
                "source": "store",
                "sha256": entry.sha256,
                "sha256_from": "store",
                "size_mb": round(entry.size_bytes / 1e6, 3),
                "status": "present",
                "path": str(entry.path),
                "error": None,
            }
        )
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo(
            f"No weights: installed tasks declare none and the store ({store_dir()}) is empty. "
            "Add files with `vlm weights import PATH`."
        )
        return
    table(
        None,
        ["task", "weights", "status", "sha256", "where"],
        [
            (
                r["task"] or "(store)",
                r["name"],
                _STATUS_STYLE[r["status"]],
                _short(r["sha256"]),
                r["error"] or r["path"] or r["source"] or r["filename"],
            )
            for r in rows
        ],
    )


@weights.command("fetch")
@click.argument("refs", nargs=-1)
@click.option(
    "--task", "task_ids", multiple=True, help="Fetch the weights this task declares; repeatable."
)
@click.option("--sha256", default=None, help="Expected sha256 of the one REF given.")
@click.option("--plugin", default="core", show_default=True, help="Plugin named in errors.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def fetch_cmd(
    refs: tuple[str, ...],
    task_ids: tuple[str, ...],
    sha256: str | None,
    plugin: str,
    as_json: bool,
) -> None:
    """Resolve weights to local files, downloading into the standard caches when online.

    REFS are paths, URLs, hf-hub:, timm:, open_clip: or torchvision: references. With no REFS
    and no --task, fetches every weight that installed tasks declare.
    """
    from vlm_core.errors import UsageError
    from vlm_core.weights import WeightsError, resolve, sha256_of

    if sha256 and len(refs) != 1:
        raise UsageError("--sha256 needs exactly one REF")
    targets: list[tuple[str | None, str | WeightsRef, str]] = [(None, r, plugin) for r in refs]
    if task_ids or not refs:
        targets += [(t, ref, t.split(".", 1)[0]) for t, ref in _declared(task_ids)]
    if not targets:
        click.echo("Nothing to fetch: installed tasks declare no weights. Name some: REF...")
        return
    rows: list[dict[str, Any]] = []
    failures: list[WeightsError] = []
    for task_id, ref, owner in targets:
        label = ref if isinstance(ref, str) else ref.name
        try:
            path = resolve(ref, plugin=owner, sha256=sha256 if isinstance(ref, str) else None)
        except WeightsError as exc:
            failures.append(exc)
            rows.append({"task": task_id, "ref": label, "status": "failed", "error": exc.problem})
            continue
        rows.append(
            {
                "task": task_id,
                "ref": label,
                "status": "ok",
                "path": str(path.absolute()),
                "sha256": sha256_of(path),
            }
        )
    if as_json:
        emit_json(rows)
    else:
        for r in rows:
            if r["status"] == "ok":
                who = f"{r['task']}: {r['ref']}" if r["task"] else r["ref"]
                click.echo(f"{who}: {r['path']} (sha256 {r['sha256']})")
    _raise_failures(failures, len(rows), "could not be fetched")


@weights.command("verify")
@click.argument("targets", nargs=-1)
@click.option("--sha256", default=None, help="Expected sha256 of the one TARGET given.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def verify_cmd(targets: tuple[str, ...], sha256: str | None, as_json: bool) -> None:
    """Re-hash weights and compare them with their expected sha256 (exit 1 on a mismatch).

    TARGETS are local files or references (never downloaded). With none, checks every file in
    the weights store and every declared weight that is present.
    """
    from vlm_core.errors import UsageError
    from vlm_core.fileio import sha256_file
    from vlm_core.weights import ChecksumError, WeightsError, list_store, locate, normalize_sha256

    if sha256 and len(targets) != 1:
        raise UsageError("--sha256 needs exactly one TARGET")
    expected_arg = normalize_sha256(sha256)
    rows: list[dict[str, Any]] = []
    failures: list[WeightsError] = []

    def check(label: str, ref: str | WeightsRef, plugin: str, expected: str | None) -> None:
        pinned = expected or (None if isinstance(ref, str) else normalize_sha256(ref.sha256))
        row: dict[str, Any] = {"weights": label, "expected": pinned, "path": None, "sha256": None}
        local = Path(ref).expanduser() if isinstance(ref, str) else None
        try:  # a file named by its path is checked itself, not a stored copy of its content
            if local is not None and local.is_file():
                path: Path | None = local
            else:
                path = locate(ref, plugin=plugin, sha256=expected)
        except ChecksumError as exc:
            failures.append(exc)
            rows.append({**row, "status": "mismatch", "sha256": exc.found, "error": exc.problem})
            return
        except WeightsError as exc:
            failures.append(exc)
            rows.append({**row, "status": "error", "error": exc.problem})
            return
        if path is None:
            if targets:  # asked for by name: its absence is a failure
                failures.append(WeightsError(f"{label} is not on this machine", plugin=plugin))
            rows.append({**row, "status": "missing"})
            return
        found = sha256_file(path)  # a fresh read, even of store files
        status = "unpinned" if pinned is None else "ok" if found == pinned else "mismatch"
        if status == "mismatch":
            failures.append(
                ChecksumError(
                    f"sha256 mismatch: {path} has sha256 {found}",
                    found=found,
                    plugin=plugin,
                    filename=path.name,
                    sha256=pinned,
                    hint="the file is corrupt; delete it and fetch or import it again",
                )
            )
        rows.append({**row, "status": status, "path": str(path), "sha256": found})

    for target in targets:
        check(target, target, "core", expected_arg)
    if not targets:
        for entry in list_store():
            check(f"(store) {entry.filename}", str(entry.path), "core", entry.sha256)
        for task_id, ref in _declared():
            check(f"{task_id}: {ref.name}", ref, task_id.split(".", 1)[0], None)
    if as_json:
        emit_json(rows)
    elif rows:
        table(
            None,
            ["weights", "status", "sha256", "path"],
            [
                (
                    r["weights"],
                    _STATUS_STYLE[r["status"]],
                    r.get("sha256") or "-",
                    r.get("error") or r.get("path") or "-",
                )
                for r in rows
            ],
        )
    else:
        click.echo("Nothing to verify: the weights store is empty and no task declares weights.")
    _raise_failures(failures, len(rows), "failed verification")


@weights.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--sha256", default=None, help="Expected sha256 of the one PATH given.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def import_cmd(paths: tuple[Path, ...], sha256: str | None, as_json: bool) -> None:
    """Copy weights files into the vlm weights store (hashed, verified, atomic).

    `resolve` finds stored files by sha256 before anything else, offline included: bring the
    files to an offline machine and import them here.
    """
    from vlm_core.errors import UsageError
    from vlm_core.weights import import_file

    if sha256 and len(paths) != 1:
        raise UsageError("--sha256 needs exactly one PATH")
    entries = [import_file(p, sha256=sha256) for p in paths]
    if as_json:
        emit_json(
            [
                {"source": str(p), "path": str(e.path), "sha256": e.sha256, "bytes": e.size_bytes}
                for p, e in zip(paths, entries, strict=True)
            ]
        )
        return
    for p, e in zip(paths, entries, strict=True):
        click.echo(f"imported {p} as {e.path} (sha256 {e.sha256})")


@weights.command("ship")
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for model.safetensors and model.json (a plugin's weights/NAME/).",
)
@click.option(
    "--checkpoint",
    type=click.Choice(["best", "last"]),
    default="best",
    show_default=True,
    help="Which checkpoint of a training folder.",
)
@click.option(
    "--keep",
    "prefixes",
    multiple=True,
    metavar="PREFIX",
    help="Keep only the tensors whose names start with PREFIX (repeatable; default: all).",
)
@click.option("--plugin", default="core", show_default=True, help="Plugin named in errors.")
def ship_cmd(
    source: Path, target: Path, checkpoint: str, prefixes: tuple[str, ...], plugin: str
) -> None:
    """Copy SOURCE (a `vlm train` output folder or one checkpoint folder) into --to as float32
    safetensors with its sidecar and the new file's sha256: how a plugin ships the default
    weights it trained."""
    from vlm_core.weights.trained import ship_trained

    keep = (lambda name: name.startswith(prefixes)) if prefixes else None
    model, tensors = ship_trained(source, target, which=checkpoint, keep=keep, plugin=plugin)
    click.echo(f"{model}: {tensors} tensors, {model.stat().st_size / 2**20:.2f} MiB")
