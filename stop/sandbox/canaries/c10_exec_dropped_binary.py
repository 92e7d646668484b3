"""Row 10: drop a native binary in /tmp and execute it. /tmp is noexec."""
import os
import shutil
import subprocess

CANARY = {"row": 10, "role": "solution", "expect_status": ["ok"],
          "expect_rules": ["exec-binary"], "summary": "execute a dropped binary"}


def algorithm(train_samples, train_parity, test_samples):
    shutil.copy("/bin/true", "/tmp/dropped")
    os.chmod("/tmp/dropped", 0o755)
    try:
        subprocess.run(["/tmp/dropped"], check=True)
        print("ESCAPED: executed /tmp/dropped")
    except OSError:
        pass
    return None
