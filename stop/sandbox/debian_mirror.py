"""The Debian mirror this machine's apt uses, for debootstrap: so a build works wherever apt works.

Read from /etc/apt/sources.list and /etc/apt/sources.list.d/ (`*.list` one-line entries and
`*.sources` deb822 stanzas), in apt's order. The first enabled `deb` entry over http(s) for a
Debian suite (bookworm, bookworm-updates, stable...; not a -security suite, not another
distribution's or vendor's repository) names the mirror. `STOP_DEBIAN_MIRROR` overrides the
files; with neither, the fallback is deb.debian.org.

Only the standard library, so scripts/fresh-machine.sh can run this file by itself:
`python3 -I stop/sandbox/debian_mirror.py` prints the mirror (and where it came from on stderr).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

ENV = "STOP_DEBIAN_MIRROR"
FALLBACK = "http://deb.debian.org/debian"
APT_DIR = Path("/etc/apt")
DEBIAN_SUITES = {"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
                 "oldoldstable", "oldstable", "stable", "testing", "unstable", "experimental"}
_ONE_LINE = re.compile(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)")


def source_files(apt_dir: Path = APT_DIR) -> list[Path]:
    """sources.list, then sources.list.d/*.list and *.sources in name order (as apt reads them)."""
    parts = apt_dir / "sources.list.d"
    listed = sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources")) \
        if parts.is_dir() else []
    return [p for p in [apt_dir / "sources.list", *listed] if p.is_file()]


def entries(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(URI, suites) of each enabled binary-package entry of one apt sources file."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    if path.suffix == ".sources":
        yield from _deb822(text)
        return
    for line in text.splitlines():
        m = _ONE_LINE.match(line.split("#", 1)[0].strip())
        if m:
            yield m.group(1), [m.group(2)]


def _deb822(text: str) -> Iterator[tuple[str, list[str]]]:
    for stanza in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t" and key:  # a continuation line
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").strip().lower() in ("no", "false", "0"):
            continue
        suites = fields.get("suites", "").split()
        for uri in fields.get("uris", "").split():
            yield uri, suites


def is_debian_archive(uri: str, suites: list[str]) -> bool:
    """A Debian package archive over http(s), not the security archive."""
    if not uri.startswith(("http://", "https://")) or "debian-security" in uri:
        return False
    return any(s.split("-", 1)[0] in DEBIAN_SUITES and not s.endswith("-security")
               for s in suites)


def debian_mirror(apt_dir: Path = APT_DIR, env: Mapping[str, str] | None = None
                  ) -> tuple[str, str]:
    """(mirror URI without a trailing slash, where it came from)."""
    env = os.environ if env is None else env
    if env.get(ENV, "").strip():
        return env[ENV].strip().rstrip("/"), ENV
    for path in source_files(apt_dir):
        for uri, suites in entries(path):
            if is_debian_archive(uri, suites):
                return uri.rstrip("/"), str(path)
    return FALLBACK, f"fallback: no Debian mirror in {apt_dir} (set {ENV} to choose one)"


if __name__ == "__main__":
    mirror, origin = debian_mirror()
    print(f"debian mirror {mirror} ({origin})", file=sys.stderr)
    print(mirror)
