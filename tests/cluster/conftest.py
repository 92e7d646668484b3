"""A real local Ray cluster for the cluster tests: a head (no CPU, no docker) and two worker
nodes of one CPU and one `docker` slot each, all on 127.0.0.1, sharing this machine's Docker
engine. Started once per module (it takes 10 to 30 s here) and always shut down.

Tests marked `ray` fail, not skip, when Ray is missing, unless STOP_ALLOW_SKIP=1.
"""

from __future__ import annotations

import os

import pytest


def check_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        msg = ("Ray is not installed (pip install -e '.[ray]', or bash scripts/setup.sh "
               "--for test); set STOP_ALLOW_SKIP=1 to skip")
        if os.environ.get("STOP_ALLOW_SKIP") == "1":
            pytest.skip(msg)
        pytest.fail(msg)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("ray") is not None:
        check_ray()


@pytest.fixture(scope="module")
def cluster():
    check_ray()
    from stop.cluster.local import LocalCluster

    c = LocalCluster(workers=2)
    try:
        yield c
    finally:
        c.shutdown()
