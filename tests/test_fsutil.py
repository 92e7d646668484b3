"""write_atomic and pid_alive: the file-system and process helpers every part shares."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from privileges import drop_privileges

from stop.fsutil import pid_alive, write_atomic


def test_write_atomic_replaces_whole_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a" / "b.json"
    write_atomic(path, "one")
    write_atomic(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "b.txt"
    write_atomic(path, "old")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(path, "half \udcff")  # a lone surrogate cannot be encoded: fails mid-write
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["b.txt"]


def test_pid_alive_for_live_gone_and_non_pids():
    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)  # reaped: no such process
    for not_a_pid in (0, -1, None, "1", 1.0, True, 2**80):
        assert not pid_alive(not_a_pid)


def test_a_process_of_another_user_counts_as_alive():
    """Probing another user's process raises PermissionError: it exists all the same."""
    other = {"user": 65534} if os.getuid() == 0 else {}
    sleeper = subprocess.Popen(["sleep", "60"], **other)
    try:
        code = (f"import os, stop.fsutil as f\n"
                f"try:\n    os.kill({sleeper.pid}, 0)\nexcept PermissionError:\n    print('EPERM')\n"
                f"print(f.pid_alive({sleeper.pid}))")
        if not other:
            code = code.replace(str(sleeper.pid), "1")  # unprivileged already: pid 1 is root's
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, preexec_fn=drop_privileges)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["EPERM", "True"]
