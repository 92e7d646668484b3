"""An honest value too big for the protocol is a resource limit, not a forged frame: the host
tells the harness's own oversized result (this nonce, the next sequence number) from a forgery
by the frame's first bytes, without holding the frame."""

from __future__ import annotations

import json

from stop.container import protocol

from stop.sandbox.bridge import MAX_FRAME_BYTES, Session

NONCE = "b" * 32


def _session(role="solution"):
    return Session(nonce=NONCE, role=role, source="x = 1\n", candidate_hash="h",
                   output_bytes=100, services=None, send=lambda data: None)


def _line(seq, kind, nonce=NONCE, **body):
    # as the harness writes it: compact, nonce, sequence and kind first
    frame = {"n": nonce, "s": seq, "t": kind, **body}
    return (json.dumps(frame, separators=(",", ":")) + "\n").encode()


def _feed_huge(s, head_seq, kind, nonce=NONCE, **body):
    """A frame whose value is over the limit, streamed in 1 MB chunks as the engine would."""
    line = _line(head_seq, kind, nonce, **body, value="@")
    pre, post = line.split(b'"@"')
    s.feed_protocol(pre + b'"')
    chunk = b"x" * 2**20
    for _ in range(MAX_FRAME_BYTES // len(chunk) + 2):
        s.feed_protocol(chunk)
    s.feed_protocol(b'"' + post)


def test_an_honest_oversized_result_is_a_resource_limit():
    s = _session()
    s.feed_protocol(_line(0, protocol.HELLO, pid=7))
    _feed_huge(s, 1, protocol.RESULT, i=0, status="ok")
    s.feed_protocol(_line(2, protocol.RESULT, i=1, status="ok", value=5, error="",
                          elapsed_s=0.1))
    s.feed_protocol(_line(3, protocol.DONE, stdout_bytes=0))
    assert not s.tampered and s.done is not None
    calls = s.value(protocol.SOLVE)
    assert calls[0]["status"] == "error" and "frame limit" in calls[0]["error"]
    assert calls[1] == {"status": "ok", "value": 5, "error": "", "elapsed_s": 0.1}
    [f] = s.findings
    assert f.rule == "resource-result" and f.layer == "host" and f.severity == "medium"
    assert f.detail["limit"] == "frame_bytes" and "call 0" in f.attempted
    assert len(s._buf) == 0  # nothing of the 32 MB was kept


def test_an_oversized_closing_frame_ends_the_execution_without_its_value():
    s = _session("improver")
    _feed_huge(s, 0, protocol.DONE, stdout_bytes=0)
    assert not s.tampered and s.done is not None
    assert s.value(protocol.IMPROVE)["returned"] is None
    assert "frame limit" in s.value(protocol.IMPROVE)["error"]
    assert [f.rule for f in s.findings] == ["resource-result"]


def test_oversized_frames_that_are_not_the_harnesss_are_tampering():
    for seq, kind, nonce in [(0, protocol.RESULT, "c" * 32),  # another nonce
                             (5, protocol.RESULT, NONCE),  # out of sequence
                             (0, protocol.OUT, NONCE)]:  # not a result: nothing honest is so big
        s = _session()
        _feed_huge(s, seq, kind, nonce, i=0)
        assert s.tampered, (seq, kind, nonce)
        assert [f.rule for f in s.findings] == ["fake-frame"]
    s = _session()
    s.feed_protocol(_line(0, protocol.RESULT, i=0, status="ok", value=1, error="", elapsed_s=0))
    _feed_huge(s, 1, protocol.RESULT, i=0, status="ok")  # a second result for call 0
    assert s.tampered
