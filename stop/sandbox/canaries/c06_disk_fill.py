"""Row 6: fill the disk with one huge file. The write fails at the size limit."""

CANARY = {"row": 6, "role": "solution", "expect_status": ["ok"],
          "expect_rules": ["resource-disk"], "summary": "fill the disk"}


def algorithm(train_samples, train_parity, test_samples):
    block = b"\0" * (1024 * 1024)
    with open("/tmp/huge.bin", "wb") as f:
        for _ in range(10**6):
            f.write(block)
            f.flush()
    print("ESCAPED: wrote a terabyte")
