"""The in-container harness: runs one untrusted candidate for one job, talks to the host in frames.

Threat model: the candidate shares this process, so nothing here is a wall (the container is).
What the harness guarantees is that the host can tell the candidate's own output from the
protocol: the job arrives on stdin, then fd 0 becomes /dev/null and fd 1 a pipe this harness
forwards, so prints never reach the protocol channel. Every frame carries the per-execution
nonce (sent in the job, never in the environment) and a sequence number; the host drops and
reports anything else. The audit hook and the tripwires below only log; the container blocks.
"""

import builtins
import hashlib
import json
import os
import select
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
__import__("threads")  # first of all: it sizes the libraries' thread pools before NumPy loads

import codec  # noqa: E402
import numpy  # noqa: E402,F401  (preloaded: its imports are not the candidate's)
import protocol  # noqa: E402
import tripwires as tw  # noqa: E402

CANDIDATE_FILE = tw.CANDIDATE_FILE
_now = time.monotonic
_real_write = os.write
_PID = os.getpid()
MAX_FINDINGS = 200


class ServiceError(Exception):
    """A host service refused or failed a request (budget exhausted, bad input)."""


class _CallTimeout(BaseException):
    pass


class Channel:
    """Frames to the host on a private fd; replies from the host on a private stdin copy."""

    def __init__(self, out_fd, in_file, nonce):
        self.out_fd, self.in_file, self.nonce = out_fd, in_file, nonce
        self.seq = 0
        self.lock = threading.Lock()
        self.pending = {}
        self.next_id = 0
        self.closed = False
        self.findings_sent = 0
        self.seen = set()

    def send(self, kind, **body):
        if os.getpid() != _PID:
            return  # a forked child of the candidate never speaks for the harness
        with self.lock:
            frame = {"n": self.nonce, "s": self.seq, "t": kind, **body}
            self.seq += 1
            data = (json.dumps(frame, separators=(",", ":"), allow_nan=False) + "\n").encode()
            view = memoryview(data)
            while view:
                try:
                    k = _real_write(self.out_fd, view)
                except InterruptedError:
                    continue
                view = view[k:]

    def finding(self, rule, attempted, line=None, layer="runtime", **detail):
        key = (rule, line, attempted[:80])
        if key in self.seen or self.findings_sent >= MAX_FINDINGS:
            return
        self.seen.add(key)
        self.findings_sent += 1
        try:
            self.send(protocol.FINDING, rule=rule, attempted=attempted[:500], line=line,
                      layer=layer, detail=detail)
        except Exception:
            pass

    def request(self, method, params, line=None):
        ev = threading.Event()
        with self.lock:
            self.next_id += 1
            rid = self.next_id
            self.pending[rid] = [ev, None]
        if self.closed:
            raise ServiceError("the host closed the service channel")
        self.send(protocol.REQUEST, id=rid, method=method, params=params, line=line)
        ev.wait()
        reply = self.pending.pop(rid)[1]
        if not reply.get("ok"):
            raise ServiceError(str(reply.get("error", "service failed")))
        return codec.decode(reply.get("result"))

    def read_replies(self):
        try:
            for raw in self.in_file:
                try:
                    reply = json.loads(raw)
                    slot = self.pending.get(reply["id"])
                except Exception:
                    continue
                if slot is not None:
                    slot[1] = reply
                    slot[0].set()
        except (OSError, ValueError):
            return  # the candidate closed our descriptor: not the host going away
        self.closed = True
        for slot in list(self.pending.values()):
            slot[1] = {"ok": False, "error": "the host closed the service channel"}
            slot[0].set()
        # The host keeps this stream open until the harness has exited, so an end of file here
        # means the host is gone: nobody would enforce the deadline any more. Die, and take the
        # candidate's processes along (in a container, init then ends everything else).
        if os.getpid() == _PID:
            try:
                os.killpg(0, signal.SIGKILL)
            finally:
                os._exit(3)


CHAN = None


# ---- output forwarding: the candidate's fd 1 is a pipe; its bytes go to the host as frames --

class Forwarder(threading.Thread):
    def __init__(self, fd, limit):
        super().__init__(daemon=True)
        self.fd, self.limit, self.sent, self.total = fd, limit, 0, 0
        self.stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()

    def pump(self, timeout):
        r, _, _ = select.select([self.fd, self._wake_r], [], [], timeout)
        if self.fd not in r:
            return False
        data = os.read(self.fd, 65536)
        if not data:
            return None
        self.total += len(data)
        if self.sent < self.limit:
            part = data[: self.limit - self.sent]
            self.sent += len(part)
            CHAN.send(protocol.OUT, data=part.decode("utf-8", "replace"), bytes=len(data))
        else:
            CHAN.send(protocol.OUT_COUNTED, bytes=len(data))
        return True

    def run(self):
        while not self.stop.is_set():
            if self.pump(None) is None:
                return
        while self.pump(0) is True:
            pass

    def finish(self):
        """Forward what is left in the pipe, then stop (without waiting for a poll tick)."""
        self.stop.set()
        os.write(self._wake_w, b"x")
        self.join(1.0)


# ---- the stubs an improver sees --------------------------------------------------------------

class _Stub:
    _frozen = ()

    def __setattr__(self, name, value):
        if name in self._frozen and "_ready" in self.__dict__:
            CHAN.finding("budget-tamper", f"set {type(self).__name__}.{name} = {value!r}"[:200],
                         line=tw.candidate_line(sys._getframe(1)))
        object.__setattr__(self, name, value)


class Utility(_Stub):
    _frozen = ("budget", "uses", "str")

    def __init__(self, spec):
        self.str = spec.get("description", "")
        self.budget = spec.get("budget", 0)
        self.uses = 0
        self._flag_param = bool(spec.get("use_sandbox_param"))
        self._ready = True

    def __call__(self, solution, use_sandbox=None, **kwargs):
        if use_sandbox is None and self._flag_param:
            use_sandbox = True
        if not isinstance(solution, str):
            raise TypeError(f"utility takes the solution's source text, not {type(solution).__name__}")
        object.__setattr__(self, "uses", self.uses + 1)
        params = {"solution": str.__str__(solution),
                  "use_sandbox": use_sandbox if isinstance(use_sandbox, bool) or use_sandbox is None
                  else bool(use_sandbox)}
        if kwargs:
            params["extra"] = sorted(kwargs)[:10]
        return CHAN.request(protocol.UTILITY, params, line=tw.candidate_line(sys._getframe(1)))


class LanguageModel(_Stub):
    _frozen = ("budget", "max_responses_per_call", "calls")
    _made = 0

    def __init__(self, budget=4, max_responses_per_call=6, **kwargs):
        LanguageModel._made += 1
        if LanguageModel._made > 1:
            CHAN.finding("new-language-model",
                         f"LanguageModel(budget={budget!r}) built by the candidate",
                         line=tw.candidate_line(sys._getframe(1)))
        self.budget = budget
        self.max_responses_per_call = max_responses_per_call
        self.calls = 0
        self._ready = True

    def batch_prompt(self, expertise, messages, temperature=0.7):
        if isinstance(messages, str):
            messages = [messages]
        object.__setattr__(self, "calls", self.calls + 1)
        params = {"expertise": str(expertise), "messages": [str(m) for m in messages],
                  "temperature": float(temperature)}
        return CHAN.request(protocol.BATCH_PROMPT, params,
                            line=tw.candidate_line(sys._getframe(1)))

    def prompt(self, expertise, message, n_responses=1, temperature=0.7):
        return self.batch_prompt(expertise, [message] * int(n_responses), temperature)


# ---- the jobs --------------------------------------------------------------------------------

def seed_generators(seed):
    """Same program, same inputs, same outputs: a rerun (resume, replay) scores identically."""
    import random

    random.seed(seed)
    numpy.random.seed(seed % 2**32)


def load_candidate(source):
    import linecache

    linecache.cache[CANDIDATE_FILE] = (len(source), None, source.splitlines(True), CANDIDATE_FILE)
    ns = {"__name__": "candidate", "__file__": CANDIDATE_FILE, "__builtins__": builtins}
    code = compile(source, CANDIDATE_FILE, "exec")
    tw.ACTIVE[0] = True
    exec(code, ns)
    return ns


def _flush():
    try:
        sys.stdout.flush()
    except BaseException:  # noqa: B036  (the candidate may have replaced sys.stdout)
        pass


def _alarm(signum, frame):
    raise _CallTimeout()


def run_solve(job):
    per_call = float(job.get("per_call_s") or 0)
    signal.signal(signal.SIGALRM, _alarm)
    base_seed = int(job.get("seed") or 0)
    seed_generators(base_seed)
    try:
        fn = load_candidate(job["source"]).get(job.get("entry", "algorithm"))
        load_error = None if callable(fn) else f"no function {job.get('entry', 'algorithm')!r}"
    except BaseException as e:  # noqa: B036  (the candidate may raise anything, SystemExit too)
        if os.getpid() != _PID:
            os._exit(0)
        tw.report_exception(e)
        fn, load_error = None, tw.format_error(e)
    state = tw.snapshot()
    for i, args in enumerate(job.get("calls", [])):
        if load_error:
            CHAN.send(protocol.RESULT, i=i, status="error", value=None, error=load_error,
                      elapsed_s=0.0)
            continue
        status, value, error = "ok", None, ""
        if signal.getsignal(signal.SIGALRM) is not _alarm:
            CHAN.finding("signal-tamper", "replaced the harness's SIGALRM handler")
            signal.signal(signal.SIGALRM, _alarm)
        try:
            call_args = codec.decode(args)  # the host's encoding is not the candidate's time
        except BaseException as e:  # noqa: B036
            CHAN.send(protocol.RESULT, i=i, status="error", value=None,
                      error=f"undecodable arguments: {tw.format_error(e)}", elapsed_s=0.0)
            continue
        seed_generators(base_seed + i)
        t0 = _now()
        try:
            try:
                if per_call > 0:
                    signal.setitimer(signal.ITIMER_REAL, per_call)
                value = fn(*call_args)
            finally:  # an alarm landing here is still caught below
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _CallTimeout:
            status, error = "timeout", f"call exceeded per_call_s={per_call}"
        except BaseException as e:  # noqa: B036
            status, error = "error", tw.format_error(e)
            if os.getpid() == _PID:
                tw.report_exception(e)
        if os.getpid() != _PID:
            os._exit(0)
        elapsed = _now() - t0
        if status == "ok" and per_call > 0 and elapsed > per_call:
            status, error, value = "timeout", f"call took {elapsed:.3f}s > per_call_s={per_call}", None
        if status == "timeout":
            CHAN.finding("resource-timeout", error, line=None, layer="runtime", limit="per_call_s")
        try:
            encoded = codec.encode(value)
        except BaseException as e:  # noqa: B036
            status, error, encoded = "error", f"unencodable result: {tw.format_error(e)}", None
        _flush()
        CHAN.send(protocol.RESULT, i=i, status=status, value=encoded, error=error,
                  elapsed_s=round(elapsed, 6))
    tw.check_integrity(state)
    return {}


def run_improve(job):
    utility = Utility(job.get("utility", {}))
    lm_spec = job.get("language_model", {})
    lm = LanguageModel(lm_spec.get("budget", 4), lm_spec.get("max_responses_per_call", 6))
    state = tw.snapshot()
    seed_generators(int(job.get("seed") or 0))
    try:
        ns = load_candidate(job["source"])
        fn = ns.get(job.get("entry", "improve_algorithm"))
        if not callable(fn):
            return {"returned": None, "error": f"no function {job.get('entry')!r}"}
        returned = fn(job.get("initial_solution", ""), utility, lm)
    except BaseException as e:  # noqa: B036
        if os.getpid() != _PID:
            os._exit(0)
        tw.report_exception(e)
        return {"returned": None, "error": tw.format_error(e)}
    if os.getpid() != _PID:
        os._exit(0)
    tw.check_integrity(state)
    try:
        return {"returned": codec.encode(returned)}
    except BaseException as e:  # noqa: B036
        return {"returned": None, "error": f"unencodable result: {tw.format_error(e)}"}


def stderr_tag(nonce):
    """What follows protocol.STDERR_END in the end-of-stderr mark (not the nonce itself: the
    candidate may be reading the stream)."""
    return hashlib.sha256(nonce.encode()).hexdigest()[:16].encode()


def main():
    global CHAN
    chan_in = os.fdopen(os.dup(0), "rb")
    line = chan_in.readline()
    job = json.loads(line)
    nonce = job.pop("nonce")
    proto_fd = os.dup(1)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    r, w = os.pipe()
    os.dup2(w, 1)
    os.close(w)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False, buffering=1 if job.get("line_buffered") else -1)
    CHAN = Channel(proto_fd, chan_in, nonce)
    fwd = Forwarder(r, int(job.get("output_bytes", 262144)))
    fwd.start()
    threading.Thread(target=CHAN.read_replies, daemon=True).start()
    tw.install(CHAN, (Utility, LanguageModel, Channel))
    CHAN.send(protocol.HELLO, pid=os.getpid())
    kind = job.get("kind")
    body = run_solve(job) if kind == protocol.SOLVE else run_improve(job)
    tw.ACTIVE[0] = False
    _flush()
    fwd.finish()
    left = tw.leftover_processes(job.get("isolation", "container") == "container")
    if left:
        CHAN.finding("daemon-child", f"{len(left)} process(es) still running after the call",
                     layer="container", pids=left[:10])
    try:
        sys.stderr.flush()
        _real_write(2, protocol.STDERR_END + stderr_tag(nonce) + b"\x00")
    except BaseException:  # noqa: B036  (fd 2 may be closed or replaced by the candidate)
        pass
    CHAN.send(protocol.DONE, stdout_bytes=fwd.total, **body)
    os._exit(0)


if __name__ == "__main__":
    main()
