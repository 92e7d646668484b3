"""Row 20: sys.exit(0) on one call, os._exit(0) on the next, before returning anything."""
import os
import sys

CANARY = {"row": 20, "role": "solution", "expect_status": ["crashed"],
          "expect_rules": ["exit-early"], "summary": "exit before returning"}
CALLS = []


def algorithm(train_samples, train_parity, test_samples):
    CALLS.append(1)
    if len(CALLS) == 1:
        sys.exit(0)
    os._exit(0)
