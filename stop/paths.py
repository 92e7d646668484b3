"""Where stop keeps things on disk: the project root, runs, caches."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent


def tasks_dir() -> Path:
    return Path(os.environ.get("STOP_TASKS_DIR", PROJECT_ROOT / "tasks"))


def sandbox_dir() -> Path:
    return PROJECT_ROOT / "sandbox"


def runs_dir() -> Path:
    """Runs live in ./runs of the project unless STOP_RUNS_DIR says otherwise."""
    return Path(os.environ.get("STOP_RUNS_DIR", PROJECT_ROOT / "runs"))


def cache_dir() -> Path:
    """Project cache: built wheels, model weights, the language-model response cache."""
    return Path(os.environ.get("STOP_CACHE_DIR", PROJECT_ROOT / ".cache"))
