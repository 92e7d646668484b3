"""The floor plan holds: no import cycles in stop/, sandbox/ imports nothing of stop, imports of
stop's own modules sit at the top of each module, modules stay small, and the wheel carries
tasks/ and sandbox/ so an installed stop works from any folder."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    """Module name -> file, for stop/ and for sandbox/ under its installed name stop.container."""
    mods: dict[str, Path] = {}
    for p in (ROOT / "stop").rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    for p in (ROOT / "sandbox").glob("*.py"):
        mods["stop.container" + ("" if p.stem == "__init__" else "." + p.stem)] = p
    return mods


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported name, line, at module level) for every import statement, nested ones too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out += [(f"{node.module}.{a.name}", node.lineno, id(node) in top) for a in node.names]
    return out


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    mods = _modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    lazy = []
    for m, path in mods.items():
        for name, line, at_top in _imports(path):
            target = owner(name) if name.split(".")[0] == "stop" else None
            if target and target != m:
                edges[m].add(target)
                if not at_top:
                    lazy.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    return edges, lazy


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_inside_stop():
    edges, _ = _graph()
    assert _cycles(edges) == []


def test_the_cycle_check_can_fail():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_imports_of_stop_modules_are_at_module_level():
    # Function-level imports are kept for heavy third-party modules only (litellm, docker,
    # matplotlib, llama_cpp), so `stop --help` stays fast; stop's own modules import at the top.
    _, lazy = _graph()
    assert lazy == []


def test_nothing_in_sandbox_imports_stop():
    bad = [f"{p.name}:{line} imports {name}" for p in (ROOT / "sandbox").glob("*.py")
           for name, line, _ in _imports(p) if name.split(".")[0] == "stop"]
    assert bad == []


def test_modules_stay_small():
    big = {str(p.relative_to(ROOT)): n for p in [*(ROOT / "stop").rglob("*.py"),
                                                  *(ROOT / "sandbox").glob("*.py")]
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert big == {}


def test_every_package_under_stop_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "stop").rglob("__init__.py")}
    assert found <= listed
    assert {"stop.container", "stop.tasks.builtin"} <= listed


@pytest.mark.docker
def test_a_wheel_install_works_from_another_folder(tmp_path):
    dist, site, elsewhere = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("stop-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=300)
    # The wheel's stop comes first on the path; the dependencies come from this venv.
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "STOP_RUNS_DIR": str(tmp_path / "runs")}
    where = subprocess.run([sys.executable, "-c", "import stop, stop.paths as p; "
                            "print(stop.__file__); print(p.tasks_dir()); print(p.sandbox_dir())"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    for line in where.stdout.split():
        assert line.startswith(str(site)), where.stdout
    tasks = subprocess.run([sys.executable, "-m", "stop", "tasks"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=120)
    assert tasks.returncode == 0, tasks.stderr
    assert "str_grid_dist" in tasks.stdout and "parity_noise" in tasks.stdout
    score = subprocess.run([sys.executable, "-m", "stop", "score", "str_grid_dist", "seed"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert score.returncode == 0, score.stderr
    assert "score     0.4829" in score.stdout, score.stdout


def test_the_cli_starts_without_heavy_modules():
    # `stop --help`, `stop runs` and every other command start from this import.
    heavy = ("numpy", "docker", "litellm", "matplotlib", "llama_cpp", "ray", "starlette",
             "uvicorn", "jinja2", "playwright")
    code = f"import sys, stop.cli; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
