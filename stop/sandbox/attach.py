"""The engine's attach stream of a sandbox container: demultiplexing it, and the host's clock.

Threat model: every byte is the candidate's until the bridge has checked it. The stream is the
engine's multiplexed format (8-byte headers: stream 1 is the harness's protocol channel, stream
2 the candidate's stderr); the host reads it in bounded chunks, hands each part to the session
(stop.sandbox.bridge), and kills the container at the deadline whatever the candidate does.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Callable

from stop.sandbox.bridge import Session

DRAIN_S = 5.0  # after a kill: how long to read what the engine still delivers
AFTER_DONE_S = 0.02  # after the closing frame: the longest wait for the end-of-stderr mark


def close(sock: socket.socket) -> None:
    """End the connection. The engine client's response keeps a file object on the socket, so
    close() alone leaves the descriptor open: the engine would go on writing what the host no
    longer reads (a value cut off at the frame limit), and removing that container would wait
    minutes for it. shutdown() ends the connection whoever still holds the descriptor."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # never connected, or already ended by the engine
    try:
        sock.close()
    except OSError:
        pass


def waiting(sock: socket.socket) -> bool:
    """A pooled container's attach stream, checked without an engine call: the harness sends
    nothing before its job, so a readable stream is one that ended (the container died while it
    waited: an engine restart, a stray kill) or that carries output nobody asked for."""
    try:
        ready, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not ready


def pump(sock: socket.socket, session: Session, *, deadline_s: Callable[[], float], t0: float,
         kill: Callable[[], object]) -> bool:
    """Demultiplex the stream into ``session`` until it ends; ``kill`` at the deadline (seconds
    after ``t0``, asked again each turn: time in host services is not charged). True if killed.
    """
    buf = bytearray()
    killed_at: float | None = None
    done_at: float | None = None
    while True:
        now = time.monotonic()
        if done_at is None and session.done is not None:
            done_at = now
        if done_at is not None and killed_at is None:
            # The closing frame is the end of the execution: keep reading only until the
            # harness's end-of-stderr mark (all stderr written before the closing frame has
            # arrived), or briefly when it never comes; not for the container's teardown.
            if session.stderr_ended or now - done_at > AFTER_DONE_S:
                return False
            wait = AFTER_DONE_S
        elif killed_at is None:
            left = deadline_s() - (now - t0)
            if left <= 0:
                try:
                    kill()
                except Exception:
                    pass
                killed_at = now
                continue
            wait = min(left, 0.5)
        else:
            if now - killed_at > DRAIN_S:
                return True
            wait = 0.5
        ready, _, _ = select.select([sock], [], [], wait)
        if not ready:
            continue
        data = sock.recv(262144)
        if not data:
            return killed_at is not None
        buf += data
        while len(buf) >= 8:
            stream, size = buf[0], struct.unpack(">I", buf[4:8])[0]
            if len(buf) < 8 + size:
                break
            payload = bytes(buf[8:8 + size])
            del buf[:8 + size]
            if stream == 1:
                session.feed_protocol(payload)
            else:
                session.feed_stderr(payload)
