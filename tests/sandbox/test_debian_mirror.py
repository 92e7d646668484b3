"""The Debian mirror debootstrap uses: read from the machine's apt sources, on sample files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stop.sandbox.debian_mirror import ENV, FALLBACK, debian_mirror, source_files

ROOT = Path(__file__).resolve().parents[2]


def _apt(tmp_path: Path, files: dict[str, str]) -> Path:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (apt / name).write_text(text)
    return apt


def test_a_deb822_file_skips_security_disabled_and_source_only_stanzas(tmp_path):
    apt = _apt(tmp_path, {"sources.list.d/debian.sources": (
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Types: deb\n# a comment inside the stanza\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\n\n"
        "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs:\n http://mirror.example/debian/\n http://second.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n")})
    assert debian_mirror(apt, env={}) == ("http://mirror.example/debian",
                                          str(apt / "sources.list.d/debian.sources"))


def test_one_line_entries_with_options_and_other_vendors_repositories(tmp_path):
    apt = _apt(tmp_path, {
        "sources.list": ("# deb http://commented.example/debian bookworm main\n"
                         "deb-src http://src.example/debian bookworm main\n"
                         "deb [arch=amd64 signed-by=/k.gpg] https://packages.cloud.google.com/apt"
                         " cloud-sdk-bookworm main\n"
                         "deb http://archive.ubuntu.com/ubuntu noble main\n"
                         "deb [ arch=amd64 ] http://other.example/debian/ trixie main  # ours\n"),
        "sources.list.d/docker.list": "deb https://download.docker.com/linux/debian bookworm stable\n",
    })
    assert debian_mirror(apt, env={})[0] == "http://other.example/debian"


def test_files_are_read_in_apts_order_and_other_suffixes_are_ignored(tmp_path):
    apt = _apt(tmp_path, {
        "sources.list.d/b.sources": "Types: deb\nURIs: http://b.example/debian\nSuites: stable\n",
        "sources.list.d/a.list": "deb http://a.example/debian sid main\n",
        "sources.list.d/0.list.disabled": "deb http://disabled.example/debian sid main\n",
    })
    assert [p.name for p in source_files(apt)] == ["a.list", "b.sources"]
    assert debian_mirror(apt, env={})[0] == "http://a.example/debian"


def test_the_setting_wins_and_the_fallback_says_why(tmp_path):
    apt = _apt(tmp_path, {"sources.list": "deb http://files.example/debian bookworm main\n"})
    assert debian_mirror(apt, env={ENV: " http://set.example/debian/ "}) == (
        "http://set.example/debian", ENV)
    empty = _apt(tmp_path / "empty", {"sources.list.d/cdrom.list": "deb cdrom:[x]/ bookworm main\n"})
    mirror, why = debian_mirror(empty, env={ENV: ""})
    assert mirror == FALLBACK and why.startswith("fallback: no Debian mirror") and ENV in why
    assert debian_mirror(tmp_path / "no-such-dir", env={})[0] == FALLBACK


def test_the_file_runs_by_itself_as_the_fresh_machine_script_runs_it():
    # No stop on the path, no venv: only the interpreter and the file.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), ENV: "http://set.example/debian"}
    out = subprocess.run([sys.executable, "-I", str(ROOT / "stop/sandbox/debian_mirror.py")],
                         env=env, capture_output=True, text=True, timeout=30, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "http://set.example/debian\n" and ENV in out.stderr
