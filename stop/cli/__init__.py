"""The `stop` command line. Each area registers its commands from its own module.

Data goes to stdout, progress and logs to stderr. Exit codes: 0 ok, 1 error, 2 usage,
3 `stop audit --fail-on` found something at or above the level.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from stop.errors import StopError

AREAS = (
    "stop.cli.run",
    "stop.cli.sandbox",
    "stop.cli.tasks",
    "stop.cli.model",
    "stop.cli.audit",
    "stop.cli.report",
    "stop.cli.doctor",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stop")
def cli() -> None:
    """stop: a self-taught optimizer that improves code, and itself, inside a sandbox."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


for _area in AREAS:
    importlib.import_module(_area).register(cli)


def main() -> None:
    try:
        code = cli.main(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except StopError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
