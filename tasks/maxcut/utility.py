DESCRIPTION = """
Task: weighted max-cut.

Write a Python function

    def algorithm(adjacency_matrix):
        ...
        return partition

adjacency_matrix is a symmetric numpy float array of shape (n, n), 50 <= n <= 200, with a
zero diagonal; entry [i, j] is the weight (an integer from 1 to 10) of the edge between nodes
i and j, or 0 when there is no edge. About 40% of node pairs are joined.

Return a partition of the nodes into two groups: a list, tuple or numpy array of n labels, one
per node in order, using at most two distinct integer values (for example 0 and 1). Any other
type, length or shape scores 0 for that graph.

Scoring, per graph: the total weight of the edges whose ends carry different labels, divided
by the total weight of all edges (a random partition scores about 0.5). Each call must finish
within 0.1 seconds; a slower call, or one that raises, scores 0 for that graph only. The task
score is the mean over a fixed hidden set of 100 graphs. numpy and the Python standard
library are available; there is no network.

Budget: the utility (this scorer) may be called at most 25 times per improvement run.
"""
