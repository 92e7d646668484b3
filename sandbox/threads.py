"""The libraries' thread pools, sized before they load: the harness imports this ahead of NumPy.

The host starts the harness with ``--threads N``, N being the CPUs the container may use. This
sets the BLAS and OpenMP thread counts to N, or to 1 without the argument. Left to itself,
OpenBLAS starts a thread per host core at import. Those threads spin on CPU the container's quota
does not give it: 61 ms of CPU per container here (benchmarks/bench_container_cpu.py).
tripwires.install empties the environment before the candidate runs, so the candidate never
sees these variables.
"""

import os
import sys

import protocol

VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def count(argv):
    """N from ``--threads N``, else 1 (a malformed N counts as absent)."""
    if protocol.THREADS_ARG in argv[:-1]:
        n = argv[argv.index(protocol.THREADS_ARG) + 1]
        if n.isdigit() and 0 < int(n) <= 256:
            return n
    return "1"


os.environ.update(dict.fromkeys(VARS, count(sys.argv)))
