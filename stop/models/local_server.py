"""An OpenAI-compatible chat server for a local GGUF model, on the batched engine.

llama-cpp-python's own server ignores `n`: six samples of one prompt are six requests, each
decoded alone. Here every request goes to `stop.models.engine.Engine`, which evaluates a prompt
once, decodes its `n` samples together with those of any other request that is running (a
request that arrives mid-batch joins at the next step), drafts tokens by lookup in the prompt
and the text written so far, and keeps several prompt prefixes cached.

Run: `python -m stop.models.local_server --model FILE --port N [--alias NAME] [--stats FILE]`.
Endpoints: GET /health, GET /v1/models, POST /v1/chat/completions (no streaming; `n`, `seed`,
`stop`, `max_tokens`, `temperature`, and the extensions `ignore_eos` and `lookup`).
It listens on 127.0.0.1 only and exits when the process that started it goes away.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from stop.fsutil import write_atomic
from stop.models.engine import Engine


def make_handler(engine: Engine, alias: str, stats_path: Path | None) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"{time.strftime('%H:%M:%S')} {format % args}\n")

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.rstrip("/") in ("/health", ""):
                self._send(200, {"status": "ok", "model": alias})
            elif self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(200, {"object": "list", "data": [{"id": alias, "object": "model",
                                                              "owned_by": "local"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if body.get("stream"):
                    raise ValueError("streaming is not supported")
                stop = body.get("stop")
                out = engine.chat(body["messages"], n=body.get("n") or 1,
                                  temperature=float(body.get("temperature", 0.7)),
                                  max_tokens=body.get("max_tokens") or 256, seed=body.get("seed"),
                                  stop=[stop] if isinstance(stop, str) else stop,
                                  ignore_eos=bool(body.get("ignore_eos")),
                                  lookup=body.get("lookup", True) is not False)
            except (ValueError, KeyError, TypeError) as e:
                self._send(400, {"error": {"message": str(e), "type": "invalid_request_error"}})
                return
            except Exception as e:  # the model itself failed: a server error, retryable
                self._send(500, {"error": {"message": f"{type(e).__name__}: {e}"}})
                return
            if stats_path is not None:  # before the reply, so a client that reads it sees this one
                write_stats(stats_path, alias, out)
            self._send(200, {
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion",
                "created": int(time.time()), "model": alias,
                "choices": [{"index": i, "finish_reason": f,
                             "message": {"role": "assistant", "content": t}}
                            for i, (t, f) in enumerate(zip(out["texts"], out["finish"], strict=True))],
                "usage": {"prompt_tokens": out["prompt_tokens"],
                          "completion_tokens": out["completion_tokens"],
                          "total_tokens": out["prompt_tokens"] + out["completion_tokens"]},
            })

    return Handler


def write_stats(path: Path, alias: str, out: dict) -> None:
    stats = {
        "model": alias, "ts": round(time.time(), 3),
        "prompt_tokens": out["prompt_tokens"], "prompt_evaluated": out["prompt_evaluated"],
        "prompt_s": round(out["prompt_s"], 3), "completion_tokens": out["completion_tokens"],
        "generate_s": round(out["generate_s"], 3), "steps": out["steps"],
        "n": len(out["texts"]), "threads": out.get("threads"),
        "drafted": out.get("drafted", 0), "accepted": out.get("accepted", 0),
        "decode_share": out.get("decode_share"),
        "prompt_tok_s": round(out["prompt_evaluated"] / out["prompt_s"], 2) if out["prompt_s"] > 0.05 else None,
        "generate_tok_s": round(out["completion_tokens"] / out["generate_s"], 2) if out["generate_s"] > 0 else None,
    }
    write_atomic(path, json.dumps(stats, indent=1))


def _watch_parent(parent: int, server: ThreadingHTTPServer) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            server.shutdown()
            return


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stop.models.local_server")
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--alias", default="local")
    ap.add_argument("--n-ctx", type=int, default=None, help="KV cells; default: sized from memory")
    ap.add_argument("--threads", type=int, default=None, help="fixed threads; default: by load")
    ap.add_argument("--max-samples", type=int, default=None)
    ap.add_argument("--draft", type=int, default=3, help="lookup draft tokens per step; 0: off")
    ap.add_argument("--stats", default=None)
    ap.add_argument("--exit-with-parent", action="store_true")
    args = ap.parse_args(argv)
    # Threads that wait sleep instead of spinning; must be set before llama.cpp loads libgomp.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    engine = Engine(args.model, n_ctx=args.n_ctx, threads=args.threads,
                    max_samples=args.max_samples, draft_max=args.draft, lookup=args.draft > 0)
    handler = make_handler(engine, args.alias, Path(args.stats) if args.stats else None)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    if args.exit_with_parent:
        threading.Thread(target=_watch_parent, args=(os.getppid(), server), daemon=True).start()
    sys.stderr.write(f"serving {args.model} as {args.alias} on http://127.0.0.1:{args.port} "
                     f"({json.dumps(engine.stats())})\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()
        engine.close()


if __name__ == "__main__":
    main()
