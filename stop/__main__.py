"""`python -m stop` is the `stop` command."""

from stop.cli import main

main()
