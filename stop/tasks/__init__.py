"""Tasks: folders of a seed solution, a description and a hidden scorer, scored on the host.

`loader` reads task folders and draws their instances, `scoring` runs a solution in the sandbox
and grades what it returned, `checks` holds the strict type and shape checks scorers use, and
`builtin` is the tasks/ folder shipped with stop. A task's own scorer imports `Instance` from
here and its checks from `stop.tasks.checks`.
"""

from stop.tasks.loader import Instance

__all__ = ["Instance"]
