import math
import random

import numpy as np


def algorithm(F, D, P):
    n = len(F)
    lam = 0.5

    def objective(a):
        idx = np.array(a)
        return (F * D[np.ix_(idx, idx)]).sum() - lam * P[np.arange(n), idx].sum()

    current = list(range(n))
    random.shuffle(current)
    current_obj = objective(current)
    best, best_obj = current[:], current_obj
    temperature = 1.0
    for _ in range(1000):
        temperature *= 0.99
        i, j = random.sample(range(n), 2)
        candidate = current[:]
        candidate[i], candidate[j] = candidate[j], candidate[i]
        cand_obj = objective(candidate)
        delta = cand_obj - current_obj
        if delta < 0 or random.random() < math.exp(-delta / temperature):
            current, current_obj = candidate, cand_obj
            if current_obj < best_obj:
                best, best_obj = current[:], current_obj
    return best
