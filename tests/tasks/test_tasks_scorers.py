"""Scorers and output checks of every task, on the host: edge cases and reference points."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from stop.container.codec import Opaque, decode, encode

from stop.tasks.checks import (
    OutputRejected,
    WrongShape,
    WrongType,
    binary_vector,
    exact_str,
    int_vector,
    integer,
)
from stop.tasks.loader import instances, load_task


def run_host(task, split, fn):
    """Score a trusted reference function in-process (generator and scorer checks only)."""
    sc = task.scorer
    total = 0.0
    for inst in instances(task, split):
        total += _score(sc, sc.check(decode(encode(fn(*inst.args))), inst), inst)
    return total / task.n_instances(split)


def _score(sc, value, inst):
    s = sc.score(value, inst)
    return s[0] if isinstance(s, tuple) else s


def lpn_exhaustive(train_samples, train_parity, test_samples):
    masks = np.array(list(itertools.product([0, 1], repeat=train_samples.shape[1])))
    errors = ((train_samples @ masks.T) % 2 != train_parity[:, None]).sum(axis=0)
    best = masks[int(np.argmin(errors))]
    return (test_samples @ best) % 2


# ---------------------------------------------------------------- checks


def test_binary_vector_accepts_the_honest_forms():
    assert binary_vector([0, 1, True, False], 4) == [0, 1, 1, 0]
    assert binary_vector((1.0, 0.0), 2) == [1, 0]
    assert binary_vector(np.array([1, 0, 1]), 3) == [1, 0, 1]
    assert binary_vector(np.array([True, False]), 2) == [1, 0]
    assert binary_vector([np.int64(1), np.float32(0.0), np.bool_(True)], 3) == [1, 0, 1]


class ListSubclass(list):
    pass


class AlwaysEqual:
    def __eq__(self, other):
        return True


@pytest.mark.parametrize("value, error, message", [
    (np.zeros((20, 1), dtype=int), WrongShape, r"must be 1-D of length 20, got shape \(20, 1\)"),
    (np.zeros((1, 20), dtype=int), WrongShape, "must be 1-D"),
    (np.zeros(21, dtype=int), WrongShape, "must have length 20, got 21"),
    ([0] * 19, WrongShape, "must have length 20, got 19"),
    (np.int64(1), WrongType, "must be a list, tuple or 1-D numpy array"),
    (0, WrongType, "must be a list"),
    ("0" * 20, WrongType, "got a str of length 20"),
    (Opaque("AlwaysEqual"), WrongType, "got an object of type AlwaysEqual"),
    (ListSubclass([0] * 20), WrongType, "got a value of type ListSubclass"),
    ([AlwaysEqual()] * 20, WrongType, "must be an integer, got a value of type AlwaysEqual"),
    ([Opaque("x")] * 20, WrongType, "must be an integer, got an object of type x"),
    ([2] + [0] * 19, WrongType, "must be one of 0, 1, got 2"),
    ([0.5] + [0] * 19, WrongType, "must be an integer, got 0.5"),
    ([float("nan")] * 20, WrongType, "must be an integer"),
    ([None] * 20, WrongType, "must be an integer"),
    ({"0": 1}, WrongType, "got a value of type dict"),
])
def test_binary_vector_rejects_everything_else(value, error, message):
    with pytest.raises(error, match=message) as e:
        binary_vector(value, 20)
    assert isinstance(e.value, OutputRejected)
    assert e.value.rule == ("wrong-shape" if error is WrongShape else "wrong-type")


def test_codec_turns_tricks_into_opaque_values_the_checks_reject():
    for trick in (ListSubclass([0] * 20), [AlwaysEqual()] * 20):
        with pytest.raises(WrongType):
            binary_vector(decode(encode(trick)), 20)


def test_integer_and_exact_str():
    assert integer(np.uint8(7)) == 7 and integer(3.0) == 3 and integer(True) == 1
    with pytest.raises(WrongType):
        integer("3")
    assert exact_str("ABBA", 4, alphabet="AB") == "ABBA"
    with pytest.raises(WrongShape):
        exact_str("AB", 3, alphabet="AB")
    with pytest.raises(WrongType, match="may only use"):
        exact_str("ABC", 3, alphabet="AB")
    with pytest.raises(WrongType):
        exact_str(["A", "B"], 2)
    assert int_vector([3, 1], 2, allowed=frozenset({1, 3})) == [3, 1]


# ---------------------------------------------------------------- parity


@pytest.mark.parametrize("name", ["parity_noise", "parity_noiseless"])
def test_parity_exhaustive_search_is_perfect_and_constant_guess_is_not(name):
    task = load_task(name)
    for split in ("val", "test"):
        assert run_host(task, split, lpn_exhaustive) == 1.0
        assert 0.2 < run_host(task, split, lambda a, b, c: [0] * len(c)) < 0.8


def test_parity_noise_flips_about_five_percent_of_train_labels():
    task = load_task("parity_noise")
    flips = total = 0
    for inst in instances(task, "test"):
        train, labels, _ = inst.args
        clean = (train @ np.array(inst.data["true_bits"])) % 2
        flips += int((clean != labels).sum())
        total += len(labels)
        assert train.shape == (100, 10) and inst.args[2].shape == (20, 10)
    assert 0.02 < flips / total < 0.08
    clean_task = load_task("parity_noiseless")
    for inst in instances(clean_task, "val"):
        assert ((inst.args[0] @ np.array(inst.data["true_bits"])) % 2 == inst.args[1]).all()


def test_parity_scores_accuracy_per_instance():
    task = load_task("parity_noise")
    inst = instances(task, "val")[0]
    truth = inst.data["test_parity"]
    half = [t if k < 10 else 1 - t for k, t in enumerate(truth)]
    assert task.scorer.score(task.scorer.check(half, inst), inst) == 0.5
    assert task.scorer.score(task.scorer.check([1 - t for t in truth], inst), inst) == 0.0


# ---------------------------------------------------------------- string grid distance


def test_str_grid_dist_seed_reproduces_the_published_scores():
    task = load_task("str_grid_dist")
    assert round(run_host(task, "test", lambda t, d: t), 3) == 0.439
    assert round(run_host(task, "val", lambda t, d: t), 3) == 0.483


def test_str_grid_dist_partial_credit_and_checks():
    task = load_task("str_grid_dist")
    sc = task.scorer
    assert sc.grid_dist("AB", "AB") == 2 and sc.grid_dist("AA", "BB") == 2
    assert sc.grid_dist("AAB", "BAB") == 1 + 1 + 2
    inst = next(i for i in instances(task, "val") if len(i.args[0]) >= 5)
    t, dist = inst.args
    assert sc.score(inst.data["example"], inst) == (1.0, "ok")
    off_by = abs(sc.grid_dist(t, t) - dist)
    s, status = sc.score(t, inst)
    assert status == ("ok" if off_by == 0 else "wrong")
    if off_by:
        assert s == pytest.approx(max(0.0, 0.5 - off_by / (6 * len(t))))
    with pytest.raises(WrongShape):
        sc.check(t + "A", inst)
    with pytest.raises(WrongType):
        sc.check(list(t), inst)


# ---------------------------------------------------------------- MQAP


def test_mqap_score_is_improvement_over_random():
    task = load_task("modified_quadratic_assignment")
    sc = task.scorer
    for inst in instances(task, "val"):
        F, D, P = inst.args
        assert F.shape == D.shape == P.shape == (15, 15)
        assert inst.data["obj_rand"] > 0
        ident = list(range(15))
        expected = sum(F[i, j] * D[i, j] for i in range(15) for j in range(15)) - 0.5 * np.trace(P)
        assert sc.objective(F, D, P, ident) == pytest.approx(expected)
        assert sc.score(sc.check(ident, inst), inst) == pytest.approx(
            max(0.0, 1 - expected / inst.data["obj_rand"]))
    # Random permutations score about zero on average (the baseline is their mean objective).
    rng = np.random.RandomState(0)
    scores = [_score(sc, sc.check(rng.permutation(15), inst), inst)
              for inst in instances(task, "test") for _ in range(20)]
    assert np.mean(scores) < 0.05
    inst = instances(task, "val")[0]
    assert sc.score(sc.check([0] * 15, inst), inst) == (0.0, "wrong")
    for bad in ([0] * 14, np.arange(15).reshape(3, 5), [0.5] * 15):
        with pytest.raises(OutputRejected):
            sc.check(bad, inst)


def test_mqap_seed_improves_on_random():
    task = load_task("modified_quadratic_assignment")
    ns: dict = {}
    exec(task.seed_source, ns)
    random.seed(0)
    assert 0.05 < run_host(task, "val", ns["algorithm"]) < 0.5


# ---------------------------------------------------------------- 3-SAT


def test_three_sat_formulas_are_planted_and_well_formed():
    task = load_task("three_sat")
    sc = task.scorer
    for inst in instances(task, "val"):
        formula, n = inst.args[0], inst.data["n"]
        assert 5 <= n <= 50 and len(formula) == 4 * n
        for clause in formula:
            assert len(clause) == 3 and len({abs(x) for x in clause}) == 3
            assert all(1 <= abs(x) <= n for x in clause)
        assert sc.score(sc.check(inst.data["planted"], inst), inst) == (1.0, "ok")


def test_three_sat_scoring_edge_cases():
    task = load_task("three_sat")
    sc = task.scorer
    inst = instances(task, "test")[0]
    n = inst.data["n"]
    planted = inst.data["planted"]
    assert sc.score(sc.check(None, inst), inst) == (0.0, "wrong")
    negated = [False] + [not v for v in planted[1:]]
    assert sc.score(sc.check(negated, inst), inst) == (0.0, "wrong")
    assert sc.score(sc.check(np.array(planted, dtype=int), inst), inst) == (1.0, "ok")
    with pytest.raises(WrongShape):
        sc.check(planted + [True], inst)
    with pytest.raises(WrongShape):
        sc.check(planted[:2], inst)
    with pytest.raises(WrongType):
        sc.check({i: v for i, v in enumerate(planted)}, inst)
    with pytest.raises(WrongType):
        sc.check(["yes"] * (n + 1), inst)


# ---------------------------------------------------------------- max-cut


def test_maxcut_graphs_and_cut_ratio():
    task = load_task("maxcut")
    sc = task.scorer
    insts = instances(task, "val")
    for inst in insts[:10]:
        A = inst.args[0]
        n = A.shape[0]
        assert 50 <= n <= 200 and A.shape == (n, n)
        assert (A == A.T).all() and (np.diag(A) == 0).all()
        assert set(np.unique(A)) <= set(range(11))
        assert sc.score(sc.check([0] * n, inst), inst) == 0.0
        labels = [k % 2 for k in range(n)]
        cut = sum(A[i, j] for i in range(n) for j in range(i + 1, n) if labels[i] != labels[j])
        assert sc.score(sc.check(labels, inst), inst) == pytest.approx(cut / inst.data["total"])
        assert 0.35 < sc.score(sc.check(np.array(labels) * 2 - 1, inst), inst) < 0.65
    inst = insts[0]
    n = inst.args[0].shape[0]
    with pytest.raises(WrongType, match="at most two labels"):
        sc.check([k % 3 for k in range(n)], inst)
    with pytest.raises(WrongShape):
        sc.check([0] * (n - 1), inst)
