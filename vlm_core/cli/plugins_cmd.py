"""`vlm plugins ...`: list, inspect, switch on and off, install, validate and scaffold plugins."""

from __future__ import annotations

from pathlib import Path

import click

from vlm_core.cli.output import STATUS_STYLE, emit_json, table


@click.group("plugins")
def plugins() -> None:
    """Manage plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(as_json: bool) -> None:
    """List installed plugins with their status and tasks (failed ones with their reason)."""
    from vlm_core.plugins import get_registry

    records = sorted(get_registry().plugins.values(), key=lambda r: r.name)
    if as_json:
        emit_json([r.to_json() for r in records])
        return
    if not records:
        click.echo("No plugins installed. Install one with `vlm plugins install NAME`.")
        return
    table(
        None,
        ["plugin", "version", "status", "tasks", "reason"],
        [
            (
                r.name,
                r.version or "-",
                STATUS_STYLE[r.status],
                ", ".join(r.tasks) or "-",
                f"{r.stage}: {r.error}" if r.stage else r.error,
            )
            for r in records
        ],
    )


@plugins.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info_cmd(name: str, as_json: bool) -> None:
    """Show one plugin: distribution, version, module, status and tasks."""
    from vlm_core.plugins import get_registry

    registry = get_registry()
    record = registry.plugin(name)
    data = record.to_json()
    data["task_titles"] = {t: registry.tasks[t].title for t in record.tasks if t in registry.tasks}
    if as_json:
        emit_json(data)
        return
    click.echo(
        f"{record.name} ({record.distribution or 'in-process'} {record.version or ''})".rstrip()
    )
    click.echo(f"module: {record.module}\nstatus: {record.status}")
    if record.error:
        click.echo(f"reason: {record.stage}: {record.error}")
    for task_id, title in data["task_titles"].items():
        click.echo(f"  {task_id}: {title}")


@plugins.command("enable")
@click.argument("name")
def enable_cmd(name: str) -> None:
    """Enable a plugin (also clears a quarantine after a crash)."""
    from vlm_core.config import edit_user_config
    from vlm_core.plugins import get_registry

    get_registry().plugin(name)
    with edit_user_config() as config:
        config.disabled.discard(name)
        config.quarantined.pop(name, None)
    click.echo(f"enabled plugin '{name}'")


@plugins.command("disable")
@click.argument("name")
def disable_cmd(name: str) -> None:
    """Disable a plugin: it stays installed but is not loaded."""
    from vlm_core.config import edit_user_config
    from vlm_core.plugins import get_registry

    get_registry().plugin(name)
    with edit_user_config() as config:
        config.disabled.add(name)
    click.echo(f"disabled plugin '{name}'")


@plugins.command("install", context_settings={"ignore_unknown_options": True})
@click.argument("specs", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Allow changing the installed torch or vlm-core.")
@click.option(
    "--pip-arg",
    "pip_args",
    multiple=True,
    help="Extra argument for pip (e.g. --pip-arg=--no-index); repeatable.",
)
def install_cmd(specs: tuple[str, ...], force: bool, pip_args: tuple[str, ...]) -> None:
    """Install plugin packages with pip (names, paths or wheels)."""
    from vlm_core.pipwrap import install

    click.echo(install(specs, force=force, pip_args=pip_args))


@plugins.command("uninstall")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Allow removing torch or vlm-core.")
def uninstall_cmd(names: tuple[str, ...], force: bool) -> None:
    """Uninstall plugins by plugin name or distribution name."""
    from vlm_core.pipwrap import uninstall
    from vlm_core.plugins import get_registry

    plugins_ = get_registry().plugins
    dists = [plugins_[n].distribution or n if n in plugins_ else n for n in names]
    click.echo(uninstall(dists, force=force))


@plugins.command("validate")
@click.argument("names", nargs=-1)
@click.option("--quick", is_flag=True, help="Check specs and hooks only; do not run samples.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def validate_cmd(names: tuple[str, ...], quick: bool, as_json: bool) -> None:
    """Run the conformance check on plugins (all when none are named); exit 1 on a problem."""
    from vlm_core.plugins import get_registry
    from vlm_core.testing.conformance import check_plugin

    registry = get_registry()
    targets = list(names) or sorted(registry.plugins)
    reports = [
        check_plugin(registry.plugin(n).name, registry=registry, run_samples=not quick)
        for n in targets
    ]
    if as_json:
        emit_json([r.to_json() for r in reports])
    else:
        for r in reports:
            click.echo(f"{r.plugin}: {'ok' if r.ok else 'FAILED'} ({len(r.checks)} checks)")
            for problem in r.problems:
                click.echo(f"  - {problem}")
    if not all(r.ok for r in reports):
        raise SystemExit(1)


@plugins.command("new")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder in which to create vlm-NAME/.",
)
def new_cmd(name: str, directory: Path) -> None:
    """Scaffold an installable plugin: pyproject, one example task, tests, README."""
    from vlm_core.scaffold import scaffold_plugin

    root = scaffold_plugin(name, directory)
    click.echo(f"created {root}\nnext: pip install -e {root} && pytest {root}")
