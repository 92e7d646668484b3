"""The relayed bridge: service requests of remote containers, answered on the driver.

A container's improver calls `utility(...)` and `language_model.batch_prompt(...)` as request
frames; the worker that runs the container (stop.cluster.node) passes each one to the
`Mailbox`, a Ray actor on the driver's own node, and waits for the reply. The driver's `Relay`
takes the requests from the mailbox and answers them with the execution's own services
object, in the driver's process: the model gateway, every budget counter, the response cache
and the run's event log never leave the driver. The mailbox holds no budget and no key; it
only matches replies to waiting requests.

Threat model: request parameters are the candidate's, so hostile; they are plain JSON values
(the worker's bridge parsed them) and reach only the same services a local execution uses.
A request for an execution that is over is refused.

Retries: a task whose node died is run again (on another node) under the same execution. Its
requests are answered from a `Journal` of the earlier attempt's answers, matched by method,
parameters and occurrence, so the retry spends no budget twice and logs nothing twice; a
request the earlier attempt never made goes to the services as usual.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from stop.sandbox.services import ServiceError, ServiceHandler

REQUESTS_PER_EXECUTION = 32  # the bridge allows 16 in flight per attempt; a retry overlaps one
POLL_S = 0.5


class Mailbox:
    """A Ray actor (async) on the driver's node: requests in, replies back to their callers."""

    def __init__(self) -> None:
        import asyncio

        self._queue: asyncio.Queue = asyncio.Queue()
        self._waiting: dict[int, asyncio.Future] = {}
        self._next = 0

    async def call(self, exec_id: str, attempt: int, method: str, params: dict) -> tuple:
        import asyncio

        self._next += 1
        key = self._next
        fut = asyncio.get_running_loop().create_future()
        self._waiting[key] = fut
        self._queue.put_nowait(("req", key, exec_id, attempt, method, params))
        try:
            return await fut
        finally:
            self._waiting.pop(key, None)

    async def note(self, exec_id: str, attempt: int, info: dict) -> None:
        """A task tells the driver it started (where, in which process)."""
        self._queue.put_nowait(("started", 0, exec_id, attempt, "", info))

    async def take(self, timeout: float) -> list[tuple]:
        import asyncio

        try:
            items = [await asyncio.wait_for(self._queue.get(), timeout)]
        except TimeoutError:
            return []
        while not self._queue.empty() and len(items) < 256:
            items.append(self._queue.get_nowait())
        return items

    async def answer(self, replies: list[tuple[int, tuple]]) -> None:
        for key, reply in replies:
            fut = self._waiting.get(key)
            if fut is not None and not fut.done():
                fut.set_result(reply)

    async def ping(self) -> bool:
        return True


def _canonical(params: dict) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=repr)


class Journal:
    """One execution's services, with every answer kept per (method, params, occurrence)."""

    def __init__(self, services: ServiceHandler) -> None:
        self.services = services
        self._lock = threading.Lock()
        self._answers: dict[tuple[str, str, int], Future] = {}
        self._seen: dict[tuple[int, str, str], int] = {}
        self.calls = 0  # requests that reached the services (not served from the journal)

    def call(self, attempt: int, method: str, params: dict) -> tuple[str, Any]:
        base = (method, _canonical(params))
        with self._lock:
            n = self._seen.get((attempt, *base), 0)
            self._seen[(attempt, *base)] = n + 1
            fut = self._answers.get((*base, n))
            owner = fut is None
            if owner:
                fut = Future()
                self._answers[(*base, n)] = fut
                self.calls += 1
        if owner:
            try:
                reply: tuple[str, Any] = ("ok", self.services(method, params))
            except ServiceError as e:
                reply = ("err", str(e))
            except Exception as e:  # the same words a local execution's bridge would send
                reply = ("err", f"host service failed: {type(e).__name__}: {e}")
            fut.set_result(reply)
        return fut.result()


class ExecState:
    """What the driver knows of one remote execution while it runs."""

    def __init__(self, exec_id: str, services: ServiceHandler | None) -> None:
        self.exec_id = exec_id
        self.journal = Journal(services) if services is not None else None
        self.pool: ThreadPoolExecutor | None = None
        self.started: dict[int, tuple[float, dict]] = {}  # attempt -> (monotonic, where)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._busy_since: float | None = None
        self._service_s = 0.0

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            if self._busy_since is None:
                self._busy_since = time.monotonic()

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0 and self._busy_since is not None:
                self._service_s += time.monotonic() - self._busy_since
                self._busy_since = None

    def service_seconds(self) -> float:
        """Time with a service request in flight: not charged to the candidate's clock."""
        with self._lock:
            busy = time.monotonic() - self._busy_since if self._busy_since is not None else 0.0
            return self._service_s + busy

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


class Relay:
    """The driver's end: one thread takes requests from the mailbox and serves each in the
    execution's own thread pool."""

    def __init__(self, ray: Any, node_id: str) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray = ray
        actor = ray.remote(Mailbox).options(
            num_cpus=0, max_concurrency=10000, max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
        self.mailbox = actor.remote()
        ray.get(self.mailbox.ping.remote(), timeout=120)
        self._execs: dict[str, ExecState] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.broken: str | None = None
        self._thread = threading.Thread(target=self._loop, name="stop-relay", daemon=True)
        self._thread.start()

    def register(self, exec_id: str, services: ServiceHandler | None) -> ExecState:
        state = ExecState(exec_id, services)
        with self._lock:
            self._execs[exec_id] = state
        return state

    def unregister(self, exec_id: str) -> None:
        with self._lock:
            state = self._execs.pop(exec_id, None)
        if state is not None:
            state.close()

    def _loop(self) -> None:
        while not self._closed:
            try:
                items = self.ray.get(self.mailbox.take.remote(POLL_S))
            except Exception as e:
                if self._closed:
                    return
                self.broken = f"the relay on the driver's node failed: {type(e).__name__}"
                return
            for kind, key, exec_id, attempt, method, params in items:
                with self._lock:
                    state = self._execs.get(exec_id)
                if kind == "started":
                    if state is not None:
                        state.started.setdefault(attempt, (time.monotonic(), params))
                    continue
                if state is None or state.journal is None:
                    self._answer(key, ("err", f"no host services for {method!r}: the "
                                       "execution is over"))
                    continue
                if state.pool is None:
                    state.pool = ThreadPoolExecutor(REQUESTS_PER_EXECUTION,
                                                    thread_name_prefix="stop-relay-serve")
                try:
                    state.pool.submit(self._serve, state, key, attempt, method, params)
                except RuntimeError:  # the execution closed meanwhile
                    self._answer(key, ("err", "the execution is over"))

    def _serve(self, state: ExecState, key: int, attempt: int, method: str, params: dict) -> None:
        state.enter()
        try:
            assert state.journal is not None
            reply = state.journal.call(attempt, method, params)
        finally:
            state.leave()
        self._answer(key, reply)

    def _answer(self, key: int, reply: tuple) -> None:
        try:
            self.mailbox.answer.remote([(key, reply)])
        except Exception:
            pass  # the mailbox is gone: the caller's task fails and is reported as such

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=2 * POLL_S + 1)
        try:
            self.ray.kill(self.mailbox)
        except Exception:
            pass
        with self._lock:
            states = list(self._execs.values())
            self._execs.clear()
        for s in states:
            s.close()
