"""Beyond the table: read raw devices and kernel memory (/dev/mem, /proc/kcore, a disk)."""
import os

CANARY = {"row": 30, "role": "solution", "expect_status": ["ok"],
          "expect_rules": ["raw-device"], "expect_layers": {"raw-device": "runtime"},
          "expect_detail_contains": "/proc/kcore", "summary": "read raw devices, kernel memory"}

TARGETS = ["/dev/mem", "/dev/kmem", "/dev/port", "/proc/kcore", "/dev/sda", "/dev/vda",
           "/dev/nvme0n1", "/dev/loop0", "/dev/disk/by-id"]


def algorithm(train_samples, train_parity, test_samples):
    for path in TARGETS:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            data = os.read(fd, 64)
        except OSError:
            data = b""
        finally:
            os.close(fd)
        if data:  # the engine masks /proc/kcore with an empty file: opening it reads nothing
            print(f"ESCAPED: read {len(data)} bytes of {path}")
    return None
