"""`stop ui`: run histories, rounds, audit findings and experiments in a browser, read-only.

Threat model: every string a candidate or a model wrote (sources, outputs, replies, error
messages, findings) is hostile, and so is anything derived from it. The view never executes
it and never lets the browser do so: templates autoescape every value (attributes included)
after its control characters are made visible (`stop.cli.safe.visible`, the one place that
does it for every output path); syntax colouring escapes token by token; figures are SVG
built from numbers; the Content-Security-Policy allows scripts from the server's own
/static/ui.js only, so an injected inline script or event handler would not run even if
escaping failed. The server binds to loopback by default and answers only requests that
carry its random token (in the printed URL once, then in an HttpOnly SameSite=Strict cookie).
It answers GET and HEAD only and writes nothing into the runs folder; its only file is a
cache of run summaries under the cache dir, which can be deleted at any time.
"""

# The CLI's `visible` lives in stop.cli.safe, and importing stop.cli registers `stop ui`,
# which imports this package's server. Loading stop.cli first, whatever module of stop.ui is
# imported first, keeps that chain from meeting a half-initialised stop.ui module.
import stop.cli.safe  # noqa: F401
