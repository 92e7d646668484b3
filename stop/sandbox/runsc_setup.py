"""`python -m stop.sandbox.runsc_setup register`: merge gVisor's runsc into the Docker engine's
daemon.json (scripts/setup.sh --only gvisor runs it; the merge is stop.sandbox.runtimes')."""

from __future__ import annotations

import argparse
import sys

from stop.sandbox.execution import SandboxUnavailable
from stop.sandbox.runtimes import DAEMON_JSON, register_runsc, registered


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stop.sandbox.runsc_setup",
                                 description="Register gVisor's runsc with the Docker engine.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    reg = sub.add_parser("register", help="merge runsc into the engine's daemon.json")
    reg.add_argument("--config", default=DAEMON_JSON)
    reg.add_argument("--runsc", default="/usr/bin/runsc")
    reg.add_argument("--check", action="store_true",
                     help="change nothing; exit 0 if runsc is registered as stop needs, else 1")
    args = ap.parse_args(argv)
    if args.check:
        ok = registered(args.config, args.runsc)
        print(f"{args.config}: runsc {'registered' if ok else 'not registered as stop needs'}")
        return 0 if ok else 1
    try:
        changed = register_runsc(args.config, args.runsc)
    except (SandboxUnavailable, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.config}: runsc {'registered' if changed else 'already registered'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
