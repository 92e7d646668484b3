"""The files that run inside the sandbox container.

On the host this folder is the package `stop.container` (pyproject.toml maps it), imported only
for `codec` and `protocol`, which both sides share. Inside the container the files are flat
modules under /opt/stop and the harness imports them by name. Nothing here imports `stop`.
"""
