"""The `vlm` command line.

Exit codes: 0 success; 1 a task, plugin, environment (a full disk) or internal failure, and a
run in which the plugin crashed on some inputs (the others' results are kept); 2 a bad
request (unknown task, bad parameter, bad input, usage, an output folder another run holds);
130 interrupted. Errors print one line on stderr, control characters escaped; ``--debug`` (or
``VLM_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import os
import sys

import click

from vlm_core.cli.app import cli


def _debug(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("VLM_DEBUG", "") in ("1", "true", "yes")


def _openmp_waits_passively() -> None:
    """Unless the user chose (``OMP_WAIT_POLICY``), torch's OpenMP workers sleep when they
    wait instead of spinning first: a run reads and writes files in threads beside the model,
    and a spinning worker takes the core those threads need, in CPU time and in wall time
    (`vlm bench --pipeline`: the model's CPU time per input varied 3x under load with
    spinning, and the pipeline ratio is measured under this policy on both sides). Must run
    before torch is imported; a `vlm dashboard` inherits it."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `vlm` console script.

    Without ``argv`` (the console script, ``python -m vlm_core.cli``) the process is the
    command's own, and it ends through :func:`~vlm_core.cli.quick_exit.quick_exit`, skipping
    the interpreter's teardown (0.5 to 2 s after a run imported torch). With ``argv`` (tests,
    notebooks) it raises ``SystemExit`` like any command.
    """
    _openmp_waits_passively()
    if argv is not None:
        _main(list(argv))
        return
    from vlm_core.cli.quick_exit import quick_exit

    try:
        _main(sys.argv[1:])
    except SystemExit as exc:
        quick_exit(exc.code)
    quick_exit(0)


def _main(argv: list[str]) -> None:
    try:
        cli.main(args=argv, prog_name="vlm", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # one line for users, the traceback in debug mode
        from vlm_core.errors import VLMError, describe_exception, disk_full
        from vlm_core.outdir import printable

        if _debug(argv):
            import traceback

            traceback.print_exc()
        known = disk_full(exc) or exc
        if isinstance(known, VLMError):
            click.echo(f"error: {printable(str(known))}", err=True)
            sys.exit(known.exit_code)
        click.echo(
            f"error: internal error: {printable(describe_exception(exc))} (rerun with --debug)",
            err=True,
        )
        sys.exit(1)
