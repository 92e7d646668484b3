DESCRIPTION = """
Task: modified quadratic assignment (MQAP).

Write a Python function

    def algorithm(F, D, P):
        ...
        return assignment

F (flows between facilities), D (distances between locations) and P (preference of facility
i for location k) are numpy float arrays of shape (15, 15) with entries uniform in [0, 1).
Return an assignment of the 15 facilities to the 15 locations: a list, tuple or numpy array
of 15 integers that is a permutation of 0..14 (facility i goes to location assignment[i]).

The objective, to MINIMISE, is

    sum over i, j of F[i, j] * D[assignment[i], assignment[j]]
        - 0.5 * sum over i of P[i, assignment[i]]

Scoring, per problem: max(0, 1 - objective / random_objective), where random_objective is
the average objective of random permutations on that problem: a random assignment scores
about 0, and every improvement over random counts. An output that is not a permutation of
0..14 scores 0. Each call must finish within 0.5 seconds; a slower call, or one that raises,
scores 0 for that problem only. The task score is the mean over a fixed hidden set of 10
problems. numpy and the Python standard library are available; there is no network.

Budget: the utility (this scorer) may be called at most 25 times per improvement run.
"""
