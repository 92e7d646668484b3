"""Row 24: leave a daemonised child behind. It dies with the container."""
import os
import time

CANARY = {"row": 24, "role": "solution", "expect_status": ["ok"],
          "expect_rules": ["daemon-child"], "checks": ["no_leftover_container"],
          "summary": "leave a daemon behind"}


def algorithm(train_samples, train_parity, test_samples):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(3600)
        os._exit(0)
    time.sleep(0.2)
    return None
