"""The image recipe: content-addressed tags (the Debian mirror: test_debian_mirror.py)."""

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
