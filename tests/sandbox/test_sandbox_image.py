"""The image recipe: content-addressed tags, the libraries inside (the Debian mirror:
test_debian_mirror.py)."""

from __future__ import annotations

import shutil

import pytest

from stop.sandbox import image


def test_tag_changes_with_any_file_of_sandbox_or_the_codec(tmp_path, monkeypatch):
    copy = tmp_path / "sandbox"
    shutil.copytree(image.sandbox_dir(), copy)
    monkeypatch.setattr(image, "sandbox_dir", lambda: copy)
    first = image.image_hash()
    assert set(image.context_files()) >= {"Dockerfile", "harness.py", "tripwires.py",
                                          "helpers.py", "codec.py"}
    assert image.image_hash() == first
    (copy / "helpers.py").write_text((copy / "helpers.py").read_text() + "\n# changed\n")
    assert image.image_hash() != first
    assert image.image_tag().startswith("stop-sandbox:")


@pytest.mark.docker
def test_status_reports_the_built_image(sandbox):
    st = image.image_status()
    assert st.exists and st.tag == sandbox.image and st.base_exists


@pytest.mark.docker
def test_the_image_has_scipy_and_scikit_learn_and_their_imports_are_not_the_candidates(sandbox):
    import textwrap

    from stop.sandbox import SolveJob
    from stop.sandbox.records import ExecLimits

    source = textwrap.dedent("""
        import numpy as np
        from scipy import linalg
        from sklearn.linear_model import LogisticRegression

        def algorithm(x, y):
            clf = LogisticRegression().fit(np.array(x), np.array(y))
            return [int(v) for v in clf.predict(np.array(x))], float(linalg.norm(np.eye(2)) ** 2)
        """)
    x, y = [[0, 0], [0, 1], [1, 0], [1, 1]] * 3, [0, 0, 1, 1] * 3
    r = sandbox.execute(SolveJob(source, [[x, y]], per_call_s=20),
                        limits=ExecLimits(wall_s=60), role="solution")
    assert r.status == "ok", r.stderr
    assert r.value[0]["status"] == "ok", r.value[0]
    labels, norm2 = r.value[0]["value"]
    assert list(labels) == y and norm2 == pytest.approx(2.0)
    # scikit-learn's own imports (multiprocessing, socket, subprocess, its _scorer module) are
    # the library's: no finding is charged to the candidate's import line.
    assert [f for f in r.findings if f.layer == "runtime"] == []
    # The candidate's own dangerous import and call still are, with scikit-learn loaded first:
    # the import by the static scan (at run time subprocess is already loaded, so importing it
    # again raises no event), the call at run time.
    r = sandbox.execute(SolveJob(textwrap.dedent("""
        import sklearn.linear_model
        import subprocess

        def algorithm():
            subprocess.run(["true"])
            return 1
        """), [[]], per_call_s=20), limits=ExecLimits(wall_s=60), role="solution")
    seen = {(f.rule, f.layer, f.line) for f in r.findings}
    assert {("process-spawn", "static", 3), ("process-spawn", "runtime", 6)} <= seen, seen
