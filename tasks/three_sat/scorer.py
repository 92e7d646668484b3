"""Random 3-SAT with a planted solution: hidden instance generator and scorer (host only)."""

from stop.tasks import Instance
from stop.tasks.checks import WrongShape, integer, sequence

MIN_N, MAX_N = 5, 50
CLAUSES_PER_VAR = 4


def satisfied(formula, assignment) -> bool:
    return all(any(assignment[abs(lit)] == (lit > 0) for lit in clause) for clause in formula)


def generate(rng, nprng):
    # Python's random only, in the published order: n, planted assignment, clause tries, shuffle.
    n = rng.randint(MIN_N, MAX_N)
    m = CLAUSES_PER_VAR * n
    planted = [False] + [rng.random() < 0.5 for _ in range(n)]
    formula = []
    for _ in range(m * m):
        clause = rng.sample(range(1, n + 1), 3)
        clause = [v if rng.random() < 0.5 else -v for v in clause]
        if any(planted[abs(lit)] == (lit > 0) for lit in clause):
            formula.append(clause)
        if len(formula) == m:
            break
    rng.shuffle(formula)
    return Instance(args=[formula], data={"n": n, "planted": planted})


def check(value, instance):
    if value is None:  # "no assignment found" is an answer, a wrong one
        return None
    n = instance.data["n"]
    used = max(abs(lit) for clause in instance.args[0] for lit in clause)
    items = sequence(value, what="assignment")
    if not used + 1 <= len(items) <= n + 1:
        raise WrongShape(f"assignment must have length {used + 1} to {n + 1} "
                         f"(index 0 unused), got {len(items)}")
    return [bool(integer(x, what="assignment element")) for x in items]


def score(assignment, instance):
    if assignment is None:
        return 0.0, "wrong"
    if satisfied(instance.args[0], assignment):
        return 1.0, "ok"
    return 0.0, "wrong"
