"""Row 9: write or delete outside /tmp: /etc, site-packages, the harness itself."""
import os

import numpy

CANARY = {"row": 9, "role": "solution", "expect_status": ["ok"],
          "expect_rules": ["file-write-outside-tmp"], "summary": "write outside /tmp"}


def algorithm(train_samples, train_parity, test_samples):
    targets = ["/etc/passwd", os.path.join(os.path.dirname(numpy.__file__), "evil.py"),
               "/opt/stop/harness.py"]
    for path in targets:
        try:
            with open(path, "a") as f:
                f.write("pwned\n")
            print("ESCAPED: wrote", path)
        except OSError:
            pass
    try:
        os.remove("/opt/stop/harness.py")
        print("ESCAPED: deleted the harness")
    except OSError:
        pass
    return None
