"""The one exception family the CLI turns into a one-line message and exit code 1."""


class StopError(Exception):
    """A user-facing error. Its message is one line and names the fix where there is one."""

    exit_code = 1
