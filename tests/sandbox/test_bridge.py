"""The host end of the protocol: framing checks, bounded buffers, concurrent service requests."""

from __future__ import annotations

import json
import threading
import time

import pytest
from stop.container import protocol

from stop.sandbox import ImproveJob, ServiceError
from stop.sandbox.bridge import MAX_FRAME_BYTES, Session
from stop.sandbox.records import ExecLimits

NONCE = "a" * 32


def _session(services=None):
    sent: list[bytes] = []
    s = Session(nonce=NONCE, role="solution", source="x = 1\n", candidate_hash="h",
                output_bytes=100, services=services, send=sent.append)
    return s, sent


def _frame(seq, kind, nonce=NONCE, **body):
    return (json.dumps({"n": nonce, "s": seq, "t": kind, **body}) + "\n").encode()


def test_frames_in_any_chunking_are_accepted():
    s, _ = _session()
    data = _frame(0, "hello") + _frame(1, "result", i=0, status="ok", value=3, error="",
                                       elapsed_s=0.1) + _frame(2, "done")
    for b in data:
        s.feed_protocol(bytes([b]))
    assert s.hello and s.done is not None and not s.tampered
    assert s.value("solve") == [{"status": "ok", "value": 3, "error": "", "elapsed_s": 0.1}]


@pytest.mark.parametrize("bad", [
    b"not json\n",
    _frame(0, "done", nonce="b" * 32),
    _frame(5, "done"),
    b"[1, 2]\n",
])
def test_forged_or_malformed_frames_void_the_channel(bad):
    s, _ = _session()
    s.feed_protocol(bad)
    assert s.tampered and s.done is None
    assert [f.rule for f in s.findings] == ["fake-frame"]
    assert s.findings[0].layer == "host"


@pytest.mark.parametrize("kind", protocol.FRAME_KINDS)
def test_the_host_reads_every_frame_kind_the_protocol_names(kind):
    s, _ = _session()
    s.feed_protocol(_frame(0, kind))
    s.close()
    assert not any("unknown frame type" in f.attempted for f in s.findings)
    unknown, _ = _session()
    unknown.feed_protocol(_frame(0, "shell"))
    assert unknown.tampered and "unknown frame type 'shell'" in unknown.findings[0].attempted


def test_replayed_sequence_number_and_frames_after_done_are_tampering():
    s, _ = _session()
    s.feed_protocol(_frame(0, "hello") + _frame(0, "hello"))
    assert s.tampered
    s2, _ = _session()
    s2.feed_protocol(_frame(0, "done") + _frame(1, "result", i=0, status="ok", value=1))
    assert s2.tampered and s2.results == []


def test_an_endless_line_is_bounded_and_reported():
    s, _ = _session()
    chunk = b"x" * (1024 * 1024)
    for _ in range(MAX_FRAME_BYTES // len(chunk) + 3):
        s.feed_protocol(chunk)
    assert len(s._buf) <= MAX_FRAME_BYTES and s.tampered
    s.feed_protocol(b"\n")
    assert len(s._buf) == 0


def test_output_is_truncated_and_counted():
    s, _ = _session()
    s.feed_protocol(_frame(0, "out", data="y" * 80, bytes=80) + _frame(1, "out", data="z" * 80,
                                                                       bytes=80)
                    + _frame(2, "outn", bytes=10**9))
    s.feed_stderr(b"e" * 1000)
    s.check_output()
    assert len(s.stdout.text()) == 100 and s.stdout.total == 160 + 10**9
    assert len(s.stderr.text()) == 100 and s.stderr.total == 1000
    assert {f.rule for f in s.findings} == {"resource-output"}


def test_service_requests_run_concurrently_and_errors_travel_back():
    gate = threading.Barrier(3, timeout=5)

    def handler(method, params):
        gate.wait()
        if params["solution"] == "bad":
            raise ServiceError("refused: budget spent")
        return 0.5

    s, sent = _session(handler)
    s.feed_protocol(_frame(0, "req", id=1, method="utility", params={"solution": "a"}, line=1)
                    + _frame(1, "req", id=2, method="utility", params={"solution": "bad"})
                    + _frame(2, "req", id=3, method="utility",
                             params={"solution": "c", "use_sandbox": False}, line=1))
    deadline = time.monotonic() + 5
    while len(sent) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    replies = {r["id"]: r for r in map(json.loads, sent)}
    assert replies[1] == {"id": 1, "ok": True, "result": 0.5}
    assert replies[2]["ok"] is False and "budget spent" in replies[2]["error"]
    flag = [f for f in s.findings if f.rule == "sandbox-flag-off"]
    assert flag and flag[0].severity == "critical" and flag[0].source_line == "x = 1"
    s.close()


THREADED_IMPROVER = '''
import threading

def improve_algorithm(initial_solution, utility, language_model):
    out = {}
    def ask(i):
        out[i] = language_model.prompt("expert", f"m{i}")[0]
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ",".join(out[i] for i in range(8))
'''


@pytest.mark.docker
def test_eight_requests_in_flight_from_threads(sandbox):
    active, peak, lock = [0], [0], threading.Lock()

    def handler(method, params):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.5)
        with lock:
            active[0] -= 1
        return [m.upper() for m in params["messages"]]

    job = ImproveJob(source=THREADED_IMPROVER, initial_solution="", description="",
                     utility_budget=1, lm_budget=8, max_responses_per_call=6)
    t0 = time.monotonic()
    r = sandbox.execute(job, limits=ExecLimits(wall_s=20), role="improver", services=handler)
    assert r.status == "ok", r.stderr
    assert r.value["returned"] == ",".join(f"M{i}" for i in range(8))
    assert peak[0] >= 4
    assert time.monotonic() - t0 < 8 * 0.5


@pytest.mark.docker
def test_time_in_host_services_is_not_charged_to_the_candidate(sandbox):
    def slow(method, params):
        time.sleep(3)
        return ["ok"]

    src = ("def improve_algorithm(s, utility, language_model):\n"
           "    return language_model.prompt('e', 'm')[0]\n")
    job = ImproveJob(source=src, initial_solution="", description="", utility_budget=1,
                     lm_budget=1, max_responses_per_call=6)
    r = sandbox.execute(job, limits=ExecLimits(wall_s=2), role="improver", services=slow)
    assert r.status == "ok" and r.value == {"returned": "ok"}
