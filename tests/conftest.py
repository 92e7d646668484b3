"""Shared fixtures: real sandboxes on the real engine.

Tests marked `docker` (and tests using the `sandbox` or `docker_required` fixtures) fail, not
skip, when the engine is unreachable, unless STOP_ALLOW_SKIP=1 is set.
"""

from __future__ import annotations

import os
import signal

import pytest

_DOCKER_STATE: list[str | None] = []

# Ctrl-C as in a terminal, even when the suite runs as a background job (which starts with SIGINT
# ignored, and passes that on to every child): the tests that interrupt a child need it caught.
signal.signal(signal.SIGINT, signal.default_int_handler)


def check_docker() -> None:
    """Fail the calling test when Docker is unusable; skip only when STOP_ALLOW_SKIP=1."""
    if not _DOCKER_STATE:
        try:
            import docker

            docker.from_env(timeout=10).ping()
            _DOCKER_STATE.append(None)
        except Exception as e:
            _DOCKER_STATE.append(f"Docker engine not reachable ({type(e).__name__}: {e}); "
                                 "start dockerd, or set STOP_ALLOW_SKIP=1 to skip")
    msg = _DOCKER_STATE[0]
    if msg is None:
        return
    if os.environ.get("STOP_ALLOW_SKIP") == "1":
        pytest.skip(msg)
    pytest.fail(msg)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") is not None:
        check_docker()


@pytest.fixture
def docker_required() -> None:
    """Request this fixture to make a test need a working Docker engine."""
    check_docker()


@pytest.fixture(scope="session")
def sandbox():
    """A DockerSandbox on the current image (built if missing), shared by the session."""
    check_docker()
    from stop.sandbox.docker import DockerSandbox

    sb = DockerSandbox()
    yield sb
    sb.close()


@pytest.fixture(scope="session")
def process_sandbox():
    """The process backend (no security boundary; for tests of the protocol only)."""
    from stop.sandbox.process import ProcessSandbox

    sb = ProcessSandbox()
    yield sb
    sb.close()
