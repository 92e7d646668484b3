"""Task folders: loading, validation errors, and every task's instance generator."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from stop.tasks.loader import (
    DEFAULT_SEED_BASES,
    Instance,
    TaskError,
    instances,
    list_tasks,
    load_task,
    load_task_dir,
    scan_tasks,
)

SOLVE_TASKS = ["parity_noise", "parity_noiseless", "str_grid_dist",
               "modified_quadratic_assignment", "three_sat", "maxcut"]
COUNTS = {"parity_noise": (20, 50), "parity_noiseless": (20, 20), "str_grid_dist": (50, 50),
          "modified_quadratic_assignment": (10, 10), "three_sat": (30, 30), "maxcut": (100, 100)}
LIMITS = {"parity_noise": 2.0, "parity_noiseless": 2.0, "str_grid_dist": 0.1,
          "modified_quadratic_assignment": 0.5, "three_sat": 0.1, "maxcut": 0.1}


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (type(a) is type(b) and a.shape == b.shape and a.dtype == b.dtype
                and bool(np.array_equal(a, b)))
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


def test_the_six_downstream_tasks_load_with_published_settings():
    names = {t.name for t in list_tasks()}
    assert set(SOLVE_TASKS) <= names
    for name in SOLVE_TASKS:
        t = load_task(name)
        assert t.kind == "solve" and t.entry == "algorithm"
        assert (t.n_val, t.n_test) == COUNTS[name]
        assert t.per_call_s == LIMITS[name]
        assert (t.utility_budget, t.lm_budget, t.max_responses_per_call) == (25, 4, 6)
        assert t.seed_bases == DEFAULT_SEED_BASES == {"val": 4321, "test": 5678}
        assert "def algorithm(" in t.seed_source and t.summary
        # The description states the limit and the budget the task really has.
        assert f"{t.per_call_s:g} second" in t.description
        assert f"at most {t.utility_budget} times" in t.description
        assert "scorer.py" not in t.description


@pytest.mark.parametrize("name", SOLVE_TASKS)
@pytest.mark.parametrize("split", ["val", "test"])
def test_generator_is_deterministic_and_matches_global_seeding(name, split):
    task = load_task(name)
    base = task.seed_bases[split]
    gen = task.scorer.generate
    cached = instances(task, split)
    assert len(cached) == task.n_instances(split)
    for i in range(min(3, len(cached))):
        a = gen(random.Random(base + i), np.random.RandomState(base + i))
        b = gen(random.Random(base + i), np.random.RandomState(base + i))
        # The documented procedure: seed the global generators, then draw from them.
        random.seed(base + i)
        np.random.seed(base + i)
        c = gen(random, np.random)
        assert isinstance(a, Instance)
        assert _equal(a.args, b.args) and _equal(a.args, c.args) and _equal(a.args, cached[i].args)
        assert _equal(a.data, c.data)
    other = gen(random.Random(base + 10_000), np.random.RandomState(base + 10_000))
    assert not _equal(other.args, cached[0].args)


def test_val_and_test_instances_differ():
    for name in SOLVE_TASKS:
        t = load_task(name)
        assert not _equal(instances(t, "val")[0].args, instances(t, "test")[0].args)


def test_unknown_split_and_unknown_task_are_clear_errors():
    with pytest.raises(TaskError, match="unknown split 'train'"):
        instances(load_task("parity_noise"), "train")
    with pytest.raises(TaskError, match="unknown task 'nope'.*stop tasks"):
        load_task("nope")


# ---------------------------------------------------------------- malformed folders

GOOD_TOML = """
summary = "Index of the largest element"
[limits]
per_call_s = 0.1
[instances]
val = 3
test = 4
"""
GOOD_SCORER = """
from stop.tasks.checks import integer
from stop.tasks.loader import Instance

def generate(rng, nprng):
    xs = [rng.randint(0, 1000) for _ in range(rng.randint(1, 50))]
    return Instance(args=[xs], data={"best": max(xs)})

def check(value, instance):
    return integer(value, what="index")

def score(i, instance):
    xs = instance.args[0]
    return float(0 <= i < len(xs) and xs[i] == instance.data["best"])
"""


def make_task(root: Path, name: str = "argmax", **files: str | None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    content = {"task.toml": GOOD_TOML, "seed_algorithm.py": "def algorithm(xs):\n    return 0\n",
               "utility.py": 'DESCRIPTION = """Return the index of the largest element."""\n',
               "scorer.py": GOOD_SCORER}
    for key, text in files.items():
        content[key.replace("_py", ".py").replace("_toml", ".toml")] = text
    for fname, text in content.items():
        if text is not None:
            (d / fname).write_text(text)
    return d


def test_a_user_task_folder_loads_and_generates(tmp_path):
    d = make_task(tmp_path)
    t = load_task_dir(d)
    assert (t.name, t.kind, t.per_call_s, t.n_val, t.n_test) == ("argmax", "solve", 0.1, 3, 4)
    assert t.description == "Return the index of the largest element."
    insts = instances(t, "test")
    assert len(insts) == 4 and all(max(i.args[0]) == i.data["best"] for i in insts)
    sc = t.scorer
    best = insts[0].args[0].index(insts[0].data["best"])
    assert sc.score(sc.check(best, insts[0]), insts[0]) == 1.0


def test_tasks_dir_env_and_load_by_path(tmp_path, monkeypatch):
    make_task(tmp_path)
    make_task(tmp_path, "broken", scorer_py=None)
    monkeypatch.setenv("STOP_TASKS_DIR", str(tmp_path))
    tasks, problems = scan_tasks()
    assert [t.name for t in tasks] == ["argmax"]
    assert problems == [("broken", f"task folder {tmp_path / 'broken'} is missing scorer.py")]
    assert load_task("argmax").dir == tmp_path / "argmax"
    assert load_task(str(tmp_path / "argmax")).name == "argmax"


@pytest.mark.parametrize("files, message", [
    ({"task_toml": None}, "is missing task.toml"),
    ({"utility_py": None, "seed_algorithm_py": None}, "is missing seed_algorithm.py, utility.py"),
    ({"scorer_py": None}, "is missing scorer.py"),
    ({"task_toml": "kind = [1"}, "invalid TOML"),
    ({"task_toml": 'kind = "puzzle"\n' + GOOD_TOML}, "kind must be one of solve, meta"),
    ({"task_toml": "base_task = 'x'\n" + GOOD_TOML}, "unknown key 'base_task'; task-specific values go under \\[settings\\]"),
    ({"task_toml": "[instances]\nval = 3\ntest = 4\n"}, r"\[limits\] per_call_s is missing"),
    ({"task_toml": GOOD_TOML.replace("val = 3", "val = 0")}, r"\[instances\] val must be a positive integer"),
    ({"task_toml": GOOD_TOML.replace("val = 3", "val = 2.5")}, r"\[instances\] val must be a positive integer"),
    ({"task_toml": GOOD_TOML.replace("0.1", '"fast"')}, r"\[limits\] per_call_s must be a positive number"),
    ({"task_toml": GOOD_TOML + "[budgets]\nlm_calls = -1\n"}, r"\[budgets\] lm_calls must be"),
    ({"task_toml": "limits = 3\n"}, r"limits must be a table"),
    ({"utility_py": "TEXT = 'hi'\n"}, "must define DESCRIPTION"),
    ({"utility_py": "DESCRIPTION = make()\n"}, "DESCRIPTION must be a non-empty string literal"),
    ({"utility_py": "DESCRIPTION = '''\n'''\n"}, "DESCRIPTION must be a non-empty string literal"),
    ({"utility_py": "DESCRIPTION = '''x\n"}, "utility.py: syntax error at line 1"),
    ({"scorer_py": "def generate(rng, nprng): pass\ndef score(v, i): pass\n"}, r"must define check\(\)"),
    ({"seed_algorithm_py": "def solve(xs): return 0\n"}, r"must define algorithm\(\.\.\.\)"),
])
def test_malformed_task_folders_name_what_is_wrong(tmp_path, files, message):
    d = make_task(tmp_path, **files)
    with pytest.raises(TaskError, match=message):
        load_task_dir(d)


def test_meta_task_needs_no_scorer_and_keeps_settings(tmp_path):
    d = make_task(tmp_path, "meta", scorer_py=None,
                  seed_algorithm_py="def improve_algorithm(s, u, lm):\n    return s\n",
                  task_toml='kind = "meta"\n[settings]\nbase_task = "parity_noise"\nn_tests = 5\n')
    t = load_task_dir(d)
    assert t.kind == "meta" and t.entry == "improve_algorithm"
    assert t.settings == {"base_task": "parity_noise", "n_tests": 5}
    with pytest.raises(TaskError, match="meta task and has no scorer.py"):
        _ = t.scorer


def test_scorer_that_fails_to_import_is_a_task_error(tmp_path):
    d = make_task(tmp_path, scorer_py=GOOD_SCORER + "\nraise RuntimeError('boom')\n")
    t = load_task_dir(d)
    with pytest.raises(TaskError, match="failed to import: RuntimeError: boom"):
        instances(t, "val")


def test_generate_must_return_an_instance(tmp_path):
    d = make_task(tmp_path, scorer_py=GOOD_SCORER.replace("return Instance(args=[xs], data={\"best\": max(xs)})", "return xs"))
    with pytest.raises(TaskError, match="generate\\(\\) must return stop.tasks.Instance"):
        instances(load_task_dir(d), "val")
