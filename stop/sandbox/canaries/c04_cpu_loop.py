"""Row 4: an endless CPU loop that also ignores the harness's per-call alarm.

Only the host's deadline can stop it: the finding must name the wall-clock limit.
"""
import signal

CANARY = {"row": 4, "role": "solution", "expect_status": ["timeout"],
          "expect_rules": ["resource-timeout", "signal-tamper"], "expect_detail": {"limit": "wall_s"},
          "summary": "endless CPU loop, alarm ignored"}


def algorithm(train_samples, train_parity, test_samples):
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    n = 0
    while True:
        n += 1
