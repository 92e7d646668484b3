"""Options shared by the commands that run candidates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from stop.sandbox.runtimes import ENV_VAR, RUNTIMES, SETUP_GVISOR


def runtime_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--runtime runc|runsc: the Docker sandbox's OCI runtime (default $STOP_SANDBOX_RUNTIME,
    else runc). The process backend has none."""
    return click.option(
        "--runtime", "runtime", type=click.Choice(RUNTIMES), default=None,
        help=f"OCI runtime of the Docker sandbox: runc, or runsc (gVisor's user-space kernel, a "
             f"second wall; {SETUP_GVISOR}). Default ${ENV_VAR}, else runc.")(f)
