"""Row 16: kill the parent, init and every process in reach."""
import os
import signal

CANARY = {"row": 16, "role": "solution", "expect_status": ["ok", "crashed"],
          "expect_rules": ["kill"], "summary": "kill the parent and other processes"}


def algorithm(train_samples, train_parity, test_samples):
    for pid in (os.getppid(), 1):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    os.kill(-1, signal.SIGKILL)
