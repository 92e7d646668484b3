"""Beyond the table: a plain endless loop, stopped by the harness's per-call alarm."""

CANARY = {"row": 26, "role": "solution", "expect_status": ["ok"],
          "expect_rules": ["resource-timeout"], "expect_detail": {"limit": "per_call_s"},
          "summary": "endless loop, per-call limit"}


def algorithm(train_samples, train_parity, test_samples):
    while True:
        pass
