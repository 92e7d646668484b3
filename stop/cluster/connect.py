"""Connecting the driver to Ray: a local instance that stop starts and stops, or a running cluster.

Threat model: the driver is trusted and holds the provider keys; nodes are not given any. A
local instance is started with token authentication on (a fresh random token, passed to the
Ray processes through their environment), no dashboard, every socket on 127.0.0.1, and an
environment from which every provider key and other secret has been removed, so no Ray
process (and no container a worker starts, whose environment is empty anyway) ever sees one.
Connecting to a running cluster turns token authentication on for the driver (the cluster's
token comes from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, as Ray reads it).

Ray is imported inside functions only: `stop --help` and every local command stay free of it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stop.errors import StopError

EXECUTORS = ("local", "ray")
RAY_VERSION = "2.60.0"  # the pin of the `ray` extra in pyproject.toml
NAMESPACE = "stop"
DOCKER = "docker"  # the custom resource a node advertises when it can run sandbox containers
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray binds every socket to 127.0.0.1
DRIVER_OPTIONS: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": False,
                                  "logging_level": logging.WARNING}
CONNECT_TIMEOUT_S = 5.0

# Environment names that carry secrets: provider keys, cloud credentials, tokens. Ray's own
# settings (RAY_AUTH_TOKEN included, which the Ray processes need) are kept.
_SECRET = re.compile(r"(API_?KEY|_TOKEN$|^TOKEN$|SECRET|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|"
                     r"^AWS_|^AZURE_|^GOOGLE_APPLICATION|^HF_|^HUGGING)", re.IGNORECASE)
_ENV_LOCK = threading.RLock()


class ClusterError(StopError):
    """The cluster cannot be used as asked: the message names the cause and the fix."""


def secret_names(env: dict[str, str] | None = None) -> list[str]:
    """Names in `env` (default: this process's environment) that may carry a secret."""
    env = os.environ if env is None else env
    return sorted(k for k in env if _SECRET.search(k) and not k.startswith("RAY_"))


@contextlib.contextmanager
def scrubbed_environ() -> Iterator[list[str]]:
    """Remove every secret from os.environ while Ray starts its processes (they copy the
    environment at that moment), then put them back for the driver's own model gateway."""
    with _ENV_LOCK:
        saved = {k: os.environ.pop(k) for k in secret_names()}
        try:
            yield sorted(saved)
        finally:
            os.environ.update(saved)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError(f"--executor ray needs Ray: pip install 'stop[ray]' (ray=={RAY_VERSION})"
                           ) from None
    return ray


def is_loopback(address: str) -> bool:
    host = split_address(address)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_address(address: str) -> tuple[str, int]:
    text = address.strip()
    if text.startswith("ray://"):
        raise ClusterError(f"--ray-address {address}: Ray Client addresses (ray://) are not "
                           "supported; run stop on a node of the cluster and pass host:port or auto")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"--ray-address {address!r}: expected HOST:PORT (the head's GCS "
                           "address, port 6379 by default) or auto")
    return host.strip("[]"), int(port)


def current_cluster_address() -> str | None:
    """The address a `ray start` on this machine recorded (what Ray's own `auto` reads)."""
    p = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"
    try:
        text = p.read_text().strip()
    except OSError:
        return None
    return text or None


def resolve_address(address: str) -> str:
    if address.strip() != "auto":
        split_address(address)
        return address.strip()
    env = os.environ.get("RAY_ADDRESS", "").strip()
    found = env if env and env != "auto" else current_cluster_address()
    if not found:
        raise ClusterError("--ray-address auto: no running Ray cluster found on this machine "
                           "(start one with `ray start --head`, or give HOST:PORT)")
    split_address(found)
    return found


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A plain TCP connect to the head's GCS port, so a wrong address fails in seconds with
    one line instead of Ray's long retry loop."""
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {why} (is the head "
                           "running, and is this its GCS address?)") from None


def loopback_mode(ray: Any) -> None:
    """Every socket of the Ray processes this driver starts, and its own, on 127.0.0.1."""
    os.environ[LOOPBACK_ENV] = "0"
    # Read by Ray at import time; set it on the module too when Ray was imported before.
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False


@dataclass
class RaySession:
    """The driver's connection. `owned`: stop called ray.init and so calls ray.shutdown."""

    ray: Any
    address: str
    local: bool
    owned: bool
    on_close: Callable[[], None] | None = None

    def close(self) -> None:
        try:
            if self.owned and self.ray.is_initialized():
                self.owned = False
                self.ray.shutdown()
        finally:
            if self.on_close is not None:
                self.on_close, on_close = None, self.on_close
                on_close()


def connect(address: str) -> RaySession:
    """A driver connected to the running cluster at `address` (HOST:PORT or auto). A local
    instance is started by `stop.cluster.local.start_local` instead."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        ray = sys.modules["ray"]  # the caller (a test, a notebook) connected already
        return RaySession(ray, ray.get_runtime_context().gcs_address, local=False, owned=False)
    resolved = resolve_address(address)
    # Ray reads these when it is imported (and caches the token): set them first.
    os.environ["RAY_AUTH_MODE"] = "token"
    if is_loopback(resolved):
        os.environ[LOOPBACK_ENV] = "0"
    ray = import_ray()
    refresh_auth(ray)
    if is_loopback(resolved):
        loopback_mode(ray)
    check_reachable(resolved)
    if not _token_available():
        raise ClusterError("token authentication is on, but no Ray token is set: export "
                           "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) with the cluster's token, "
                           "or put it in ~/.ray/auth_token (`ray get-auth-token` on the head)")
    try:
        ray.init(address=resolved, **DRIVER_OPTIONS)
    except Exception as e:
        raise ClusterError(explain_connect_error(resolved, e)) from None
    errors_to_stderr(ray)
    return RaySession(ray, resolved, local=False, owned=True)


def errors_to_stderr(ray: Any) -> None:
    """Ray's driver prints cluster error messages (a raylet that died, ...) on stdout, which is
    stop's data channel (run folders, JSON): send them to stderr instead."""
    worker = ray._private.worker
    original = getattr(worker, "_stop_original_print", None) or worker.print_to_stdstream

    def to_stderr(data: dict, ignore_prefix: bool) -> None:
        original({**data, "is_err": True}, ignore_prefix)

    worker._stop_original_print = original
    worker.print_to_stdstream = to_stderr


def refresh_auth(ray: Any) -> None:
    """Make an already imported Ray see the token settings (it caches them at import)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except Exception:  # an older or newer Ray without these: the settings were read at import
        pass


def _token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    try:
        return bool(Path(path).read_text().strip())
    except OSError:
        return False


def explain_connect_error(address: str, e: BaseException) -> str:
    """One line for what ray.init raised."""
    text = str(e)
    if "Version mismatch" in text:
        found = dict(re.findall(r"(Ray|Python): (\S+)", text)[:2])
        mine = dict(re.findall(r"(Ray|Python): (\S+)", text)[2:4])
        return (f"the Ray cluster at {address} runs Ray {found.get('Ray', '?')} on Python "
                f"{found.get('Python', '?')}, this driver Ray {mine.get('Ray', '?')} on Python "
                f"{mine.get('Python', '?')}: install the same versions on every node and here")
    if "auth" in text.lower() or "unauthenticated" in text.lower():
        return (f"the Ray cluster at {address} refused this driver's token: use the cluster's "
                "token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")
    return f"could not connect to the Ray cluster at {address}: {first_line(e)}"


def first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:300]


def docker_nodes(ray: Any) -> list[dict[str, Any]]:
    """The alive nodes that advertise the `docker` resource."""
    return [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(DOCKER, 0) > 0]
