"""Scale-out on Ray: sandboxed executions as Ray tasks on the nodes that run Docker.

The executor is a Sandbox backend (`stop.cluster.executor.RaySandbox`): each solution scoring
and each improver run is a Ray task on a node advertising a `docker` resource, which starts the
same hardened one-shot container a local run starts and returns the same ExecResult. The
driver keeps the model gateway, every budget counter, the response cache and the run's event
log; an improver's service requests are relayed back to it (stop.cluster.relay), and the driver
alone records. Candidate code runs only inside the containers, never in a Ray worker process.

Modules: connect (joining a cluster, loopback and token settings, secrets kept out), local (a
local instance or a local multi-node cluster), node (the worker side), relay (the relayed
bridge), images (the sandbox image on every node, checked by hash), executor (RaySandbox).
Ray itself is imported inside functions only. See docs/cluster.md.
"""
