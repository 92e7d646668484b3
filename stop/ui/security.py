"""The web view's gate: a token on every request, read-only methods, strict response headers.

Threat model: the server is reachable by anything that can open a socket on its host and port
(other local users, and web pages in the user's own browser, which can send requests to
127.0.0.1 or rebind a hostile name to it). So every request must prove it knows the random
token printed with the URL: either as `?token=` (the first visit; answered with a redirect
that sets the cookie and drops the token from the address bar and history) or as the cookie
(HttpOnly, so page scripts cannot read it; SameSite=Strict, so other sites' pages cannot make
the browser send it). A request whose Host header is not the server's own address is refused
as well (DNS rebinding). Only GET and HEAD are answered: nothing here writes. Every response,
refusals included, carries a Content-Security-Policy that allows scripts from this server's
own files only, no inline script, no framing, and no connections elsewhere.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), clipboard-write=()"),
]
REFUSED = ("This view needs its token: open the URL that `stop ui` printed "
           "(it carries ?token=...).\n")


def new_token() -> str:
    return secrets.token_urlsafe(24)


def cookie_name(port: int) -> str:
    # Cookies ignore ports: two views on one host would overwrite each other's cookie.
    return f"stop_ui_{port}"


def _cookies(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in raw.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            out.setdefault(name, value)
    return out


class Guard:
    """ASGI middleware in front of the whole app (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, token: str, port: int, hosts: set[str] | None) -> None:
        """`hosts`: the Host header values accepted (None: any, when bound to all addresses)."""
        self.app, self.token, self.cookie = app, token, cookie_name(port)
        self.hosts = None if hosts is None else {h.lower() for h in hosts}

    def _valid(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        if self.hosts is not None and headers.get("host", "").lower() not in self.hosts:
            await _plain(send, 421, "unexpected Host header; open the URL `stop ui` printed\n")
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _plain(send, 405, "this view is read-only\n", [(b"allow", b"GET, HEAD")])
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        if given:
            if not self._valid(given[-1]):
                await _plain(send, 401, REFUSED)
                return
            await _plain(send, 303, "", [
                (b"location", self._without_token(scope, query).encode("latin-1")),
                (b"set-cookie", f"{self.cookie}={self.token}; Path=/; HttpOnly; "
                                "SameSite=Strict".encode()),
            ])
            return
        if not self._valid(_cookies(headers.get("cookie", "")).get(self.cookie)):
            await _plain(send, 401, REFUSED)
            return

        async def guarded(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*_drop(message.get("headers", [])), *HEADERS]
            await send(message)

        await self.app(scope, receive, guarded)

    @staticmethod
    def _without_token(scope: Scope, query: list[tuple[str, str]]) -> str:
        raw = scope.get("raw_path") or quote(scope.get("path", "/")).encode()
        # Percent-encoded bytes only (no CR/LF), and one leading slash: never `//host`.
        path = "/" + quote(raw.decode("latin-1"), safe="/%:@!$&'()*+,;=-._~").lstrip("/")
        rest = [(k, v) for k, v in query if k != "token"]
        return path + ("?" + urlencode(rest) if rest else "")


def _drop(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    ours = {k for k, _ in HEADERS}
    return [(k, v) for k, v in headers if k.lower() not in ours]


async def _plain(send: Send, status: int, body: str,
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:
    data = body.encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(data)).encode()), *HEADERS, *(extra or [])]})
    await send({"type": "http.response.body", "body": data})
