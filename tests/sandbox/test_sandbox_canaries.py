"""The adversarial suite of SANDBOX.md, one real hostile candidate per case, on the real engine."""

from __future__ import annotations

import pytest

from stop.sandbox.canaries import load_canaries, run_canary

CANARIES = load_canaries()


def test_suite_covers_every_row_of_the_threat_table():
    rows = {c.row for c in CANARIES}
    assert set(range(1, 25)) <= rows
    for c in CANARIES:
        assert c.expect_status and c.expect_rules, c.name
        assert c.role in ("solution", "improver")


@pytest.mark.docker
@pytest.mark.parametrize("canary", CANARIES, ids=[c.name for c in CANARIES])
def test_canary(sandbox, canary):
    out = run_canary(sandbox, canary)
    assert out.status in canary.expect_status, out.problems
    for rule in canary.expect_rules:
        assert rule in out.rules, out.problems
    assert not out.score, f"a canary scored {out.score}"
    assert out.passed, out.problems
    for f in out.findings:
        assert f.candidate_hash and f.severity and f.action in ("blocked", "contained", "logged")


@pytest.mark.docker
def test_pooled_containers_meet_every_outcome_the_same_way():
    """oom, deadline kill, early exit and a forged channel, each on a pre-started container."""
    from stop.sandbox.docker import DockerSandbox

    pooled = DockerSandbox(pool_size=2)
    try:
        for canary in load_canaries(["3", "4", "20", "25"]):
            out = run_canary(pooled, canary)
            assert out.passed, (canary.name, out.problems)
    finally:
        pooled.close()
