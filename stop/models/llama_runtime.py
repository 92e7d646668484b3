"""A thin layer over llama-cpp-python's low-level API: one model, one context, one batch buffer.

The context holds every sequence in one unified KV cache, so copying a prompt to another
sequence is a metadata copy and a prefix can be shared by many sequences at no memory cost.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

# Bytes of one KV cell per layer and KV head dimension at f16 (K and V).
_F16_KV_BYTES = 2 * 2


def kv_cells_for_memory(bytes_per_cell: int, *, fraction: float = 0.1, lo: int = 4096,
                        hi: int = 16384) -> int:
    """KV cells (tokens over all sequences) to allocate: a fraction of the memory available now,
    rounded down to a multiple of 1024 and clamped to [lo, hi]."""
    avail = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    cells = int(avail * fraction) // max(1, bytes_per_cell) if avail else lo
    return max(lo, min(hi, cells // 1024 * 1024))


class LlamaRuntime:
    def __init__(self, model_path: str, *, n_ctx: int | None, n_batch: int, n_seq_max: int,
                 threads: int) -> None:
        import llama_cpp
        from llama_cpp import _internals as llm
        from llama_cpp._logger import set_verbose
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.lib = llama_cpp
        set_verbose(False)
        llama_cpp.llama_backend_init()
        self.model = llm.LlamaModel(path_model=model_path,
                                    params=llama_cpp.llama_model_default_params(), verbose=False)
        meta = self.model.metadata()
        arch = meta.get("general.architecture", "")
        n_layer = int(meta.get(f"{arch}.block_count", 32))
        n_head = int(meta.get(f"{arch}.attention.head_count", 32))
        n_head_kv = int(meta.get(f"{arch}.attention.head_count_kv", n_head))
        n_embd = int(meta.get(f"{arch}.embedding_length", 4096))
        self.cell_bytes = n_layer * n_head_kv * (n_embd // max(1, n_head)) * _F16_KV_BYTES
        trained = int(meta.get(f"{arch}.context_length", 32768))
        self.n_ctx_wanted = min(n_ctx or kv_cells_for_memory(self.cell_bytes), max(trained, 4096))
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.n_ctx_wanted
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = n_seq_max
        params.kv_unified = True
        params.n_threads = threads
        params.n_threads_batch = threads
        self.ctx = llm.LlamaContext(model=self.model, params=params, verbose=False)
        self.n_ctx = self.ctx.n_ctx()
        self.n_batch = n_batch
        self.threads = threads
        self.vocab = self.model.vocab
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.mem = self.ctx.memory
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise SystemExit(f"{model_path}: the GGUF has no chat template")
        eos = self.model.token_get_text(self.model.token_eos())
        bos = self.model.token_get_text(self.model.token_bos()) if self.model.token_bos() >= 0 else ""
        self.formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        self._piece_buf = ctypes.create_string_buffer(256)

    def set_threads(self, n: int) -> None:
        if n != self.threads:
            self.lib.llama_set_n_threads(self.ctx.ctx, n, n)
            self.threads = n

    def format(self, messages: list[dict], extra_stops: list[str] | None) -> tuple[list[int], list[str]]:
        fmt = self.formatter(messages=messages)
        stops = [s for s in ([fmt.stop] if isinstance(fmt.stop, str) else (fmt.stop or [])) if s]
        stops += [s for s in (extra_stops or []) if s]
        tokens = self.model.tokenize(fmt.prompt.encode("utf-8"), add_bos=True, special=True)
        return tokens, stops

    def decode(self, items: list[tuple[int, int, int, bool]]) -> int:
        """Run one batch of (token, position, sequence, wants logits); llama_decode's code."""
        b = self.batch
        b.n_tokens = len(items)
        for i, (tok, pos, seq, logits) in enumerate(items):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits
        return self.lib.llama_decode(self.ctx.ctx, b)

    def logits(self, i: int) -> np.ndarray:
        """The logits of the i-th token of the last batch (a view, valid until the next decode)."""
        ptr = self.lib.llama_get_logits_ith(self.ctx.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def is_eog(self, tok: int) -> bool:
        return bool(self.lib.llama_vocab_is_eog(self.vocab, tok))

    def piece(self, tok: int) -> bytes:
        n = self.lib.llama_token_to_piece(self.vocab, tok, self._piece_buf, 256, 0, False)
        return self._piece_buf.raw[: max(0, n)]

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        self.lib.llama_memory_seq_cp(self.mem, src, dst, p0, p1)

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> bool:
        return bool(self.lib.llama_memory_seq_rm(self.mem, seq, p0, p1))

    def clear(self) -> None:
        self.lib.llama_memory_clear(self.mem, True)

    def close(self) -> Any:
        self.lib.llama_batch_free(self.batch)
        self.ctx.close()
        self.model.close()
