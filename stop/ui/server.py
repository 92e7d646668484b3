"""Starting the web view: check the runs folder, bind the socket, print the URL, serve.

The socket is bound here, before uvicorn starts, so a port in use or a host that cannot be
bound is one clear line, and port 0 can print the port it got.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import time
import webbrowser
from collections.abc import Callable
from pathlib import Path

from stop.errors import StopError
from stop.ui.app import create_app
from stop.ui.security import new_token
from stop.ui.site import Site


class UIError(StopError):
    """The web view cannot start as asked; the message says why and what to do."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_runs_root(root: Path) -> None:
    if not root.exists():
        raise UIError(f"runs folder {root} does not exist; start a run with `stop run`, or set "
                      "STOP_RUNS_DIR to the folder that holds your runs")
    if not root.is_dir():
        raise UIError(f"runs folder {root} is not a folder; set STOP_RUNS_DIR to a folder")


def bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise UIError(f"cannot use host {host!r}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UIError(f"port {port} on {host} is in use; pick another with --port "
                          "(--port 0 takes a free one)") from None
        raise UIError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def serve(runs_root: Path, cache_root: Path | None, *, host: str = "127.0.0.1", port: int = 8765,
          open_browser: bool = False, say: Callable[[str], None] = print,
          note: Callable[[str], None] = print) -> None:
    """Serve the runs under `runs_root` until interrupted. `say` gets the URL (stdout),
    `note` everything else (stderr)."""
    try:
        import jinja2  # noqa: F401
        import pygments  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise UIError(f"the web view needs the `ui` extra ({e.name} is missing): "
                      "pip install -e '.[ui]'") from None
    runs_root = Path(runs_root)
    check_runs_root(runs_root)
    sock = bind(host, port)
    port = sock.getsockname()[1]
    token = new_token()
    site = Site(runs_root, cache_root)
    started = time.monotonic()
    site.index.refresh()
    for n in site.notes:
        note(f"note: {n}")
    if not is_loopback(host):
        note(f"warning: listening on {host}, not loopback: anyone who can reach this port and "
             "learns the token can read your runs (plain HTTP)")
    hosts = None if host in ("0.0.0.0", "::") else {
        f"{h}:{port}" for h in {_url_host(host), "127.0.0.1", "localhost", "[::1]"}
        if is_loopback(host) or h == _url_host(host)}
    url = f"http://{_url_host(host)}:{port}/?token={token}"
    note(f"stop ui: {len(site.index.rows())} runs from {runs_root} (indexed in "
         f"{time.monotonic() - started:.1f}s); read-only; Ctrl-C stops")
    say(url)
    app = create_app(site, token=token, port=port, hosts=hosts)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            proxy_headers=False, server_header=False,
                            timeout_graceful_shutdown=1)
    if open_browser:
        webbrowser.open(url)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        site.index.close()
