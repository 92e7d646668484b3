"""Row 5: read stdin (it must be empty), then sleep forever."""
import sys
import time

CANARY = {"row": 5, "role": "solution", "expect_status": ["ok", "timeout"],
          "expect_rules": ["resource-timeout"], "expect_stdout": "stdin=0",
          "summary": "block on stdin, then sleep forever"}


def algorithm(train_samples, train_parity, test_samples):
    data = sys.stdin.read()
    print(f"stdin={len(data)}", flush=True)
    time.sleep(10**6)
