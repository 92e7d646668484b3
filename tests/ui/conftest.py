"""The web view under test: a real `stop ui` process over real run folders, a real Chromium.

Tests marked `ui` need Debian's chromium (/usr/bin/chromium, or STOP_CHROMIUM) and Playwright;
like the Docker tests, they fail when either is missing unless STOP_ALLOW_SKIP=1. Screenshots
of each page are kept under the session's tmp dir and copied to .cache/ui-screenshots/.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import uiruns

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("STOP_CHROMIUM", "/usr/bin/chromium"))
SHOTS = ROOT / ".cache" / "ui-screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ui: drives the web view in a real headless Chromium")


def _unavailable(msg: str) -> None:
    if os.environ.get("STOP_ALLOW_SKIP") == "1":
        pytest.skip(msg)
    pytest.fail(msg)


@pytest.fixture(scope="session")
def ui_runs(tmp_path_factory, sandbox) -> dict:
    """The runs folder the server reads, and the runs in it."""
    root = tmp_path_factory.mktemp("ui-runs")
    runs = {"root": root, "report": uiruns.copy_report_run(root),
            "scripted": uiruns.make_scripted_run(root, sandbox),
            "unsandbox": uiruns.make_unsandbox_run(root)}
    runs["improve"] = uiruns.make_improve_run(root, runs["scripted"], sandbox)
    return runs


class Server:
    def __init__(self, root: Path, cache: Path, port: int = 0) -> None:
        env = {**os.environ, "STOP_RUNS_DIR": str(root), "STOP_CACHE_DIR": str(cache),
               "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stop", "ui", "--port", str(port)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        line = self.proc.stdout.readline().strip()
        m = re.fullmatch(r"(http://127\.0\.0\.1:(\d+))/\?token=([A-Za-z0-9_-]+)", line)
        if not m:
            self.stop()
            raise AssertionError(f"stop ui printed {line!r}; stderr: {self.proc.stderr.read()}")
        self.url, self.base, self.port, self.token = line, m.group(1), int(m.group(2)), m.group(3)
        self.cookie = f"stop_ui_{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def server(ui_runs, tmp_path_factory):
    s = Server(ui_runs["root"], tmp_path_factory.mktemp("ui-cache"))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} not found: run `bash scripts/setup.sh --for test` "
                     "(apt-get install -y chromium), or set STOP_ALLOW_SKIP=1 to skip")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server, tmp_path):
    """A fresh browser profile that has visited the printed URL (so it holds the cookie)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    p = context.new_page()
    p.dialogs = []
    p.on("dialog", lambda d: (p.dialogs.append(d.message), d.dismiss()))
    p.console_errors = []
    p.on("console", lambda m: m.type == "error" and p.console_errors.append(m.text))
    r = p.goto(server.url)
    assert r is not None and r.ok
    yield p
    context.close()


@pytest.fixture(scope="session")
def shots_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui-screenshots")


@pytest.fixture
def shoot(page, shots_dir):
    """Save a full-page screenshot as NAME.png (tmp dir and .cache/ui-screenshots/)."""
    def take(name: str) -> Path:
        path = shots_dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SHOTS / path.name)
        return path
    return take


def wait_for(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
