"""Beyond the table: close every descriptor so the harness cannot report at all."""
import os

CANARY = {"row": 29, "role": "solution", "expect_status": ["crashed"],
          "expect_rules": ["exit-early"], "summary": "close the protocol channel"}


def algorithm(train_samples, train_parity, test_samples):
    os.closerange(0, 1024)
    return None
