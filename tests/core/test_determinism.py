"""A solution that draws random numbers scores the same every time it is scored.

Resume and replay recompute scores in fresh containers; the harness seeds Python's and NumPy's
generators per call, so a program's score is a function of its source and its inputs.
"""

from __future__ import annotations

import pytest

from stop.tasks.loader import load_task
from stop.tasks.scoring import score_solution

RANDOM_GUESSER = """
import random
import numpy as np

def algorithm(train_samples, train_parity, test_samples):
    coin = [random.randint(0, 1) for _ in test_samples]
    noise = np.random.binomial(1, 0.5, len(test_samples))
    return [int(a ^ b) for a, b in zip(coin, noise)]
"""


@pytest.mark.docker
def test_random_solution_scores_identically_twice(sandbox):
    task = load_task("parity_noise")
    first = score_solution(task, RANDOM_GUESSER, split="val", sandbox=sandbox)
    second = score_solution(task, RANDOM_GUESSER, split="val", sandbox=sandbox)
    assert first.counts()["ok"] + first.counts()["wrong"] == task.n_val
    assert [o.score for o in first.outcomes] == [o.score for o in second.outcomes]
    assert first.score == second.score
    assert 0.2 < first.score < 0.8
