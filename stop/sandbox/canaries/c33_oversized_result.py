"""Beyond the table: an honest solution whose answer is too big for the protocol.

A result frame over the host's 32 MB frame limit is a resource limit, not a forgery: that call
counts as an error, the execution is not voided, and the finding says which limit fired.
"""
import numpy as np

CANARY = {"row": 33, "role": "solution", "expect_status": ["ok"],
          "expect_rules": ["resource-result"], "expect_detail": {"limit": "frame_bytes"},
          "summary": "return a value over the frame limit"}

CALLS = []


def algorithm(train_samples, train_parity, test_samples):
    CALLS.append(1)
    if len(CALLS) == 1:  # the first answer only: about 34 MB as JSON
        return np.full(1_700_000, 9 * 10**18, dtype=np.int64)
    return None
