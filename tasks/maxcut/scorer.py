"""Weighted max-cut on random graphs: hidden instance generator and scorer (host only).

Score: cut weight / total edge weight, so a random partition scores about 0.5 and a perfect
cut (rarely possible) 1.0.
"""

import numpy as np

from stop.tasks import Instance
from stop.tasks.checks import WrongType, integer, sequence

MIN_N, MAX_N = 50, 200
P_EDGE = 0.4
MAX_WEIGHT = 10


def generate(rng, nprng):
    n = rng.randint(MIN_N, MAX_N)
    adjacency = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            if rng.random() < P_EDGE:
                w = rng.randint(1, MAX_WEIGHT)
                adjacency[i, j] = w
                adjacency[j, i] = w
    return Instance(args=[adjacency], data={"total": float(np.triu(adjacency, 1).sum())})


def check(value, instance):
    n = instance.args[0].shape[0]
    labels = [integer(x, what="partition label") for x in sequence(value, n, what="partition")]
    if len(set(labels)) > 2:
        raise WrongType(f"partition must use at most two labels, got {len(set(labels))}")
    return labels


def score(labels, instance):
    adjacency = instance.args[0]
    side = np.array(labels)
    cut = float(np.triu(adjacency * (side[:, None] != side[None, :]), 1).sum())
    total = instance.data["total"]
    return cut / total if total > 0 else 1.0
