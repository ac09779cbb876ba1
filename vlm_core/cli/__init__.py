"""The `vlm` command line.

Exit codes: 0 success; 1 a task, plugin or internal failure; 2 a bad request (unknown task,
bad parameter, bad input, usage); 130 interrupted. Errors print one line on stderr; ``--debug``
(or ``VLM_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import os
import sys

import click

from vlm_core.cli.app import cli


def _debug(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("VLM_DEBUG", "") in ("1", "true", "yes")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `vlm` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
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
        from vlm_core.errors import VLMError, describe_exception

        if _debug(argv):
            import traceback

            traceback.print_exc()
        if isinstance(exc, VLMError):
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        click.echo(
            f"error: internal error: {describe_exception(exc)} (rerun with --debug)", err=True
        )
        sys.exit(1)
