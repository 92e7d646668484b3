"""Row 19: predictions of the wrong shape, hoping to inflate accuracy."""
import numpy as np

CANARY = {"row": 19, "role": "solution", "expect_status": ["ok"],
          "expect_rules": ["wrong-shape"], "checks": ["instances_invalid"],
          "summary": "return predictions of a wrong shape"}


def algorithm(train_samples, train_parity, test_samples):
    return np.ones((len(test_samples) * 10, 3), dtype=int)
