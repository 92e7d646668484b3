def algorithm(adjacency_matrix):
    # Greedy: repeatedly place the unplaced node (and side) that adds the most cut weight
    # against the nodes already placed.
    n = len(adjacency_matrix)
    side = [None] * n
    unplaced = set(range(n))
    while unplaced:
        best = (-1.0, None, None)
        for node in unplaced:
            row = adjacency_matrix[node]
            for s in (0, 1):
                gain = sum(row[k] for k in range(n) if side[k] == 1 - s)
                if gain > best[0]:
                    best = (gain, node, s)
        _, node, s = best
        side[node] = s
        unplaced.remove(node)
    return side
