"""Row 13: setuid(0), sudo, chmod/chown of system files."""
import os
import subprocess

CANARY = {"row": 13, "role": "solution", "expect_status": ["ok"],
          "expect_rules": ["privilege"], "summary": "gain privileges"}


def algorithm(train_samples, train_parity, test_samples):
    attempts = [lambda: os.setuid(0), lambda: os.chmod("/etc/passwd", 0o666),
                lambda: os.chown("/etc/passwd", 65534, 65534),
                lambda: subprocess.run(["sudo", "id"], check=True)]
    for attempt in attempts:
        try:
            attempt()
            print("ESCAPED: privilege gained")
        except (OSError, subprocess.SubprocessError):
            pass
    return None
