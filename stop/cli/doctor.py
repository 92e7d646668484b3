"""CLI commands: doctor."""

from __future__ import annotations

import json
import sys

import click

from stop.cli import checks as doc
from stop.cli.safe import echo


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option("--ray-address", "ray_address", metavar="ADDRESS",
              help="Also check this Ray cluster (HOST:PORT or auto): its docker nodes, their "
                   "sandbox slots and the sandbox image on each.")
def doctor(as_json: bool, ray_address: str | None) -> None:
    """Check Python, the Docker engine, the sandbox image, the model; name each fix.

    Exits 1 when something the configured model (STOP_MODEL, default: the embedded one)
    needs is missing.
    """

    checks = doc.run_checks(ray_address)
    ok = doc.healthy(checks)
    if as_json:
        echo(json.dumps({"ok": ok, "checks": [c.to_dict() for c in checks]}, indent=2))
    else:
        echo(doc.render(checks))
    if not ok:
        # sys.exit, not ctx.exit: the CLI runs click with standalone_mode=False, where an
        # Exit's code is returned rather than used.
        sys.exit(1)
