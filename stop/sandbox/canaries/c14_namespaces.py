"""Row 14: unshare and mount."""
import ctypes
import subprocess

CANARY = {"row": 14, "role": "solution", "expect_status": ["ok"],
          "expect_rules": ["namespace"], "summary": "unshare and mount"}


def algorithm(train_samples, train_parity, test_samples):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) == 0:  # CLONE_NEWUSER
        print("ESCAPED: unshare(CLONE_NEWUSER)")
    if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0:
        print("ESCAPED: mount")
    for cmd in (["unshare", "-r", "true"], ["mount", "-t", "tmpfs", "none", "/mnt"]):
        try:
            subprocess.run(cmd, check=True, capture_output=True)
            print("ESCAPED:", cmd[0])
        except (OSError, subprocess.SubprocessError):
            pass
    return None
