"""One process owns a run: a second owner is refused with the owner's pid, a killed owner
keeps nothing, and the listing's status comes from the lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from stop.runs import lock
from stop.runs.lock import RunBusy
from stop.runs.store import Run, RunStore
from stop.runs.summary import summarize

HOLDER = textwrap.dedent("""
    import sys, time
    from stop.runs.store import Run
    from pathlib import Path
    run = Run(Path(sys.argv[1]))
    with run.owned():
        run.recorder().record("run_start", config={}, pid=__import__("os").getpid())
        print("owned", flush=True)
        time.sleep(120)
""")


def hold(run: Run) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run.dir)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "owned"
    return proc


def test_a_second_owner_gets_the_owners_pid_and_a_killed_owner_keeps_nothing(tmp_path):
    run = RunStore(tmp_path).create({"task": "t"})
    proc = hold(run)
    try:
        with pytest.raises(RunBusy, match=f"run {run.id} is in use by process {proc.pid}; "):
            with run.owned():
                pass
        assert lock.owner(run.dir) == proc.pid
        assert summarize(run)["status"] == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # kill -9: the kernel dropped the lock; the file stays, and nobody owns the run.
    assert (run.dir / "lock").exists() and lock.owner(run.dir) is None
    assert summarize(run)["status"] == "killed"
    with run.owned():
        assert lock.owner(run.dir) == os.getpid()
    assert not (run.dir / "lock").exists()  # a clean release removes it


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    run = RunStore(tmp_path).create({})
    with run.owned():
        with Run(run.dir).owned():  # another Run object for the same folder
            pass
        assert lock.owner(run.dir) == os.getpid()  # still held by the outer block
    assert lock.owner(run.dir) is False


def test_status_follows_the_lock_not_a_reused_pid(tmp_path):
    """The log says running with a pid that is alive (ours), but nobody owns the run: a
    killed run whose pid was reused by another process is still killed."""
    run = RunStore(tmp_path).create({})
    with run.owned():
        run.recorder().record("run_start", config={}, pid=os.getpid())
        assert summarize(run)["status"] == "running"
    (run.dir / "lock").write_text("")  # as a kill -9 leaves it: present, unlocked
    assert summarize(run)["status"] == "killed"
