"""The sandbox image: a Python 3 base with NumPy, SciPy and scikit-learn, with the harness on top,
tagged by content.

The libraries are the ones models reach for: on the learning-parity tasks the embedded model
imported scikit-learn in 9 of 18 rewrites, and with it in the image 4 of those 18 beat the seed,
against none without (README, "Does it improve?"). They are native code inside the same walls.

Where a registry answers, the base is the official Python image plus those libraries; where none does
(the pull fails in milliseconds), it is bootstrapped from Debian packages (debootstrap, from the
mirror this machine's apt uses, or STOP_DEBIAN_MIRROR; see `stop.sandbox.debian_mirror`) and
imported, so the build works wherever apt works. The final
image is tagged ``stop-sandbox:<hash>``, where the hash covers every file of ``sandbox/`` (the
harness, the codec and the protocol it shares with the host) and the base's recipe, so any change
to what runs inside rebuilds it.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from stop.errors import StopError
from stop.paths import cache_dir, sandbox_dir
from stop.sandbox.debian_mirror import debian_mirror

IMAGE_REPO = "stop-sandbox"
BASE_REPO = "stop-base"
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = "python3,python3-numpy,python3-sklearn"  # python3-sklearn brings SciPy
PIP_PACKAGES = "numpy scipy scikit-learn"
# What a candidate can import besides the standard library (top-level names; their own
# dependencies such as joblib come along but are not offered).
IMAGE_MODULES = frozenset({"numpy", "scipy", "sklearn"})
REGISTRY_IMAGE = "python:3.11-slim-bookworm"


class ImageError(StopError):
    """The sandbox image could not be built."""


def _log(msg: str) -> None:
    print(f"[sandbox image] {msg}", file=sys.stderr, flush=True)


def context_files() -> dict[str, Path]:
    """Build-context name -> file on disk: every file of sandbox/."""
    return {p.name: p for p in sorted(sandbox_dir().iterdir())
            if p.is_file() and not p.name.startswith(".") and p.suffix != ".pyc"}


def image_hash() -> str:
    h = hashlib.sha256(f"{DEBIAN_SUITE}|{DEBIAN_PACKAGES}|{REGISTRY_IMAGE}|{PIP_PACKAGES}\0".encode())
    for name, path in sorted(context_files().items()):
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def image_tag() -> str:
    return f"{IMAGE_REPO}:{image_hash()}"


def base_tag() -> str:
    recipe = f"{DEBIAN_SUITE}|{DEBIAN_PACKAGES}|minbase".encode()
    return f"{BASE_REPO}:{DEBIAN_SUITE}-{hashlib.sha256(recipe).hexdigest()[:8]}"


@dataclass
class ImageStatus:
    tag: str
    exists: bool
    base: str
    base_exists: bool

    def to_dict(self) -> dict:
        return {"tag": self.tag, "exists": self.exists, "base": self.base,
                "base_exists": self.base_exists}


def _docker(*args: str, input: bytes | None = None, check: bool = True,
            stdin=None) -> subprocess.CompletedProcess:
    if shutil.which("docker") is None:
        raise ImageError("the docker CLI is not installed: install docker.io (apt) and start dockerd")
    return subprocess.run(["docker", *args], input=input, stdin=stdin, capture_output=True,
                          check=check)


def _exists(tag: str) -> bool:
    return _docker("image", "inspect", tag, check=False).returncode == 0


def image_status() -> ImageStatus:
    """Whether the image for the current sandbox/ contents exists (no build)."""
    tag = image_tag()
    for base in (base_tag(), registry_base_tag()):
        if _exists(base):
            return ImageStatus(tag, _exists(tag), base, True)
    return ImageStatus(tag, _exists(tag), base_tag(), False)


def registry_base_tag() -> str:
    recipe = f"{REGISTRY_IMAGE}|{PIP_PACKAGES}".encode()
    return f"{BASE_REPO}:python-{hashlib.sha256(recipe).hexdigest()[:8]}"


def build_base(force: bool = False) -> str:
    """The base image: an existing one, else an official Python image with the libraries where a
    registry answers, else a Debian bootstrapped from packages."""
    if not force:
        for tag in (base_tag(), registry_base_tag()):
            if _exists(tag):
                return tag
    return _registry_base() or _debootstrap_base()


def _registry_base() -> str | None:
    """Pull the official Python image and add the libraries; None (quickly) where no registry
    answers."""
    t0 = time.monotonic()
    try:
        pulled = subprocess.run(["docker", "pull", "-q", REGISTRY_IMAGE], capture_output=True,
                                timeout=300).returncode == 0
    except (subprocess.TimeoutExpired, OSError):
        pulled = False
    if not pulled:
        _log(f"no registry answered for {REGISTRY_IMAGE} ({time.monotonic() - t0:.1f}s): "
             "bootstrapping a Debian base instead")
        return None
    tag = registry_base_tag()
    recipe = f"FROM {REGISTRY_IMAGE}\nRUN pip install --no-cache-dir {PIP_PACKAGES}\n".encode()
    r = _docker("build", "-q", "-t", tag, "-", input=recipe, check=False)
    if r.returncode != 0:
        _log(f"could not add {PIP_PACKAGES} to {REGISTRY_IMAGE}: bootstrapping a Debian base instead")
        return None
    _log(f"built {tag} from {REGISTRY_IMAGE} ({time.monotonic() - t0:.1f}s)")
    return tag


def _debootstrap_base() -> str:
    """Bootstrap a minimal Debian with python3 and the libraries and import it as an image."""
    tag = base_tag()
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed: `apt-get install debootstrap`, "
                         "or make a registry reachable")
    mirror, origin = debian_mirror()
    work = cache_dir() / "sandbox-build"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        rootfs = Path(tmp) / "rootfs"
        t0 = time.monotonic()
        _log(f"debootstrap {DEBIAN_SUITE} from {mirror} ({origin}; a few minutes)")
        r = subprocess.run(["debootstrap", "--variant=minbase", f"--include={DEBIAN_PACKAGES}",
                            DEBIAN_SUITE, str(rootfs), mirror], capture_output=True, text=True)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["?"]
            raise ImageError(f"debootstrap failed: {tail[0]}")
        _log(f"debootstrap done ({time.monotonic() - t0:.1f}s)")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc",
                     "usr/share/man", "usr/share/locale"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        t1 = time.monotonic()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imp = _docker("import", "-", tag, stdin=tar.stdout, check=False)
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise ImageError(f"docker import failed: {imp.stderr.decode().strip()[:200]}")
        _log(f"imported {tag} ({time.monotonic() - t1:.1f}s)")
    return tag


def build_image(force: bool = False) -> str:
    """Build (if needed) and return the tag of the sandbox image."""
    tag = image_tag()
    if not force and _exists(tag):
        return tag
    t0 = time.monotonic()
    base = build_base()
    with tempfile.TemporaryDirectory() as ctx:
        for name, path in context_files().items():
            shutil.copy2(path, Path(ctx) / name)
        r = _docker("build", "-q", "--network", "none", "--build-arg", f"BASE={base}",
                    "-t", tag, ctx, check=False)
        if r.returncode != 0:
            raise ImageError(f"docker build failed: {r.stderr.decode().strip()[-300:]}")
    _log(f"built {tag} on {base} ({time.monotonic() - t0:.1f}s)")
    return tag


def prune_images() -> list[str]:
    """Remove stop-sandbox images of older sandbox/ contents that no container uses."""
    keep = image_tag()
    r = _docker("images", IMAGE_REPO, "--format", "{{.Repository}}:{{.Tag}}", check=False)
    removed = []
    for tag in r.stdout.decode().split():
        if tag != keep and _docker("rmi", tag, check=False).returncode == 0:
            removed.append(tag)
    return removed


def ensure_image() -> str:
    """The current image tag, building it first when it does not exist."""
    return build_image(force=False)
