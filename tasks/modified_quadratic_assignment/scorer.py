"""Modified quadratic assignment: hidden instance generator and scorer (host only).

The score is the improvement over a random assignment: max(0, 1 - obj / obj_rand), where
obj_rand is the mean objective of 100 uniformly random permutations drawn right after the
instance from the same seeded generator (fixed per instance, never seen by the candidate).
"""

import numpy as np

from stop.tasks import Instance
from stop.tasks.checks import int_vector

N = 15
LAMBDA = 0.5
N_RANDOM = 100


def objective(F, D, P, a) -> float:
    """sum_ij F[i, j] * D[a_i, a_j] - LAMBDA * sum_i P[i, a_i] (to minimise)."""
    a = np.asarray(a, dtype=np.intp)
    return float((F * D[np.ix_(a, a)]).sum() - LAMBDA * P[np.arange(len(a)), a].sum())


def generate(rng, nprng):
    F = nprng.rand(N, N)
    D = nprng.rand(N, N)
    P = nprng.rand(N, N)
    obj_rand = float(np.mean([objective(F, D, P, nprng.permutation(N)) for _ in range(N_RANDOM)]))
    return Instance(args=[F, D, P], data={"obj_rand": obj_rand})


def check(value, instance):
    return int_vector(value, N, what="assignment")


def score(assignment, instance):
    if sorted(assignment) != list(range(N)):
        return 0.0, "wrong"
    F, D, P = instance.args
    obj = objective(F, D, P, assignment)
    return max(0.0, 1.0 - obj / instance.data["obj_rand"])
