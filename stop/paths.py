"""Where stop keeps things on disk: the bundled tasks and sandbox files, runs, caches.

`tasks/` and `sandbox/` ship inside the wheel as the packages `stop.tasks.builtin` and
`stop.container` (pyproject.toml maps the folders), so they are found the same way from a
source checkout, an editable install and a plain `pip install .`. Runs and caches default to the
working directory's project when there is one, else to the current folder.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# A source checkout (editable install): runs/ and .cache/ sit beside stop/ as they always did.
PROJECT_ROOT = PACKAGE_DIR.parent
_IN_CHECKOUT = (PROJECT_ROOT / "pyproject.toml").is_file()


def tasks_dir() -> Path:
    return Path(os.environ.get("STOP_TASKS_DIR", _shipped("tasks/builtin", "tasks")))


def sandbox_dir() -> Path:
    """The files that run inside the container (harness, tripwires, helpers, codec, protocol)."""
    return _shipped("container", "sandbox")


def _home() -> Path:
    return PROJECT_ROOT if _IN_CHECKOUT else Path.cwd()


def runs_dir() -> Path:
    """Runs live in ./runs of the project unless STOP_RUNS_DIR says otherwise."""
    return Path(os.environ.get("STOP_RUNS_DIR", _home() / "runs"))


def cache_dir() -> Path:
    """Project cache: built wheels, model weights, the language-model response cache."""
    return Path(os.environ.get("STOP_CACHE_DIR", _home() / ".cache"))


def _shipped(in_wheel: str, in_checkout: str) -> Path:
    # Looked up by path rather than imported: importing stop.tasks from here would be a cycle.
    installed = PACKAGE_DIR / in_wheel
    return installed if installed.is_dir() else PROJECT_ROOT / in_checkout
