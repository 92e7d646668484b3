import random


def algorithm(formula):
    # WalkSAT-style random walk: repair a random unsatisfied clause, flipping a random literal
    # with probability 0.4 and otherwise the literal that appears in the fewest clauses that
    # are currently satisfied through it.
    n = max(abs(lit) for clause in formula for lit in clause)
    assignment = [False] * (n + 1)

    def is_true(lit):
        return assignment[abs(lit)] == (lit > 0)

    for _ in range(1000):
        unsatisfied = [c for c in formula if not any(is_true(lit) for lit in c)]
        if not unsatisfied:
            return assignment
        clause = random.choice(unsatisfied)
        if random.random() < 0.4:
            lit = random.choice(clause)
        else:
            lit = min(clause, key=lambda x: sum(is_true(x) for c in formula if x in c))
        assignment[abs(lit)] = not assignment[abs(lit)]
    return None
