"""The embedded local model served on 127.0.0.1, as a `Model`, and its status.

The server (`stop.models.local_server`) is started on demand and stopped when the model is
closed or the process exits; its log goes to `cache_dir()/logs/`. Installing the weights and
the runtime is `stop.models.local_install`.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from stop.fsutil import pid_alive
from stop.models.base import Model, ModelReply, ModelRequest
from stop.models.litellm_model import LiteLLMModel, model_timeout
from stop.models.local_install import (
    EMBEDDED,
    LLAMA_VERSION,
    SMOKE,
    SPECS,
    LocalModelError,
    runtime_version,
    verify_weights,
    weights_path,
)
from stop.paths import cache_dir

__all__ = ["EMBEDDED", "SMOKE", "SPECS", "LocalModel", "LocalModelError", "LocalServer",
           "running_servers", "status", "verify_weights", "weights_path"]

# Generation on a CPU is slow: one request of six long samples can take many minutes.
LOCAL_TIMEOUT_S = 3600.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def servers_dir() -> Path:
    return cache_dir() / "models" / "servers"


def stats_path(which: str = "embedded") -> Path:
    return cache_dir() / "models" / f"last_use-{which}.json"


def _rss_mb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return None


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def running_servers() -> list[dict]:
    """Servers started by stop that are still alive (their state files name pid, port, model)."""
    out = []
    d = servers_dir()
    if not d.is_dir():
        return out
    for f in sorted(d.glob("*.json")):
        try:
            info = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if pid_alive(info.get("pid")):
            info["rss_mb"] = _rss_mb(int(info["pid"]))
            out.append(info)
        else:
            f.unlink(missing_ok=True)
    return out


class LocalServer:
    """One `stop.models.local_server` process on 127.0.0.1 with a free port; health-checked."""

    def __init__(self, which: str = "embedded", *, threads: int | None = None,
                 n_ctx: int | None = None, exit_with_parent: bool = True, port: int | None = None,
                 advertise: bool = True) -> None:
        self.which = which
        self.spec = SPECS[which]
        self.threads = threads or int(os.environ.get("STOP_LOCAL_THREADS", "0") or 0) or None
        self.n_ctx = n_ctx
        self.exit_with_parent = exit_with_parent
        self.advertise = advertise  # listed for reuse by other processes of this project
        self.proc: subprocess.Popen | None = None
        self.port: int | None = port
        self.log_path = cache_dir() / "logs" / f"local-model-{which}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180.0) -> str:
        path = weights_path(self.which)
        if not verify_weights(self.which)["ok"]:
            flag = " --smoke" if self.which == "smollm2" else ""
            raise LocalModelError(f"the {self.which} model is not installed or fails its sha256 check "
                                  f"({path}); run `stop model install{flag}`")
        if runtime_version() is None:
            raise LocalModelError("llama-cpp-python is not installed; run `stop model install`")
        self.port = self.port or _free_port()
        cmd = [sys.executable, "-m", "stop.models.local_server", "--model", str(path),
               "--port", str(self.port), "--alias", self.spec.alias,
               "--stats", str(stats_path(self.which))]
        if self.n_ctx:  # else the server sizes its KV cache from the memory available
            cmd += ["--n-ctx", str(self.n_ctx)]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        if self.exit_with_parent:
            cmd.append("--exit-with-parent")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "a")
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        log.flush()
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LocalModelError(f"the local model server exited with code {self.proc.returncode} "
                                      f"while starting; see {self.log_path}")
            if _healthy(self.url, timeout=1.0):
                servers_dir().mkdir(parents=True, exist_ok=True)
                if self.advertise:
                    (servers_dir() / f"{self.proc.pid}.json").write_text(json.dumps({
                        "pid": self.proc.pid, "port": self.port, "url": self.url,
                        "model": self.spec.alias, "path": str(path), "log": str(self.log_path),
                        "shared": not self.exit_with_parent, "started": round(time.time(), 3)}))
                atexit.register(self.stop)
                return self.url
            time.sleep(0.25)
        self.stop()
        raise LocalModelError(f"the local model server did not answer within {timeout_s:.0f} s; "
                              f"see {self.log_path}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        (servers_dir() / f"{proc.pid}.json").unlink(missing_ok=True)


class LocalModel(Model):
    """The embedded model as a `Model`: starts its server on first use, talks to it via litellm.

    Free (its replies cost nothing), and its replies are cached on disk like a paid model's.
    `timeout_s`: per request; default STOP_MODEL_TIMEOUT_S, else an hour (CPU generation is slow).
    """

    def __init__(self, which: str = "embedded", *, threads: int | None = None,
                 timeout_s: float | None = None) -> None:
        if which not in SPECS:
            raise LocalModelError(f"unknown local model {which!r}; choose embedded or smollm2")
        self.which = which
        self.spec = SPECS[which]
        self.name = f"local/{self.spec.alias}"
        self.server = LocalServer(which, threads=threads)
        self.timeout_s = model_timeout(timeout_s, LOCAL_TIMEOUT_S)
        self._client: LiteLLMModel | None = None
        self._url = ""
        self._lock = threading.Lock()

    def _ensure(self) -> LiteLLMModel:
        with self._lock:
            if self._client is not None and (self.server.proc is None or self.server.proc.poll() is None):
                if self.server.proc is not None or _healthy(self._url):
                    return self._client
            # One server per model on the machine: a second one would only fight the first for
            # the same cores. It answers one request at a time, so sharing it is safe.
            live = [s for s in running_servers()
                    if s.get("model") == self.spec.alias and _healthy(s["url"])]
            live.sort(key=lambda s: not s.get("shared"))
            self._url = live[0]["url"] if live else self.server.start()
            self._client = LiteLLMModel(f"openai/{self.spec.alias}", api_base=f"{self._url}/v1",
                                        api_key="local", display_name=self.name, timeout_s=self.timeout_s,
                                        free=True)
            return self._client

    def complete(self, req: ModelRequest) -> ModelReply:
        return self._ensure().complete(req)

    def close(self) -> None:
        with self._lock:
            self.server.stop()
            self._client = None


def last_use(which: str = "embedded") -> dict | None:
    try:
        return json.loads(stats_path(which).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def status(which: str = "embedded", *, full: bool = False) -> dict:
    info = verify_weights(which, full=full)
    return {
        "model": SPECS[which].alias, "weights": info, "runtime": runtime_version(),
        "runtime_expected": LLAMA_VERSION,
        "servers": [s for s in running_servers() if s.get("model") == SPECS[which].alias],
        "last_use": last_use(which),
    }
