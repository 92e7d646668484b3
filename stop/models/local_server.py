"""An OpenAI-compatible chat server for a local GGUF model that decodes `n` samples together.

llama-cpp-python's own server ignores `n`: six samples of one prompt are six requests, each
decoded alone. Here the prompt is evaluated once into sequence 0 of a unified KV cache, copied
to sequences 1..n-1 (a metadata copy, no recomputation), and the n continuations are decoded
in one batch per step, which on a CPU costs far less than n separate steps. The prompt of the
last request also stays in the cache, so a follow-up sharing its prefix evaluates only the rest.

Run: `python -m stop.models.local_server --model FILE --port N [--alias NAME] [--stats FILE]`.
Endpoints: GET /health, GET /v1/models, POST /v1/chat/completions (no streaming).
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

MAX_SEQS = 8


class BatchedEngine:
    """One model, one context with MAX_SEQS sequences; one request at a time."""

    def __init__(self, model_path: str, *, n_ctx: int = 8192, n_batch: int = 512,
                 threads: int | None = None) -> None:
        import llama_cpp
        from llama_cpp import _internals as llm
        from llama_cpp._logger import set_verbose
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.llama_cpp = llama_cpp
        set_verbose(False)
        llama_cpp.llama_backend_init()
        self.model = llm.LlamaModel(path_model=model_path,
                                    params=llama_cpp.llama_model_default_params(), verbose=False)
        # One thread short of all cores: on a busy machine a thread that waits at a barrier while
        # its partner is descheduled spins for nothing (measured: 2 threads on 2 busy cores ran
        # 6-13x slower than 1).
        threads = threads or max(1, min(8, (os.cpu_count() or 2) - 1))
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = MAX_SEQS
        params.kv_unified = True
        params.n_threads = threads
        params.n_threads_batch = threads
        self.ctx = llm.LlamaContext(model=self.model, params=params, verbose=False)
        self.n_ctx = self.ctx.n_ctx()
        self.n_batch = n_batch
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, MAX_SEQS)
        meta = self.model.metadata()
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise SystemExit(f"{model_path}: the GGUF has no chat template")
        eos = self.model.token_get_text(self.model.token_eos())
        bos = self.model.token_get_text(self.model.token_bos()) if self.model.token_bos() >= 0 else ""
        self.formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        self.cached: list[int] = []  # prompt tokens held in sequence 0
        self._piece_buf = __import__("ctypes").create_string_buffer(256)
        self.lock = threading.Lock()

    def _fill(self, items: list[tuple[int, int, int, bool]]) -> None:
        b = self.batch
        b.n_tokens = len(items)
        for i, (tok, pos, seq, logits) in enumerate(items):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        self._fill(items)
        rc = self.llama_cpp.llama_decode(self.ctx.ctx, self.batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def _piece(self, tok: int) -> bytes:
        n = self.llama_cpp.llama_token_to_piece(self.model.vocab, tok, self._piece_buf, 256, 0, False)
        return self._piece_buf.raw[: max(0, n)]

    def _sampler(self, temperature: float, seed: int) -> Any:
        from llama_cpp import _internals as llm

        s = llm.LlamaSampler()
        if temperature <= 0:
            s.add_greedy()
        else:
            s.add_top_k(40)
            s.add_top_p(0.95, 1)
            s.add_min_p(0.05, 1)
            s.add_temp(temperature)
            s.add_dist(seed)
        return s

    def _prepare_prompt(self, tokens: list[int]) -> int:
        """Evaluate `tokens` into sequence 0, reusing the cached prefix. Returns tokens evaluated."""
        mem = self.ctx.memory
        for s in range(1, MAX_SEQS):
            self.llama_cpp.llama_memory_seq_rm(mem, s, -1, -1)
        common = 0
        for a, b in zip(self.cached, tokens, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(tokens) - 1)  # the last token is always re-run for its logits
        if not self.llama_cpp.llama_memory_seq_rm(mem, 0, common, -1):
            self.ctx.kv_cache_clear()
            common = 0
        self.cached = tokens[:common]
        todo = tokens[common:]
        for start in range(0, len(todo), self.n_batch):
            chunk = todo[start:start + self.n_batch]
            last = start + len(chunk) == len(todo)
            self._decode([(t, common + start + i, 0, last and i == len(chunk) - 1)
                          for i, t in enumerate(chunk)])
            self.cached = tokens[:common + start + len(chunk)]
        return len(todo)

    def chat(self, messages: list[dict], *, n: int = 1, temperature: float = 0.7,
             max_tokens: int = 256, seed: int | None = None, stop: list[str] | None = None,
             ignore_eos: bool = False) -> dict:
        llama_cpp = self.llama_cpp
        fmt = self.formatter(messages=messages)
        prompt = fmt.prompt
        stops = [s for s in ([fmt.stop] if isinstance(fmt.stop, str) else (fmt.stop or [])) if s]
        stops += [s for s in (stop or []) if s]
        tokens = self.model.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        n = max(1, min(int(n), MAX_SEQS))
        room = self.n_ctx - len(tokens)
        if room < n:
            raise ValueError(f"prompt of {len(tokens)} tokens does not fit the context of {self.n_ctx}")
        max_tokens = max(1, min(int(max_tokens), room // n))
        seed = int(seed) if seed is not None else int.from_bytes(os.urandom(4), "little")
        with self.lock:
            try:
                t0 = time.monotonic()
                evaluated = self._prepare_prompt(tokens)
                t1 = time.monotonic()
                for s in range(1, n):
                    llama_cpp.llama_memory_seq_cp(self.ctx.memory, 0, s, -1, -1)
                samplers = [self._sampler(temperature, seed + s) for s in range(n)]
                vocab = self.model.vocab
                pieces: list[bytearray] = [bytearray() for _ in range(n)]
                finish = ["length"] * n
                counts = [0] * n
                active = list(range(n))
                out_index = {s: -1 for s in range(n)}
                pos = len(tokens)
                steps = 0
                while active:
                    step: list[tuple[int, int, int, bool]] = []
                    for s in list(active):
                        tok = samplers[s].sample(self.ctx, out_index[s])
                        counts[s] += 1
                        if not ignore_eos and llama_cpp.llama_vocab_is_eog(vocab, tok):
                            finish[s] = "stop"
                            active.remove(s)
                            continue
                        pieces[s] += self._piece(tok)
                        if stops and not ignore_eos and any(x.encode() in pieces[s][-64 - len(x):] for x in stops):
                            finish[s] = "stop"
                            active.remove(s)
                            continue
                        if counts[s] >= max_tokens:
                            active.remove(s)
                            continue
                        step.append((tok, pos, s, True))
                    if not step:
                        break
                    for i, (_, _, s, _) in enumerate(step):
                        out_index[s] = i
                    self._decode(step)
                    pos += 1
                    steps += 1
                t2 = time.monotonic()
                for s in range(1, n):
                    llama_cpp.llama_memory_seq_rm(self.ctx.memory, s, -1, -1)
            except Exception:
                # A failed decode leaves the cache in an unknown state: start the next one clean.
                self.ctx.kv_cache_clear()
                self.cached = []
                raise
        texts = []
        for s in range(n):
            text = pieces[s].decode("utf-8", errors="ignore")
            for x in stops:
                if x in text:
                    text = text[: text.index(x)]
            texts.append(text)
        return {
            "texts": texts, "finish": finish, "prompt_tokens": len(tokens),
            "completion_tokens": sum(counts), "prompt_evaluated": evaluated,
            "prompt_s": t1 - t0, "generate_s": t2 - t1, "steps": steps,
        }


def make_handler(engine: BatchedEngine, alias: str, stats_path: Path | None) -> type:
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
                                  ignore_eos=bool(body.get("ignore_eos")))
            except (ValueError, KeyError, TypeError) as e:
                self._send(400, {"error": {"message": str(e), "type": "invalid_request_error"}})
                return
            except Exception as e:  # the model itself failed: a server error, retryable
                self._send(500, {"error": {"message": f"{type(e).__name__}: {e}"}})
                return
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
            if stats_path is not None:
                write_stats(stats_path, alias, out)

    return Handler


def write_stats(path: Path, alias: str, out: dict) -> None:
    stats = {
        "model": alias, "ts": round(time.time(), 3),
        "prompt_tokens": out["prompt_tokens"], "prompt_evaluated": out["prompt_evaluated"],
        "prompt_s": round(out["prompt_s"], 3), "completion_tokens": out["completion_tokens"],
        "generate_s": round(out["generate_s"], 3), "steps": out["steps"],
        "n": len(out["texts"]),
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
    ap.add_argument("--n-ctx", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--stats", default=None)
    ap.add_argument("--exit-with-parent", action="store_true")
    args = ap.parse_args(argv)
    engine = BatchedEngine(args.model, n_ctx=args.n_ctx, threads=args.threads)
    handler = make_handler(engine, args.alias, Path(args.stats) if args.stats else None)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    if args.exit_with_parent:
        threading.Thread(target=_watch_parent, args=(os.getppid(), server), daemon=True).start()
    sys.stderr.write(f"serving {args.model} as {args.alias} on http://127.0.0.1:{args.port}\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
