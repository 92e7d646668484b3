"""The pool's critical path, on the real engine: a pooled execution makes no engine call from
the caller's thread (attached while it waited, no state read after the closing frame), a dry
pool waits for the container already on its way, and the end-of-stderr mark ends the wait for
late stderr without losing a byte of the candidate's own."""

from __future__ import annotations

import textwrap
import threading
import time

import pytest
from stop.container import protocol

from stop.sandbox import SolveJob
from stop.sandbox.bridge import Session
from stop.sandbox.docker import DockerSandbox
from stop.sandbox.records import ExecLimits

CALLS = ("create_container", "start", "attach_socket", "inspect_container", "remove_container",
         "kill", "wait")


class Counting(DockerSandbox):
    """Records every engine call with the thread that made it."""

    def __init__(self, *a, **k):
        self.calls: list[tuple[str, str]] = []
        super().__init__(*a, **k)
        for name in CALLS:
            real = getattr(self.api, name)

            def wrapped(*args, _real=real, _name=name, **kw):
                self.calls.append((_name, threading.current_thread().name))
                return _real(*args, **kw)

            setattr(self.api, name, wrapped)

    def mine(self):
        me = threading.current_thread().name
        return [n for n, t in self.calls if t == me]


def solve(sb, source, *, wall_s=10):
    job = SolveJob(textwrap.dedent(source), [[]], per_call_s=5.0)
    return sb.execute(job, limits=ExecLimits(wall_s=wall_s), role="solution")


def _wait_full(sb, n, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(len(q) for q in sb._pool.values()) >= n:
            return
        time.sleep(0.1)
    raise AssertionError("the pool did not fill")


@pytest.mark.docker
def test_a_pooled_execution_makes_no_engine_call_on_the_callers_thread():
    sb = Counting(pool_size=2)
    try:
        _wait_full(sb, 2)
        sb.calls.clear()
        r = solve(sb, "import sys\ndef algorithm():\n    print('to stderr', file=sys.stderr)\n"
                      "    return 3\n")
        on_path = sb.mine()
        bad = solve(sb, "import os\ndef algorithm():\n    os._exit(9)\n")  # not ok: state read
    finally:
        sb.close()
    assert r.status == "ok" and r.value[0]["value"] == 3 and r.exit_code is None
    assert on_path == [], on_path
    assert r.stderr == "to stderr\n" and r.stderr_bytes == len("to stderr\n")
    assert bad.status == "crashed" and bad.exit_code == 9  # read back from the engine


@pytest.mark.docker
def test_a_dry_pool_waits_for_the_container_on_its_way():
    sb = Counting(pool_size=1)
    try:
        _wait_full(sb, 1)
        first = solve(sb, "def algorithm():\n    return 1\n")  # takes the one; one is refilling
        sb.calls.clear()
        second = solve(sb, "def algorithm():\n    return 2\n")
        on_path = sb.mine()
        _wait_full(sb, 1)  # and the one it took is replaced
    finally:
        sb.close()
    assert first.ok and second.ok and second.value[0]["value"] == 2
    assert "create_container" not in on_path and "start" not in on_path, on_path


def _session():
    return Session(nonce="d" * 32, role="solution", source="x = 1\n", candidate_hash="h",
                   output_bytes=1000, services=None, send=lambda data: None)


def test_the_end_of_stderr_mark_is_found_in_any_chunking_and_not_kept():
    import hashlib

    mark = (protocol.STDERR_END + hashlib.sha256(b"d" * 32).hexdigest()[:16].encode() + b"\x00")
    data = b"partial line without newline" + mark
    for cut in (0, 5, len(data) - len(mark) + 3, len(data) - 1):
        s = _session()
        s.feed_stderr(data[:cut])
        assert not s.stderr_ended or cut >= len(data)
        s.feed_stderr(data[cut:])
        assert s.stderr_ended, cut
        assert s.stderr.text() == "partial line without newline"
        assert s.stderr.total == len("partial line without newline")


def test_a_mark_with_another_nonce_does_not_end_the_wait():
    import hashlib

    s = _session()
    other = protocol.STDERR_END + hashlib.sha256(b"e" * 32).hexdigest()[:16].encode() + b"\x00"
    s.feed_stderr(b"x" + other)
    assert not s.stderr_ended and s.stderr.total == 1 + len(other)
