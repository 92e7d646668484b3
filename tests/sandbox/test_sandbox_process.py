"""The process backend: same harness and protocol, rlimits and a group kill; loudly no boundary."""

from __future__ import annotations

import pytest

from stop.sandbox import ImproveJob, SandboxUnavailable, SolveJob, open_sandbox
from stop.sandbox.records import ExecLimits


def test_solves_and_warns_every_time(process_sandbox, capfd):
    job = SolveJob("def algorithm(x):\n    print('hi')\n    return (x, x)\n", [[1], [2]],
                   per_call_s=2.0)
    for _ in range(2):
        r = process_sandbox.execute(job, limits=ExecLimits(), role="solution")
        assert r.status == "ok" and r.backend == "process" and r.exit_code == 0
        assert [c["value"] for c in r.value] == [(1, 1), (2, 2)] and r.stdout == "hi\nhi\n"
    assert capfd.readouterr().err.count("NOT a security boundary") == 2


def test_deadline_kills_the_process_group(process_sandbox):
    src = ("import signal, os\n"
           "def algorithm():\n"
           "    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
           "    os.fork()\n"
           "    while True:\n        pass\n")
    job = SolveJob(src, [[]], per_call_s=0.2)
    r = process_sandbox.execute(job, limits=ExecLimits(wall_s=1.5), role="solution")
    assert r.status == "timeout" and r.signal == "SIGKILL" and r.wall_s < 5
    assert {"resource-timeout", "process-spawn", "signal-tamper"} <= {f.rule for f in r.findings}


def test_improver_services_work_the_same(process_sandbox):
    src = ("def improve_algorithm(s, utility, language_model):\n"
           "    return str(utility(s)) + language_model.prompt('e', 'm', n_responses=2)[1]\n")
    job = ImproveJob(source=src, initial_solution="x", description="", utility_budget=1,
                     lm_budget=1, max_responses_per_call=6)

    def handler(method, params):
        return 0.25 if method == "utility" else ["a", "b"]

    r = process_sandbox.execute(job, limits=ExecLimits(), role="improver", services=handler)
    assert r.value == {"returned": "0.25b"}


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(SandboxUnavailable, match="unknown sandbox backend"):
        open_sandbox("vm")


def test_no_silent_fallback_when_docker_is_unreachable(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(SandboxUnavailable, match="Docker engine not reachable.*--sandbox process"):
        open_sandbox("docker")
