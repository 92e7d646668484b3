"""Typed jobs, their wire form (byte for byte what the harness always read), and host services."""

from __future__ import annotations

import pytest
from stop.container import protocol

from stop.sandbox import Allowance, ImproveJob, ServiceError, Services, SolveJob
from stop.sandbox.execution import Execution
from stop.sandbox.records import ExecLimits

NONCE = "N" * 32
# The job lines the harness read before jobs were typed (dicts built by hand), byte for byte.
SOLVE_LINE = (b'{"kind":"solve","source":"def algorithm(a, b):\\n    return a\\n","entry":"algorithm",'
              b'"calls":[[1,{"__tuple__":[2,"x"]}],[null,0.5]],"per_call_s":2.0,%s'
              b'"nonce":"' + NONCE.encode() + b'","output_bytes":262144}\n')
IMPROVE_LINE = (b'{"kind":"improve","source":"def improve_algorithm(s, u, lm):\\n    return s\\n",'
                b'"entry":"improve_algorithm","initial_solution":"def algorithm():\\n    return 0\\n",'
                b'"utility":{"description":"LPN","budget":25,"use_sandbox_param":true},'
                b'"language_model":{"budget":4,"max_responses_per_call":6},'
                b'"nonce":"' + NONCE.encode() + b'","output_bytes":262144}\n')
SOLVE = SolveJob("def algorithm(a, b):\n    return a\n", [[1, (2, "x")], [None, 0.5]],
                 per_call_s=2.0)
IMPROVE = ImproveJob(source="def improve_algorithm(s, u, lm):\n    return s\n",
                     initial_solution="def algorithm():\n    return 0\n", description="LPN",
                     utility_budget=25, use_sandbox_param=True, lm_budget=4,
                     max_responses_per_call=6)


def _line(job, role, **kw) -> bytes:
    ex = Execution(job, limits=ExecLimits(), role=role, services=None, backend="test",
                   send=lambda data: None, **kw)
    return ex.job_line.replace(ex.nonce.encode(), NONCE.encode())


def test_job_lines_are_byte_identical_to_the_hand_built_ones():
    assert _line(SOLVE, "solution") == SOLVE_LINE % b""
    assert _line(SOLVE, "solution", isolation="process") == SOLVE_LINE % b'"isolation":"process",'
    assert _line(IMPROVE, "improver") == IMPROVE_LINE
    assert (SOLVE.kind, IMPROVE.kind) == (protocol.SOLVE, protocol.IMPROVE)


def test_a_job_that_is_not_a_job_is_refused():
    with pytest.raises(ValueError, match="SolveJob or an ImproveJob, not dict"):
        _line({"kind": "solve", "source": "x"}, "solution")
    with pytest.raises(ValueError, match="role must be one of"):
        _line(SOLVE, "host")
    with pytest.raises(TypeError):
        ImproveJob(source="x", initial_solution="", description="")  # budgets are required


class Probe(Services):
    def __init__(self) -> None:
        super().__init__()
        self.calls = Allowance("utility", 2)

    def utility(self, params: dict) -> float:
        with self.lock:
            self.calls.take()
        return 0.5


def test_services_dispatch_by_method_name_and_refuse_the_rest():
    p = Probe()
    assert p(protocol.UTILITY, {"solution": "s"}) == 0.5
    assert p(protocol.UTILITY, {"solution": "s"}) == 0.5
    with pytest.raises(ServiceError, match="utility budget exhausted: 2 of 2 calls used"):
        p(protocol.UTILITY, {"solution": "s"})
    assert (p.calls.used, p.calls.refused) == (2, 1)
    with pytest.raises(ServiceError, match="no language_model.batch_prompt service"):
        p(protocol.BATCH_PROMPT, {"messages": ["m"]})
    with pytest.raises(ServiceError, match="unknown service 'os.system'"):
        p("os.system", {})
    assert set(p.handlers) == set(protocol.METHODS)
