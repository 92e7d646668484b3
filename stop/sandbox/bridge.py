"""The host end of the harness protocol: frames in, service replies out, output accounting.

Threat model: every byte from the container is hostile. The host reads protocol frames only from
the harness's private channel (never from the candidate's prints), accepts a frame only with
this execution's nonce and the next sequence number, bounds every buffer (a flood costs the
host a counter, not memory), and dispatches service requests (language model, utility) to a
host-side handler in worker threads so several can be in flight. Budgets live in the handler,
on the host; nothing the container sends can change them.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stop.container import codec, protocol
from stop.sandbox.records import AuditFinding
from stop.sandbox.rules import RULES, make_finding
from stop.sandbox.services import ServiceError, ServiceHandler

MAX_FRAME_BYTES = 32 * 1024 * 1024
MAX_REQUESTS_IN_FLIGHT = 16
# Text in the candidate's own output that imitates a result or a protocol frame.
_FAKE = re.compile(r'"(?:n|nonce|t|status|score|result|returned)"\s*:', re.IGNORECASE)
# How the harness starts every frame (json.dumps of {"n", "s", "t", then the body; a result's
# body starts with "i"}): enough of an oversized line to tell an honest frame from a forgery.
_HEAD = re.compile(rb'\{"n":"([0-9a-f]{1,64})","s":(\d{1,12}),"t":"(\w{1,16})"(?:,"i":(\d{1,9}))?')


class OutputBuffer:
    """Keeps the first ``limit`` bytes and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit, self.total = limit, 0
        self._parts: list[bytes] = []
        self._kept = 0

    def add(self, data: bytes, counted: int | None = None) -> None:
        self.total += len(data) if counted is None else counted
        if self._kept < self.limit and data:
            part = data[: self.limit - self._kept]
            self._parts.append(part)
            self._kept += len(part)

    def text(self) -> str:
        return b"".join(self._parts).decode("utf-8", "replace")

    def drop(self, mark: bytes) -> None:
        """Remove the last occurrence of ``mark`` from what is kept, and its length from the
        count (the harness's end-of-stderr mark is not the candidate's output)."""
        kept = b"".join(self._parts)
        i = kept.rfind(mark)
        if i >= 0:
            kept = kept[:i] + kept[i + len(mark):]
            self._parts, self._kept = [kept], len(kept)
        self.total = max(0, self.total - len(mark))

    @property
    def truncated(self) -> bool:
        return self.total > self._kept


class Session:
    """One execution's conversation with the harness, independent of the transport."""

    def __init__(self, *, nonce: str, role: str, source: str, candidate_hash: str,
                 output_bytes: int, services: ServiceHandler | None,
                 send: Callable[[bytes], None]) -> None:
        self.nonce, self.role, self.source = nonce, role, source
        self.candidate_hash = candidate_hash
        self.services, self._send = services, send
        self.stdout = OutputBuffer(output_bytes)
        self.stderr = OutputBuffer(output_bytes)
        self.findings: list[AuditFinding] = []
        self.results: list[dict] = []
        self.done: dict | None = None
        self.hello = False
        self.tampered = False
        # The harness's end-of-stderr mark (see protocol.STDERR_END), and whether it arrived.
        self._stderr_end = (protocol.STDERR_END
                            + hashlib.sha256(nonce.encode()).hexdigest()[:16].encode() + b"\x00")
        self.stderr_ended = False
        self._err_tail = b""
        self.expected_seq = 0
        self._buf = bytearray()
        self._skipping = False
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight = 0
        self._service_s = 0.0
        self._busy_since: float | None = None
        self._requests = 0

    # ---- findings --------------------------------------------------------------------------

    def finding(self, rule: str, layer: str, attempted: str, line: int | None = None,
                **detail: Any) -> None:
        f = make_finding(rule, layer=layer, role=self.role, attempted=attempted,
                         candidate_hash=self.candidate_hash, line=line, source=self.source,
                         **detail)
        with self._lock:
            self.findings.append(f)

    def _tamper(self, why: str, **detail: Any) -> None:
        self.tampered = True
        if sum(1 for f in self.findings if f.rule == "fake-frame") < 20:
            self.finding("fake-frame", "host", why, **detail)

    # ---- input from the container ----------------------------------------------------------

    def feed_protocol(self, data: bytes) -> None:
        """Bytes from the harness's protocol channel, in any chunking."""
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                rest = data[start:]
                if not self._skipping:
                    if len(self._buf) + len(rest) > MAX_FRAME_BYTES:
                        self._oversized((bytes(self._buf[:256]) + bytes(rest[:256]))[:256])
                        self._buf.clear()
                        self._skipping = True
                    else:
                        self._buf += rest
                return
            if self._skipping:
                self._skipping = False
            else:
                self._buf += data[start:nl]
                line = bytes(self._buf)
                self._buf.clear()
                if line.strip():
                    self._frame(line)
            start = nl + 1

    def _oversized(self, head: bytes) -> None:
        """A line over the frame limit. The harness's own result or closing frame (this
        nonce, the next sequence number) is an honest value too big to carry: a resource
        limit, that call an error. Anything else is tampering."""
        m = _HEAD.match(head)
        kind = m.group(3).decode() if m else None
        honest = (m is not None and m.group(1).decode() == self.nonce and self.done is None
                  and int(m.group(2)) == self.expected_seq
                  and (kind == protocol.DONE or (kind == protocol.RESULT and m.group(4))))
        if not honest:
            self._tamper(f"frame longer than {MAX_FRAME_BYTES} bytes")
            return
        self.expected_seq += 1
        what = f"over the {MAX_FRAME_BYTES // 2**20} MB frame limit: dropped"
        if kind == protocol.RESULT:
            i = int(m.group(4))
            if any(r.get("i") == i for r in self.results):
                self._tamper(f"second result for call {i!r}")
                return
            self.results.append({"i": i, "status": "error", "value": None,
                                 "error": f"result {what}", "elapsed_s": 0.0})
            attempted = f"the result of call {i} is {what}"
        else:
            self.done = {"t": protocol.DONE, "error": f"returned value {what}"}
            attempted = f"the returned value is {what}"
        self.finding("resource-result", "host", attempted, limit="frame_bytes",
                     frame_bytes=MAX_FRAME_BYTES)

    def feed_stderr(self, data: bytes) -> None:
        self.stderr.add(data)
        if self.stderr_ended:
            return
        mark = self._stderr_end
        seen = self._err_tail + data
        if mark in seen:
            self.stderr_ended = True
            self.stderr.drop(mark)
        else:
            self._err_tail = seen[-(len(mark) - 1):]

    def _frame(self, line: bytes) -> None:
        try:
            frame = json.loads(line)
            ok = isinstance(frame, dict)
        except (ValueError, RecursionError):
            ok = False
        if not ok:
            self._tamper("malformed frame on the protocol channel",
                         sample=line[:120].decode("utf-8", "replace"))
            return
        if frame.get("n") != self.nonce:
            self._tamper("frame with a wrong nonce", sample=line[:120].decode("utf-8", "replace"))
            return
        if frame.get("s") != self.expected_seq:
            self._tamper(f"frame out of sequence: got {frame.get('s')!r}, "
                         f"expected {self.expected_seq}")
            return
        if self.done is not None:
            self._tamper("frame after the closing frame")
            return
        self.expected_seq += 1
        kind = frame.get("t")
        if kind == protocol.OUT:
            data = str(frame.get("data", "")).encode("utf-8", "replace")
            self.stdout.add(data, counted=int(frame.get("bytes", len(data))))
        elif kind == protocol.OUT_COUNTED:
            self.stdout.add(b"", counted=int(frame.get("bytes", 0)))
        elif kind == protocol.FINDING:
            self._runtime_finding(frame)
        elif kind == protocol.RESULT:
            if any(r.get("i") == frame.get("i") for r in self.results):
                self._tamper(f"second result for call {frame.get('i')!r}")
            else:
                self.results.append(frame)
        elif kind == protocol.REQUEST:
            self._request(frame)
        elif kind == protocol.HELLO:
            self.hello = True
        elif kind == protocol.DONE:
            self.done = frame
        else:
            self._tamper(f"unknown frame type {kind!r}")

    def _runtime_finding(self, frame: dict) -> None:

        rule = frame.get("rule")
        if rule not in RULES:
            self._tamper(f"finding frame with unknown rule {rule!r}")
            return
        layer = frame.get("layer") if frame.get("layer") in ("runtime", "container") else "runtime"
        line = frame.get("line") if isinstance(frame.get("line"), int) else None
        detail = frame.get("detail") if isinstance(frame.get("detail"), dict) else {}
        self.finding(rule, layer, str(frame.get("attempted", ""))[:500], line=line,
                     **{k: v for k, v in list(detail.items())[:10] if isinstance(k, str)})

    # ---- service requests ------------------------------------------------------------------

    def _request(self, frame: dict) -> None:
        rid, method = frame.get("id"), frame.get("method")
        params = frame.get("params") if isinstance(frame.get("params"), dict) else {}
        line = frame.get("line") if isinstance(frame.get("line"), int) else None
        self._requests += 1
        flag = params.get("use_sandbox", True)
        if method == protocol.UTILITY and flag is not None and not flag:
            # any falsy value (False, 0, "", []) is an attempt to switch the sandbox off
            self.finding("sandbox-flag-off", "runtime", f"utility(..., use_sandbox={flag!r})",
                         line=line)
        if method == protocol.UTILITY and "extra" in params:
            self.finding("sandbox-flag-off", "runtime",
                         f"utility called with extra flags {params['extra']!r}", line=line)
        if self.services is None:
            self._reply(rid, ok=False, error=f"no host services for {method!r} in this job")
            return
        with self._lock:
            if self._in_flight >= MAX_REQUESTS_IN_FLIGHT:
                self._reply(rid, ok=False, error="too many requests in flight")
                return
            self._in_flight += 1
            if self._busy_since is None:
                self._busy_since = time.monotonic()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(MAX_REQUESTS_IN_FLIGHT,
                                                thread_name_prefix="stop-bridge")
        clean = {k: v for k, v in params.items() if k != "extra"}
        self._pool.submit(self._serve, rid, str(method), clean, line)

    def _serve(self, rid: Any, method: str, params: dict, line: int | None) -> None:
        try:
            result = self.services(method, params)
            self._reply(rid, ok=True, result=codec.encode(result))
        except ServiceError as e:
            self._reply(rid, ok=False, error=str(e))
        except Exception as e:  # a host handler bug must not hang the candidate
            self._reply(rid, ok=False, error=f"host service failed: {type(e).__name__}: {e}")
        finally:
            with self._lock:
                self._in_flight -= 1
                if self._in_flight == 0 and self._busy_since is not None:
                    self._service_s += time.monotonic() - self._busy_since
                    self._busy_since = None

    def _reply(self, rid: Any, **body: Any) -> None:
        data = (json.dumps({"id": rid, **body}, separators=(",", ":")) + "\n").encode()
        with self._send_lock:
            try:
                self._send(data)
            except OSError:
                pass  # the container is gone; nothing waits for the reply

    def service_seconds(self) -> float:
        """Time with at least one service request in flight (not charged to the wall clock)."""
        with self._lock:
            busy = time.monotonic() - self._busy_since if self._busy_since is not None else 0.0
            return self._service_s + busy

    @property
    def requests(self) -> int:
        return self._requests

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- after the run -----------------------------------------------------------------------

    def check_output(self) -> None:
        """Findings about the candidate's own output: floods and imitation frames."""
        text = self.stdout.text() + "\n" + self.stderr.text()
        fake = next((ln for ln in text.splitlines() if self.nonce in ln or (
            ln.lstrip().startswith("{") and _FAKE.search(ln))), None)
        if fake is not None:
            self.finding("fake-frame", "host", "printed text that imitates a result or frame "
                         "(ignored)", sample=fake.strip()[:120])
        for name, buf in (("stdout", self.stdout), ("stderr", self.stderr)):
            if buf.truncated:
                self.finding("resource-output", "container",
                             f"{name} of {buf.total} bytes truncated to {buf.limit}",
                             limit="output_bytes", bytes=buf.total)

    def value(self, kind: str) -> Any:
        if kind == protocol.SOLVE:
            out = []
            for r in sorted(self.results, key=lambda r: r.get("i", 0)):
                out.append({"status": r.get("status") if r.get("status") in
                            protocol.CALL_STATUSES else "error",
                            "value": _safe_decode(r.get("value")),
                            "error": str(r.get("error") or ""),
                            "elapsed_s": float(r.get("elapsed_s") or 0.0)})
            return out
        if self.done is None:
            return None
        body = {"returned": _safe_decode(self.done.get("returned"))}
        if self.done.get("error"):
            body["error"] = str(self.done["error"])
        return body


def _safe_decode(x: Any) -> Any:
    try:
        return codec.decode(x)
    except Exception:
        return codec.Opaque("undecodable")
