"""Row 8: exhaust file descriptors. Opening fails at the nofile limit."""

CANARY = {"row": 8, "role": "solution", "expect_status": ["ok"],
          "expect_rules": ["resource-fds"], "summary": "exhaust file descriptors"}


def algorithm(train_samples, train_parity, test_samples):
    held = []
    while True:
        held.append(open("/dev/null"))
