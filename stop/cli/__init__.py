"""The `stop` command line: one module per area defines its click commands; this one adds them.

Data goes to stdout, progress and logs to stderr. Exit codes: 0 ok, 1 error, 2 usage,
3 `stop audit --fail-on` found something at or above the level.
"""

from __future__ import annotations

import os
import sys

import click

from stop.cli import audit, doctor, experiment, model, report, run, runs, sandbox, tasks, ui
from stop.cli.safe import echo
from stop.errors import StopError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stop")
def cli() -> None:
    """stop: a self-taught optimizer that improves code, and itself, inside a sandbox."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


for _command in (
    run.run_cmd, runs.runs_cmd, runs.show_cmd, runs.diff_cmd, runs.replay_cmd,
    tasks.tasks_group, tasks.score_cmd,
    audit.audit, experiment.experiment,
    report.transfer, report.report, report.compare,
    model.model_group, doctor.doctor, ui.ui_cmd,
):
    cli.add_command(_command)
sandbox.register(cli)


def main() -> None:
    try:
        code = cli.main(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Abort:
        echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except StopError as e:
        echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        echo("interrupted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
