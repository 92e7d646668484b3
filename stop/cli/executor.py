"""The options of every command that executes candidates: where the sandboxes run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from stop.cluster.connect import EXECUTORS, ClusterError
from stop.cluster.executor import open_executor
from stop.sandbox import Sandbox


def executor_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--executor local|ray and --ray-address ADDRESS (see docs/cluster.md)."""
    f = click.option(
        "--ray-address", "ray_address", metavar="ADDRESS",
        help="With --executor ray: the cluster's head (HOST:PORT, or auto for the one started "
             "on this machine). Without it, stop starts a local Ray instance and stops it "
             "after.")(f)
    return click.option(
        "--executor", "executor", type=click.Choice(EXECUTORS), default=None,
        help="Where the sandboxes run: local (default: this machine's Docker engine) or ray "
             "(Ray tasks on the cluster's nodes with a `docker` resource; the model, every "
             "budget and the run's log stay here).")(f)


def cluster_sandbox(executor: str | None, address: str | None, *, backend: str = "docker",
                    runtime: str | None = None) -> Sandbox | None:
    """The Ray sandbox for --executor ray; None for local, where the command opens its own
    sandbox exactly as before."""
    if (executor or "local") == "local":
        if address is not None:
            raise ClusterError("--ray-address needs --executor ray")
        return None
    return open_executor(backend, executor="ray", address=address, runtime=runtime)
