"""The server's gate, over HTTP: the token on every request, the cookie, read-only methods,
the Host check and the response headers. A real `stop ui` process over a copy of the report
fixture; no browser needed."""

from __future__ import annotations

import http.client

import pytest
import uiruns
from conftest import Server

from stop.ui.security import CSP


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("sec-runs")
    run = uiruns.copy_report_run(root)
    server = Server(root, tmp_path_factory.mktemp("sec-cache"))
    yield server, run, root
    server.stop()


def request(server: Server, path: str, *, method: str = "GET", cookie: str | None = None,
            host: str | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    headers = {"Host": host or f"127.0.0.1:{server.port}"}
    if cookie is not None:
        headers["Cookie"] = cookie
    conn.request(method, path, headers=headers)
    r = conn.getresponse()
    r.body = r.read()
    conn.close()
    return r


def test_every_path_refuses_a_request_without_the_token(served):
    server, run, _ = served
    for path in ("/", f"/runs/{run.id}", f"/runs/{run.id}/rounds/1", f"/runs/{run.id}/stream",
                 "/audit", "/experiments", "/static/ui.js", "/static/code.css", "/nope"):
        r = request(server, path)
        assert r.status == 401, path
        assert b"token" in r.body and run.id.encode() not in r.body
        assert r.getheader("content-security-policy") == CSP
    # a wrong token, in the URL or in the cookie, and the right token under another port's name
    assert request(server, "/?token=" + "x" * len(server.token)).status == 401
    assert request(server, "/?token=").status == 401
    assert request(server, "/", cookie=f"{server.cookie}=wrong").status == 401
    assert request(server, "/", cookie=f"stop_ui_1={server.token}").status == 401
    assert request(server, "/", cookie=f"{server.cookie}={server.token}").status == 200


def test_the_token_becomes_a_strict_cookie_and_leaves_the_url(served):
    server, run, _ = served
    r = request(server, f"/audit?severity=high&token={server.token}")
    assert r.status == 303
    assert r.getheader("location") == "/audit?severity=high"
    cookie = r.getheader("set-cookie")
    assert cookie == f"{server.cookie}={server.token}; Path=/; HttpOnly; SameSite=Strict"
    assert request(server, f"/?token={server.token}").getheader("location") == "/"
    # never a redirect to another host, whatever the path looks like
    r = request(server, f"//evil.example/x?token={server.token}")
    assert r.getheader("location") == "/evil.example/x"
    r = request(server, f"/runs/%0d%0aSet-Cookie:x=1?token={server.token}")
    assert r.getheader("location") == "/runs/%0d%0aSet-Cookie:x=1" and "x=1" not in (
        r.getheader("set-cookie") or "").split(";")[0]


def test_responses_carry_strict_headers_and_nothing_writes(served):
    server, run, root = served
    before = uiruns.snapshot(root)
    cookie = f"{server.cookie}={server.token}"
    for path in ("/", f"/runs/{run.id}", f"/runs/{run.id}/rounds/2", "/audit", "/experiments",
                 f"/runs/{run.id}/live", "/runs/table?sort=cost"):
        r = request(server, path, cookie=cookie)
        assert r.status == 200, path
        assert r.getheader("content-security-policy") == CSP
        assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
        assert r.getheader("x-content-type-options") == "nosniff"
        assert r.getheader("x-frame-options") == "DENY"
        assert r.getheader("referrer-policy") == "no-referrer"
        assert r.getheader("cache-control") == "no-store"
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        r = request(server, "/", method=method, cookie=cookie)
        assert r.status == 405 and r.getheader("allow") == "GET, HEAD"
    assert request(server, "/static/ui.js", cookie=cookie).getheader("content-type").startswith(
        "text/javascript")
    assert uiruns.snapshot(root) == before  # the view wrote nothing into the runs folder


def test_a_foreign_host_header_is_refused(served):
    server, _, _ = served
    cookie = f"{server.cookie}={server.token}"
    assert request(server, "/", cookie=cookie, host=f"evil.example:{server.port}").status == 421
    assert request(server, "/", cookie=cookie, host=f"localhost:{server.port}").status == 200


def test_unknown_things_are_one_line_pages(served):
    server, run, _ = served
    cookie = f"{server.cookie}={server.token}"
    for path, status in ((f"/runs/{run.id}/rounds/99", 404), ("/runs/no-such-run", 404),
                         ("/runs/..%2f..%2fetc", 404), ("/audit/ffffffffffff", 404),
                         (f"/runs/{run.id}/candidates/zz", 404), ("/audit?severity=huge", 400)):
        r = request(server, path, cookie=cookie)
        assert r.status == status, path
        assert b"Traceback" not in r.body and b'class="error"' in r.body
