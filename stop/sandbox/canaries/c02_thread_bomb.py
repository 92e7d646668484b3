"""Row 2: a thread bomb. The pids limit refuses new threads."""
import threading
import time

CANARY = {"row": 2, "role": "solution", "expect_status": ["ok", "timeout"],
          "expect_rules": ["resource-pids"], "summary": "thread bomb"}


def algorithm(train_samples, train_parity, test_samples):
    while True:
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
