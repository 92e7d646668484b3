"""CLI command: ui (the runs, rounds, audit findings and experiments in a browser)."""

from __future__ import annotations

import click

from stop.cli.safe import echo
from stop.paths import cache_dir, runs_dir
from stop.ui.server import serve


@click.command("ui", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback is reachable from elsewhere.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on; 0 takes a free one.")
@click.option("--open", "open_browser", is_flag=True, help="Open the URL in a web browser.")
def ui_cmd(host: str, port: int, open_browser: bool) -> None:
    """Browse runs, rounds, audit findings and experiments in a web browser, read-only.

    Prints a URL with a random token; every request needs it (a cookie keeps it after the
    first visit). Running runs update live. Nothing is written into the runs folder; the
    run index is a cache under the cache dir that can be deleted at any time.
    """
    serve(runs_dir(), cache_dir(), host=host, port=port, open_browser=open_browser,
          say=lambda line: echo(line), note=lambda line: echo(line, err=True))
