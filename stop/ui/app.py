"""The web view as an ASGI app: Starlette routes over the page functions, behind the Guard.

Starlette is imported when the app is built, not when stop starts (`stop --help` stays fast).
Page functions run in a worker thread (they read files); a page that fails answers with one
line, never a traceback, and the server keeps serving.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stop.errors import StopError
from stop.runs.store import StoreError
from stop.ui import code, live, pages_audit, pages_runs
from stop.ui.security import Guard
from stop.ui.site import HERE, BadRequest, Html, NotFound, Site

Page = Callable[[Site, dict[str, str], dict[str, str]], Html]
STATIC = {"ui.js": "text/javascript; charset=utf-8", "ui.css": "text/css; charset=utf-8"}


def _answer(site: Site, page: Page, path: dict[str, str], query: dict[str, str]) -> Html:
    try:
        return page(site, path, query)
    except NotFound as e:
        return site.error(404, str(e))
    except BadRequest as e:
        return site.error(400, str(e))
    except (StoreError, StopError) as e:
        return site.error(404 if "no run" in str(e) else 422, str(e))
    except Exception as e:  # noqa: BLE001 - one line for the user, the server goes on
        print(f"stop ui: {page.__name__} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return site.error(500, f"this page could not be built: {type(e).__name__}: {e}")


def create_app(site: Site, *, token: str, port: int, hosts: set[str] | None) -> Any:
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, Response, StreamingResponse
    from starlette.routing import Route

    def endpoint(page: Page) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            html = await run_in_threadpool(_answer, site, page, dict(request.path_params),
                                           dict(request.query_params))
            return HTMLResponse(html.body, status_code=html.status)
        handle.__name__ = page.__name__
        return handle

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "code.css":
            return Response(code.code_css(), media_type="text/css; charset=utf-8")
        if name not in STATIC:
            return Response("not found\n", status_code=404, media_type="text/plain")
        return Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name])

    async def stream(request: Request) -> Response:
        try:
            run = site.load(request.path_params["run"])
        except NotFound as e:
            return Response(f"{e}\n", status_code=404, media_type="text/plain")
        return StreamingResponse(live.change_stream(Path(run.dir) / "events.jsonl"),
                                 media_type="text/event-stream")

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    routes = [
        Route("/", endpoint(pages_runs.runs_page)),
        Route("/runs/table", endpoint(pages_runs.runs_table)),
        Route("/runs/{run}", endpoint(pages_runs.run_page)),
        Route("/runs/{run}/live", endpoint(pages_runs.run_live)),
        Route("/runs/{run}/stream", stream),
        Route("/runs/{run}/rounds/{round}", endpoint(pages_runs.round_page)),
        Route("/runs/{run}/candidates/{hash}", endpoint(pages_runs.candidate_page)),
        Route("/audit", endpoint(pages_audit.audit_page)),
        Route("/audit/{id}", endpoint(pages_audit.finding_page)),
        Route("/experiments", endpoint(pages_audit.experiments_page)),
        Route("/static/{name}", static),
        Route("/favicon.ico", favicon),
    ]
    async def not_found(request: Request, exc: Exception) -> Response:
        page = site.error(404, f"nothing at {request.url.path}")
        return HTMLResponse(page.body, status_code=404)

    app = Starlette(routes=routes, exception_handlers={404: not_found})
    return Guard(app, token=token, port=port, hosts=hosts)
