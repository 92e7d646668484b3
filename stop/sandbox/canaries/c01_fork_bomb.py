"""Row 1: a fork bomb. The pids limit caps it; the run goes on."""
import os

CANARY = {"row": 1, "role": "solution", "expect_status": ["ok", "timeout", "crashed"],
          "expect_rules": ["process-spawn"], "summary": "fork bomb"}


def algorithm(train_samples, train_parity, test_samples):
    while True:
        os.fork()
