DESCRIPTION = """
Task: random 3-SAT.

Write a Python function

    def algorithm(formula):
        ...
        return assignment

formula is a list of clauses; each clause is a list of 3 nonzero integers (literals) over
variables 1..n, with 5 <= n <= 50 and 4n clauses. Literal v means "variable v is True",
-v means "variable v is False". A clause is satisfied when at least one of its literals is.
Every formula you get is satisfiable.

Return a list (or tuple, or numpy array) of booleans (or 0/1 integers) indexed by variable:
assignment[v] is the value of variable v, and index 0 is unused. Its length must be at
least (largest variable in the formula) + 1 and at most n + 1. Returning None means "not
found".

Scoring, per formula: 1 if the assignment satisfies every clause, else 0. Each call must
finish within 0.1 seconds; a slower call, or one that raises, scores 0 for that formula only.
The task score is the fraction of a fixed hidden set of 30 formulas solved in time. The
Python standard library and numpy are available; there is no network.

Budget: the utility (this scorer) may be called at most 25 times per improvement run.
"""
