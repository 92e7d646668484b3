"""The image recipe: content-addressed tags and the Debian mirror the base is bootstrapped from."""

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


def test_mirror_comes_from_apt_sources(tmp_path):
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n\n"
                      "Types: deb\nURIs: http://mirror.example/debian-security\n")
    assert image.debian_mirror((deb822,)) == "http://mirror.example/debian"
    classic = tmp_path / "sources.list"
    classic.write_text("# comment\ndeb [arch=amd64] http://other.example/debian bookworm main\n")
    assert image.debian_mirror((tmp_path / "missing", classic)) == "http://other.example/debian"
    assert image.debian_mirror((tmp_path / "missing",)) == image.DEFAULT_MIRROR


@pytest.mark.docker
def test_status_reports_the_built_image(sandbox):
    st = image.image_status()
    assert st.exists and st.tag == sandbox.image and st.base_exists
