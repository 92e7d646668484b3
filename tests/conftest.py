"""Shared fixtures: real sandboxes on the real engine.

Docker tests fail (not skip) when the engine is unreachable, unless STOP_ALLOW_SKIP=1.
"""

from __future__ import annotations

import os

import pytest


def docker_required() -> None:
    """Fail the calling test when Docker is unusable; skip only when STOP_ALLOW_SKIP=1."""
    try:
        import docker

        docker.from_env(timeout=10).ping()
    except Exception as e:
        msg = f"Docker engine not reachable ({type(e).__name__}); start dockerd"
        if os.environ.get("STOP_ALLOW_SKIP") == "1":
            pytest.skip(msg)
        pytest.fail(msg)


@pytest.fixture(scope="session")
def sandbox():
    """A DockerSandbox on the current image (built if missing), shared by the session."""
    docker_required()
    from stop.docker_sandbox import DockerSandbox

    sb = DockerSandbox()
    yield sb
    sb.close()


@pytest.fixture(scope="session")
def process_sandbox():
    """The process backend (no security boundary; for tests of the protocol only)."""
    from stop.process_sandbox import ProcessSandbox

    sb = ProcessSandbox()
    yield sb
    sb.close()
