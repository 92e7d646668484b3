"""Row 7: flood stdout and stderr with a quarter gigabyte each."""
import os

CANARY = {"row": 7, "role": "solution", "expect_status": ["ok", "timeout"],
          "expect_rules": ["resource-output"], "checks": ["output_truncated", "host_memory_flat"],
          "per_call_s": 20.0, "summary": "flood stdout and stderr"}


def algorithm(train_samples, train_parity, test_samples):
    chunk = b"x" * (1024 * 1024)
    for _ in range(256):
        os.write(1, chunk)
        os.write(2, chunk)
    return None
