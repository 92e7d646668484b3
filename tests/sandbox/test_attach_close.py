"""Closing a container's attach stream ends the connection, even while the engine's HTTP
response still holds a file object on the socket (socket.close() alone then keeps the
descriptor open). Found by benchmarks/bench_reliability.py: after an honest 150 MB return
the host stops reading at the frame limit, the engine kept writing the rest into a connection
nobody closed, and removing that container took two minutes."""

from __future__ import annotations

import socket
import time

import pytest

from stop.sandbox import ImproveJob
from stop.sandbox.attach import close
from stop.sandbox.records import ExecLimits


def test_close_ends_the_connection_while_a_file_object_holds_the_socket():
    ours, engine = socket.socketpair()
    held = ours.makefile("rb")  # as the docker client's response keeps one
    try:
        close(ours)
        engine.settimeout(5)
        assert engine.recv(1) == b""  # the peer sees the end at once
    finally:
        held.close()
        engine.close()


HUGE = '''
def improve_algorithm(initial_solution, utility, language_model):
    return "x" * 150_000_000
'''


@pytest.mark.docker
def test_a_container_cut_off_at_the_frame_limit_is_removed_promptly():
    from stop.sandbox.docker import DockerSandbox

    sb = DockerSandbox()
    try:
        job = ImproveJob(source=HUGE, initial_solution="x = 1\n", description="",
                         utility_budget=1, lm_budget=1, max_responses_per_call=1)
        r = sb.execute(job, limits=ExecLimits(wall_s=60, memory_mb=1024), role="improver")
        assert r.status == "ok" and [f.rule for f in r.findings] == ["resource-result"]
    finally:
        t0 = time.monotonic()
        sb.close()  # waits for the used container's removal
    assert time.monotonic() - t0 < 30
