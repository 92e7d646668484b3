"""RaySandbox on a real local cluster (a head and two `docker` workers on 127.0.0.1, the real
Docker engine): the same results as the local sandbox, budgets held through the relayed
bridge, hostile frames handled as locally, deadlines, stuck tasks and a node lost mid-task."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cluster_helpers import containers, inet_sockets, outside_loopback

from stop.cluster.connect import connect
from stop.cluster.executor import RaySandbox
from stop.core.improver import ImproverServices
from stop.models import ScriptedModel
from stop.models.gateway import Gateway, LanguageModel
from stop.runs.recorders import NullRecorder
from stop.sandbox import ImproveJob, Services, SolveJob
from stop.sandbox.canaries import load_canaries, run_canary
from stop.sandbox.docker import DockerSandbox
from stop.sandbox.records import ExecLimits

pytestmark = [pytest.mark.ray, pytest.mark.docker]

FAKE_KEY = "sk-test-" + "7" * 24


class ListRecorder:
    """What the driver records, kept in memory: the ExecRecorder a sandbox reports to."""

    def __init__(self, run_id: str) -> None:
        self.run_id, self.context = run_id, {"round": 1}
        self.events: list[dict] = []
        self.findings: list = []

    def record(self, type: str, **fields) -> None:
        self.events.append({"type": type, **fields})

    def finding(self, finding) -> None:
        self.findings.append(finding)


@pytest.fixture(scope="module")
def rsb(request):
    # A provider key in the driver's environment while the nodes start: it must reach none.
    os.environ["OPENAI_API_KEY"] = FAKE_KEY
    c = request.getfixturevalue("cluster")
    sb = RaySandbox(connect(c.address))
    yield sb
    sb.close()
    os.environ.pop("OPENAI_API_KEY", None)


@pytest.fixture(scope="module")
def local():
    sb = DockerSandbox()
    yield sb
    sb.close()


SUM = "def algorithm(a, b):\n    return a + b\n"


def test_a_solution_scores_as_it_does_locally(rsb, local):
    job = SolveJob(source=SUM, calls=[[1, 2], [3.5, 4], [[1], [2]]])
    there = rsb.execute(job, limits=ExecLimits(wall_s=20), role="solution")
    here = local.execute(job, limits=ExecLimits(wall_s=20), role="solution")
    assert there.status == here.status == "ok"
    assert [c["value"] for c in there.value] == [c["value"] for c in here.value] == [3, 7.5, [1, 2]]
    assert there.backend == "docker" and there.candidate_hash == here.candidate_hash


def test_sockets_stay_on_loopback_with_token_auth_no_dashboard_and_no_key_on_nodes(rsb, cluster):
    import ray

    rsb.execute(SolveJob(source=SUM, calls=[[1, 1]]), limits=ExecLimits(wall_s=20),
                role="solution")
    socks = inet_sockets()
    listening = [s for s in socks if s[1].startswith("tcp") and s[3].endswith(":0")]
    assert len(listening) >= 6, socks  # gcs, raylets, object managers, workers: all found
    assert outside_loopback(socks) == []
    assert not [s for s in listening if s[2].endswith(":8265")]  # no dashboard
    assert os.environ["RAY_AUTH_MODE"] == "token" and len(os.environ["RAY_AUTH_TOKEN"]) >= 32

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    def environment() -> list[str]:
        return sorted(os.environ)

    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 3  # the head and both workers
    names = ray.get([ray.remote(environment).options(
        num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote()
        for n in nodes])
    assert all("OPENAI_API_KEY" not in n and "RAY_AUTH_TOKEN" in n for n in names)
    peek = "import os\ndef algorithm():\n    return sorted(os.environ)\n"
    r = rsb.execute(SolveJob(source=peek, calls=[[]]), limits=ExecLimits(wall_s=20),
                    role="solution")
    assert r.status == "ok" and "OPENAI_API_KEY" not in r.value[0]["value"]
    assert os.environ["OPENAI_API_KEY"] == FAKE_KEY  # the driver keeps its own


def _connects(address: str, token: str) -> bool:
    env = {**os.environ, "RAY_AUTH_TOKEN": token, "RAY_gcs_rpc_server_connect_timeout_s": "5"}
    code = (f"import ray\ntry:\n    ray.init(address={address!r})\n    print('CONNECTED')\n"
            "except Exception as e:\n    print('REFUSED', type(e).__name__)\n")
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=90).stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    return "CONNECTED" in out


def test_a_driver_needs_the_cluster_token(cluster):
    assert _connects(cluster.address, os.environ["RAY_AUTH_TOKEN"])
    assert not _connects(cluster.address, secrets.token_hex(32))


RACER = '''
import threading

def improve_algorithm(initial_solution, utility, language_model):
    got = []
    def use():
        try:
            got.append(("u", utility(initial_solution)))
        except Exception as e:
            got.append(("u!", str(e)))
    def ask():
        try:
            got.append(("lm", len(language_model.batch_prompt("x", ["write it"]))))
        except Exception as e:
            got.append(("lm!", str(e).split(":")[0]))
    # 15 in all: under the bridge's 16 requests in flight, so no refusal depends on timing
    threads = [threading.Thread(target=use) for _ in range(10)]
    threads += [threading.Thread(target=ask) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return repr(sorted(got))
'''


def _race(sandbox) -> tuple[object, ImproverServices, LanguageModel]:
    model = ScriptedModel([{"match": None, "texts": ["a reply"]}])
    lm = LanguageModel(Gateway(model, recorder=NullRecorder()), budget=2,
                       max_responses_per_call=1, scope="race/lm")
    calls = []

    def utility(source: str) -> float:
        calls.append(source)
        time.sleep(0.2)
        return 0.25

    services = ImproverServices(lm, utility, utility_budget=3)
    job = ImproveJob(source=RACER, initial_solution=SUM, description="d", utility_budget=3,
                     lm_budget=2, max_responses_per_call=1)
    r = sandbox.execute(job, limits=ExecLimits(wall_s=60), role="improver", services=services)
    assert r.status == "ok", r.stderr
    assert len(calls) == services.utility_calls.used
    return r.value["returned"], services, lm


def test_the_relayed_bridge_keeps_every_budget_like_the_local_one(rsb, local):
    there, s_there, lm_there = _race(rsb)
    here, s_here, lm_here = _race(local)
    assert s_there.utility_calls.used == 3 and s_there.utility_calls.refused == 7
    assert lm_there.calls_used == 2
    assert there == here  # the same answers and refusals, word for word
    assert there.count("('u', 0.25)") == 3 and there.count("('lm', 1)") == 2


@pytest.mark.parametrize("row", [17, 18, 21, 25, 28])
def test_hostile_candidates_fare_as_locally(rsb, local, row):
    (canary,) = [c for c in load_canaries() if c.row == row]
    there, here = run_canary(rsb, canary), run_canary(local, canary)
    assert there.passed, there.problems
    assert (there.status, there.rules) == (here.status, here.rules)


def test_an_oversized_result_frame_fares_as_locally(rsb, local):
    (canary,) = [c for c in load_canaries() if c.row == 33]
    job = SolveJob(source=canary.source, calls=[[[[0]], [0], [[0]]]])
    there = rsb.execute(job, limits=ExecLimits(wall_s=120), role="solution")
    here = local.execute(job, limits=ExecLimits(wall_s=120), role="solution")
    assert (there.status, there.value) == (here.status, here.value)
    assert there.status == "ok" and there.value[0]["status"] == "error"
    assert sorted(f.rule for f in there.findings) == sorted(f.rule for f in here.findings)
    assert "resource-result" in {f.rule for f in there.findings}


def test_a_candidate_past_its_deadline_is_killed_and_its_container_removed(rsb):
    rec = ListRecorder("deadline-" + secrets.token_hex(4))
    loop = "def algorithm():\n    while True:\n        pass\n"
    r = rsb.execute(SolveJob(source=loop, calls=[[]]), limits=ExecLimits(wall_s=3),
                    role="solution", recorder=rec)
    assert r.status == "timeout" and r.limit_fired == "wall_s" and 3 <= r.wall_s < 30
    assert [e["status"] for e in rec.events if e["type"] == "sandbox_exec"] == ["timeout"]
    assert any(f.rule == "resource-timeout" and f.run_id == rec.run_id for f in rec.findings)
    deadline = time.monotonic() + 20
    while containers(**{"stop.run": rec.run_id}) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert containers(**{"stop.run": rec.run_id}) == []


def _owner_pid(run_id: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = containers(**{"stop.run": run_id})
        if ids:
            owner = subprocess.run(["docker", "inspect", "--format",
                                    '{{index .Config.Labels "stop.owner"}}', ids[0]],
                                   capture_output=True, text=True).stdout.strip()
            return int(owner.rpartition(":")[2])
        time.sleep(0.2)
    raise AssertionError(f"no container of {run_id} appeared")


def _in_thread(fn):
    out: dict = {}

    def go():
        try:
            out["result"] = fn()
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, out


def test_a_stuck_task_is_cancelled_and_its_container_removed(cluster):
    sb = RaySandbox(connect(cluster.address), grace_s=3)
    try:
        rec = ListRecorder("stuck-" + secrets.token_hex(4))
        nap = "import time\ndef algorithm():\n    time.sleep(120)\n"
        t, out = _in_thread(lambda: sb.execute(SolveJob(source=nap, calls=[[]]),
                                               limits=ExecLimits(wall_s=4), role="solution",
                                               recorder=rec))
        worker = _owner_pid(rec.run_id)
        os.kill(worker, signal.SIGSTOP)  # the worker hangs: it can no longer kill the container
        t.join(timeout=120)
        r = out["result"]
        assert r.status == "timeout" and r.limit_fired == "wall_s"
        assert any("cancelled" in f.attempted for f in r.findings)
        deadline = time.monotonic() + 30
        while (Path(f"/proc/{worker}").exists() or containers(**{"stop.run": rec.run_id})) \
                and time.monotonic() < deadline:
            time.sleep(0.5)
        assert containers(**{"stop.run": rec.run_id}) == []
        stat = Path(f"/proc/{worker}/stat")
        assert not stat.exists() or stat.read_text().split(") ")[1][0] == "Z"
    finally:
        sb.close()


SLOW_IMPROVER = '''
import time

def improve_algorithm(initial_solution, utility, language_model):
    a = utility(initial_solution)
    b = utility(initial_solution + "\\n# again\\n")
    time.sleep(12)
    return initial_solution + f"\\n# scored {a} and {b}\\n"
'''


class Counting(Services):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def utility(self, params: dict) -> float:
        with self.lock:
            self.calls.append(params["solution"])
        return 0.5


def test_a_task_on_a_removed_node_runs_again_elsewhere_without_a_second_record(rsb, cluster):
    rec = ListRecorder("lost-" + secrets.token_hex(4))
    services = Counting()
    job = ImproveJob(source=SLOW_IMPROVER, initial_solution=SUM, description="d",
                     utility_budget=5, lm_budget=1, max_responses_per_call=1)
    t, out = _in_thread(lambda: rsb.execute(job, limits=ExecLimits(wall_s=120),
                                            role="improver", services=services, recorder=rec))
    worker = _owner_pid(rec.run_id)
    deadline = time.monotonic() + 60
    while len(services.calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(services.calls) == 2
    node = next(n for n in cluster.workers
                if Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[1]
                == str(n.all_processes["raylet"][0].process.pid))
    cluster.remove_worker(node)
    try:
        t.join(timeout=240)
        r = out["result"]
        assert r.status == "ok", r.stderr
        assert r.value["returned"].endswith("# scored 0.5 and 0.5\n")
        assert len(services.calls) == 2  # the retry's calls were answered from the journal
        assert [e["type"] for e in rec.events].count("sandbox_exec") == 1
        deadline = time.monotonic() + 30
        while containers(**{"stop.run": rec.run_id}) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert containers(**{"stop.run": rec.run_id}) == []  # both attempts' containers
    finally:
        cluster.add_worker()  # the next tests get two workers again


def test_a_node_whose_image_is_not_the_drivers_is_refused_with_one_line(rsb):
    from stop.cluster.connect import ClusterError
    from stop.cluster.images import ImageRef, check, prepare, survey

    other = ImageRef(rsb.image.tag, "sha256:" + "0" * 64)  # what the nodes have is not this
    reports = survey(rsb.ray, other)
    assert check(reports, other) == [] and len(reports) == 2
    assert all("not the driver's sha256:000000000000" in r.status for r in reports)
    with pytest.raises(ClusterError) as e:
        prepare(rsb.ray, other)
    assert "\n" not in str(e.value) and "(and 1 more node(s))" in str(e.value)


def test_an_image_archive_is_shipped_to_the_nodes_and_checked_by_id(rsb, tmp_path):
    from stop.cluster.connect import docker_nodes
    from stop.cluster.images import ImageRef, NodeReport, ship

    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "hello").write_text("a tiny image\n")
    tag = f"stop-ship-test:{secrets.token_hex(4)}"
    tar = subprocess.run(["tar", "-C", str(tmp_path / "root"), "-c", "."], capture_output=True,
                         check=True).stdout
    subprocess.run(["docker", "import", "-", tag], input=tar, capture_output=True, check=True)
    try:
        image_id = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", tag],
                                  capture_output=True, text=True, check=True).stdout.strip()
        reports = [NodeReport(n["NodeID"], "", n["NodeManagerAddress"], 1)
                   for n in docker_nodes(rsb.ray)]
        ship(rsb.ray, ImageRef(tag, image_id), reports)
        assert [r.status for r in reports] == ["shipped", "shipped"]
        assert {r.info["image_id"] for r in reports} == {image_id}
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
