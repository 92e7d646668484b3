"""The names both ends of the harness protocol use: job kinds, frame kinds, service methods.

The harness imports this flat (``import protocol``, beside the codec); the host imports it as
``stop.container.protocol``. It holds names only, no logic, so both sides agree by construction.

A job is one JSON line on the harness's stdin. Frames go back one JSON line each, as
``{"n": nonce, "s": sequence number, "t": kind, ...}``; the host answers requests with
``{"id": request id, "ok": bool, "result" | "error": ...}`` lines on the same stdin.
"""

# Job kinds: what the host asks the harness to run.
SOLVE = "solve"  # call a solution's entry function once per argument list, each under a deadline
IMPROVE = "improve"  # call an improver's entry function once, with its utility and model stubs
JOB_KINDS = (SOLVE, IMPROVE)

# Frame kinds, harness -> host.
HELLO = "hello"  # the harness is up and has the job
OUT = "out"  # candidate stdout, kept (data) and counted (bytes)
OUT_COUNTED = "outn"  # candidate stdout past the output limit: counted only
FINDING = "finding"  # a tripwire fired (rule, attempted, line, layer, detail)
RESULT = "result"  # one call of a solve job (i, status, value, error, elapsed_s)
REQUEST = "req"  # a service request (id, method, params, line)
DONE = "done"  # the closing frame (stdout_bytes; for an improve job returned/error)
FRAME_KINDS = (HELLO, OUT, OUT_COUNTED, FINDING, RESULT, REQUEST, DONE)

# Service methods an improver's stubs call on the host.
UTILITY = "utility"
BATCH_PROMPT = "language_model.batch_prompt"
METHODS = (UTILITY, BATCH_PROMPT)

# On the container's stderr, just before the closing frame: this, 16 hex digits of the sha256 of
# the nonce, and a NUL. Once the host has read it, all the stderr written before the closing frame
# has arrived (one pipe keeps its order), so it stops waiting; the mark itself is not kept.
STDERR_END = b"\x00stop:stderr-end:"

# The harness's command-line option for the width of the libraries' thread pools (threads.py).
THREADS_ARG = "--threads"

# Status of one call of a solve job.
CALL_STATUSES = ("ok", "error", "timeout")
