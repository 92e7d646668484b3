"""Tasks: task folders, their hidden instances, and scoring a solution on them.

A task folder `tasks/<name>/` holds:

- `task.toml`: kind, limits, instance counts, budgets, free-form settings (schema in
  docs/tasks.md; `_parse_toml` below is the reference).
- `seed_algorithm.py`: the seed solution (or, for kind "meta", the seed improver).
- `utility.py`: a string literal `DESCRIPTION`, the only text about the task the model sees.
- `scorer.py` (kind "solve"): host only, never shown and never sent into a container.
  `generate(rng, nprng) -> Instance`, `check(value, instance)` (raise `WrongType` /
  `WrongShape`, return the checked value) and `score(checked, instance) -> float | (float, status)`.

Trust boundary: instances are generated and scored here, on the host. The candidate only ever
receives `Instance.args`, runs in the sandbox, and its outputs come back as decoded data
(`stop.container.codec`) that `check` validates strictly before `score` looks at it.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from stop.core.budget import PAPER
from stop.errors import StopError
from stop.paths import tasks_dir

SPLITS = ("val", "test")
DEFAULT_SEED_BASES = {"val": 4321, "test": 5678}
KINDS = ("solve", "meta")
STATUSES = ("ok", "wrong", "timeout", "error", "invalid")
SCORER_FUNCTIONS = ("generate", "check", "score")


class TaskError(StopError):
    """A task is missing, malformed, or was asked for something it cannot do."""


@dataclass
class Instance:
    """One hidden problem: `args` go into the sandbox as positional arguments of the entry
    function; `data` (the answers) stays on the host."""

    args: list[Any]
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Task:
    name: str
    dir: Path
    kind: str
    description: str
    seed_source: str
    per_call_s: float
    n_val: int
    n_test: int
    utility_budget: int = PAPER.utility_calls
    lm_budget: int = PAPER.lm_calls
    max_responses_per_call: int = PAPER.responses_per_call
    settings: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    entry: str = "algorithm"
    memory_mb: int = 512
    seed_bases: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_SEED_BASES))

    def n_instances(self, split: str) -> int:
        _check_split(split)
        return self.n_val if split == "val" else self.n_test

    @property
    def scorer(self) -> ModuleType:
        """The task's scorer module, imported on first use (host only)."""
        if self.kind != "solve":
            raise TaskError(f"task {self.name} is a {self.kind} task and has no scorer.py")
        return _import_scorer(str(self.dir / "scorer.py"), (self.dir / "scorer.py").stat().st_mtime_ns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "dir": str(self.dir), "kind": self.kind, "summary": self.summary,
            "entry": self.entry, "per_call_s": self.per_call_s, "memory_mb": self.memory_mb,
            "n_val": self.n_val, "n_test": self.n_test, "seed_bases": self.seed_bases,
            "utility_budget": self.utility_budget, "lm_budget": self.lm_budget,
            "max_responses_per_call": self.max_responses_per_call, "settings": self.settings,
            "description": self.description,
        }


# ---------------------------------------------------------------- loading


def list_tasks() -> list[Task]:
    """Every well-formed task under the tasks folder, by name."""
    return scan_tasks()[0]


def scan_tasks() -> tuple[list[Task], list[tuple[str, str]]]:
    """Well-formed tasks, and (folder name, problem) for each malformed task folder."""
    root = tasks_dir()
    tasks: list[Task] = []
    problems: list[tuple[str, str]] = []
    if not root.is_dir():
        return tasks, problems
    for d in sorted(root.iterdir()):
        if not d.is_dir() or d.name.startswith((".", "_")):
            continue
        try:
            tasks.append(load_task_dir(d))
        except TaskError as e:
            problems.append((d.name, str(e)))
    return tasks, problems


def load_task(name: str) -> Task:
    """A task by name (a folder under the tasks folder) or by the path of a task folder."""
    if not name:
        raise TaskError("no task name given; `stop tasks` lists them")
    candidate = Path(name)
    if ("/" in name or name.startswith(".")) and candidate.is_dir():
        return load_task_dir(candidate)
    d = tasks_dir() / name
    if not (d / "task.toml").is_file() and (candidate / "task.toml").is_file():
        return load_task_dir(candidate)  # a task folder given without ./
    if not d.is_dir() or name.startswith((".", "_")) or "/" in name:
        known = ", ".join(t.name for t in list_tasks()) or "none"
        raise TaskError(f"unknown task {name!r} (known: {known}); `stop tasks` lists them")
    return load_task_dir(d)


def load_task_dir(d: Path) -> Task:
    d = Path(d).resolve()
    where = f"task folder {d}"
    toml_path = d / "task.toml"
    if not toml_path.is_file():
        raise TaskError(f"{where} is missing task.toml (it names the kind, limits and instance counts)")
    try:
        conf = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise TaskError(f"{toml_path}: invalid TOML ({e})") from None
    kind = conf.get("kind", "solve")
    if kind not in KINDS:
        raise TaskError(f"{toml_path}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    needed = ["seed_algorithm.py", "utility.py"] + (["scorer.py"] if kind == "solve" else [])
    missing = [f for f in needed if not (d / f).is_file()]
    if missing:
        raise TaskError(f"{where} is missing {', '.join(missing)}")
    parsed = _parse_toml(conf, kind, toml_path)
    description = _read_description(d / "utility.py")
    seed_source = (d / "seed_algorithm.py").read_text(encoding="utf-8")
    if kind == "solve":
        _check_scorer_shape(d / "scorer.py")
        _check_defines(d / "seed_algorithm.py", parsed["entry"])
    return Task(name=d.name, dir=d, kind=kind, description=description,
                seed_source=seed_source, **parsed)


_TOP_KEYS = {"kind", "summary", "entry", "limits", "instances", "budgets", "settings"}


def _parse_toml(conf: dict[str, Any], kind: str, path: Path) -> dict[str, Any]:
    unknown = sorted(set(conf) - _TOP_KEYS)
    if unknown:
        raise TaskError(f"{path}: unknown key {unknown[0]!r}; task-specific values go under [settings]")
    limits = _table(conf, "limits", path)
    inst = _table(conf, "instances", path)
    budgets = _table(conf, "budgets", path)
    settings = _table(conf, "settings", path)
    solve = kind == "solve"

    def num(table: dict, key: str, section: str, default: Any, *, integer: bool) -> Any:
        if key not in table:
            if default is None:
                raise TaskError(f"{path}: [{section}] {key} is missing")
            return default
        v = table[key]
        ok = type(v) is int if integer else type(v) in (int, float)
        if not ok or v <= 0:
            kind_word = "a positive integer" if integer else "a positive number"
            raise TaskError(f"{path}: [{section}] {key} must be {kind_word}, got {v!r}")
        return v

    entry = conf.get("entry", "algorithm" if solve else "improve_algorithm")
    if not isinstance(entry, str) or not entry.isidentifier():
        raise TaskError(f"{path}: entry must be a Python function name, got {entry!r}")
    summary = conf.get("summary", "")
    if not isinstance(summary, str):
        raise TaskError(f"{path}: summary must be a string")
    return {
        "summary": summary.strip(),
        "entry": entry,
        "per_call_s": float(num(limits, "per_call_s", "limits", None if solve else 0.0, integer=False)),
        "memory_mb": num(limits, "memory_mb", "limits", 512, integer=True),
        "n_val": num(inst, "val", "instances", None if solve else 0, integer=True),
        "n_test": num(inst, "test", "instances", None if solve else 0, integer=True),
        "seed_bases": {
            "val": num(inst, "val_seed", "instances", DEFAULT_SEED_BASES["val"], integer=True),
            "test": num(inst, "test_seed", "instances", DEFAULT_SEED_BASES["test"], integer=True),
        },
        "utility_budget": num(budgets, "utility_calls", "budgets", PAPER.utility_calls,
                              integer=True),
        "lm_budget": num(budgets, "lm_calls", "budgets", PAPER.lm_calls, integer=True),
        "max_responses_per_call": num(budgets, "responses_per_call", "budgets",
                                      PAPER.responses_per_call, integer=True),
        "settings": settings,
    }


def _table(conf: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    v = conf.get(key, {})
    if not isinstance(v, dict):
        raise TaskError(f"{path}: {key} must be a table ([{key}])")
    return v


def _parse_py(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as e:
        raise TaskError(f"{path}: syntax error at line {e.lineno}: {e.msg}") from None


def _read_description(path: Path) -> str:
    """DESCRIPTION is read from the syntax tree: utility.py is text for the model, never run."""
    for node in _parse_py(path).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "DESCRIPTION" for t in node.targets):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                text = node.value.value.strip()
                if text:
                    return text
            raise TaskError(f"{path}: DESCRIPTION must be a non-empty string literal")
    raise TaskError(f"{path} must define DESCRIPTION = '''...''' (the text the model sees)")


def _defined_functions(path: Path) -> set[str]:
    return {n.name for n in _parse_py(path).body if isinstance(n, ast.FunctionDef)}


def _check_scorer_shape(path: Path) -> None:
    missing = [f for f in SCORER_FUNCTIONS if f not in _defined_functions(path)]
    if missing:
        raise TaskError(f"{path} must define {', '.join(f'{m}()' for m in missing)}")


def _check_defines(path: Path, entry: str) -> None:
    if entry not in _defined_functions(path):
        raise TaskError(f"{path} must define {entry}(...), the task's entry function")


@functools.lru_cache(maxsize=64)
def _import_scorer(path: str, mtime_ns: int) -> ModuleType:
    name = f"stop_task_scorer_{abs(hash((path, mtime_ns)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TaskError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise TaskError(f"{path} failed to import: {type(e).__name__}: {e}") from None
    return module


# ---------------------------------------------------------------- instances


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise TaskError(f"unknown split {split!r}; choose val or test")


def instances(task: Task, split: str) -> list[Instance]:
    """The split's hidden instances. Instance i is drawn from generators seeded with base + i:
    `random.Random(s)` and `numpy.random.RandomState(s)` give exactly the draws of
    `random.seed(s)` and `numpy.random.seed(s)` without touching the process's global state."""
    n = task.n_instances(split)
    scorer_path = task.dir / "scorer.py"
    return list(_instances(str(scorer_path), scorer_path.stat().st_mtime_ns,
                           task.seed_bases[split], n))


@functools.lru_cache(maxsize=32)
def _instances(scorer_path: str, mtime_ns: int, base: int, n: int) -> tuple[Instance, ...]:
    import numpy as np

    generate = _import_scorer(scorer_path, mtime_ns).generate
    out = []
    for i in range(n):
        try:
            inst = generate(random.Random(base + i), np.random.RandomState(base + i))
        except Exception as e:  # the task's own code: its bug is one line, not a traceback
            raise TaskError(f"{scorer_path}: generate() failed on instance {i}: "
                            f"{type(e).__name__}: {e}") from None
        if not isinstance(inst, Instance) or not isinstance(inst.args, list):
            raise TaskError(f"{scorer_path}: generate() must return stop.tasks.Instance(args=[...])")
        out.append(inst)
    return tuple(out)
