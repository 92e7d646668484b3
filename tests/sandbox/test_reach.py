"""Run-time rules for raw devices and for reaching the harness's objects, on the real engine:
what reaches the harness is reported with its line, harmless introspection is not."""

from __future__ import annotations

import textwrap

import pytest

from stop.sandbox import SolveJob
from stop.sandbox.records import ExecLimits
from stop.sandbox.rules import RULES

pytestmark = pytest.mark.docker


def solve(sandbox, source):
    job = SolveJob(textwrap.dedent(source), [[]], per_call_s=5.0)
    r = sandbox.execute(job, limits=ExecLimits(wall_s=20), role="solution")
    assert r.status == "ok", (r.status, r.stderr)
    assert r.value[0]["status"] == "ok", r.value
    return r


def runtime(r, rule):
    return [f for f in r.findings if f.rule == rule and f.layer == "runtime"]


def test_the_new_rules_have_a_severity():
    assert RULES["raw-device"].severity == "high" and RULES["harness-reach"].severity == "high"
    assert RULES["resource-result"].severity == "medium"
    assert "runtime" in RULES["raw-device"].layers and "runtime" in RULES["harness-reach"].layers


def test_harmless_introspection_is_not_reported(sandbox):
    r = solve(sandbox, """
        import gc, inspect, sys, traceback, io, collections

        def helper():
            return sys._getframe(1).f_code.co_name      # the candidate's own caller

        def algorithm():
            me = sys._getframe()                         # its own frame
            names = [me.f_code.co_name, helper(), inspect.currentframe().f_code.co_name]
            mine = [1, 2, 3]
            held = gc.get_referrers(mine)                # its own object
            inside = gc.get_referents(mine)
            buf = io.StringIO()
            traceback.print_stack(file=buf)              # names and lines only
            Point = collections.namedtuple("Point", "x y")
            try:
                raise ValueError("x")
            except ValueError as e:
                tb = traceback.format_exception(e)
            return [names, len(held) >= 0, len(inside), Point(1, 2).x, len(tb) > 0]
        """)
    assert runtime(r, "harness-reach") == [], [f.attempted for f in r.findings]
    assert r.value[0]["value"][0] == ["algorithm", "algorithm", "algorithm"]


def test_reaching_the_harness_is_reported_with_the_line(sandbox):
    r = solve(sandbox, """
        import gc, sys

        def algorithm():
            g = sys._getframe(1).f_globals
            chan = g["CHAN"]
            n = len(chan.nonce)
            allobj = gc.get_objects()
            return n
        """)
    hits = {f.line: f for f in runtime(r, "harness-reach")}
    assert set(hits) == {5, 7, 8}, [(f.line, f.attempted) for f in hits.values()]
    assert "run_solve" in hits[5].attempted and hits[5].source_line.startswith("g = sys._getframe")
    assert "nonce" in hits[7].attempted and "gc.get_objects" in hits[8].attempted
    assert all(f.severity == "high" and f.action == "contained" for f in hits.values())
    assert r.value[0]["value"] == 32  # reached, and contained: it changes nothing on the host


def test_calling_the_channel_is_reported_however_it_was_found(sandbox):
    r = solve(sandbox, """
        import sys

        def algorithm():
            chan = sys.modules["__main__"].CHAN
            chan.finding("exit-early", "a finding of my own")
            return 1
        """)
    hits = runtime(r, "harness-reach")
    assert [f.line for f in hits] == [6] and "finding" in hits[0].attempted


def test_raw_devices_and_kernel_memory(sandbox):
    r = solve(sandbox, """
        def algorithm():
            got = {}
            for p in ("/dev/mem", "/proc/kcore", "/dev/sda", "/dev/null", "/proc/self/status"):
                try:
                    with open(p, "rb") as f:
                        got[p] = len(f.read(16))
                except OSError as e:
                    got[p] = type(e).__name__
            return got
        """)
    paths = sorted(f.detail["path"] for f in runtime(r, "raw-device"))
    assert paths == ["/dev/mem", "/dev/sda", "/proc/kcore"]
    got = r.value[0]["value"]
    assert got["/dev/mem"] == got["/dev/sda"] == "FileNotFoundError"
    assert got["/proc/kcore"] in (0, "FileNotFoundError")  # masked by the engine, or absent
