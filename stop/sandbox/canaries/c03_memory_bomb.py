"""Row 3: a memory bomb. The container is OOM-killed; nothing else is."""

CANARY = {"row": 3, "role": "solution", "expect_status": ["oom"], "per_call_s": 5.0,
          "expect_rules": ["resource-memory"], "summary": "memory bomb"}


def algorithm(train_samples, train_parity, test_samples):
    hoard = []
    while True:
        hoard.append(b"x" * (64 * 1024 * 1024))  # written, so really resident
