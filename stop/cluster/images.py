"""Every `docker` node gets the sandbox image before it takes work, checked by hash.

The image a run needs is the driver's: `stop-sandbox:<hash of sandbox/>`. Each node is asked,
by a task pinned to it, which sandbox tag its own stop computes (a different one means another
stop version there) and which image id, if any, its engine has under that tag. Where the driver
has a Docker engine, its image id (the sha256 of the image's config, which covers every layer)
is the reference: a node without the image is sent the driver's `docker save` archive and loads
it, and the loaded id must equal the driver's; a node whose image under that tag has another id
is refused. Where the driver has no engine, a node must already have the tag (built there with
`stop sandbox build`), and the tag, a hash of the same sandbox/ files, is the check.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Any

from stop.cluster.connect import DOCKER, ClusterError, connect, docker_nodes
from stop.cluster.node import load_image, node_info
from stop.sandbox.image import ImageError, ensure_image, image_tag


@dataclass
class ImageRef:
    tag: str
    id: str | None  # the driver's image id; None when the driver has no Docker engine


@dataclass
class NodeReport:
    node: str
    host: str
    ip: str
    slots: float
    info: dict[str, Any] = field(default_factory=dict)
    status: str = ""  # ok, shipped, or why not

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "host": self.host, "ip": self.ip, "docker_slots": self.slots,
                "docker": self.info.get("docker"), "ray": self.info.get("ray"),
                "python": self.info.get("python"), "image_id": self.info.get("image_id"),
                "status": self.status}


def driver_image(build: bool = True) -> ImageRef:
    """The tag the driver's sandbox/ files hash to, and its image id when the driver has it
    (built here first where the driver has an engine and `build` is set)."""
    tag = image_tag()
    try:
        if build:
            ensure_image()
        r = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", tag],
                           capture_output=True, text=True, timeout=60)
    except (ImageError, OSError, subprocess.TimeoutExpired):
        return ImageRef(tag, None)
    return ImageRef(tag, r.stdout.strip() or None if r.returncode == 0 else None)


def _pinned(ray: Any, fn: Any, node_id: str) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return ray.remote(fn).options(
        num_cpus=0, max_retries=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))


def survey(ray: Any, ref: ImageRef, timeout: float = 300) -> list[NodeReport]:
    """Ask every docker node what it has; raise ClusterError when there is no docker node."""
    nodes = docker_nodes(ray)
    if not nodes:
        raise ClusterError("the Ray cluster has no node with a `docker` resource: start the "
                           "workers with `ray start --address HEAD:PORT --resources "
                           "'{\"docker\": N}'` on machines with a Docker engine")
    reports = [NodeReport(n["NodeID"], n.get("NodeManagerHostname", "?"),
                          n.get("NodeManagerAddress", "?"), n["Resources"].get(DOCKER, 0))
               for n in nodes]
    refs = [_pinned(ray, node_info, r.node).remote(ref.tag) for r in reports]
    for r, obj in zip(reports, refs, strict=True):
        try:
            r.info = ray.get(obj, timeout=timeout)
        except Exception as e:
            r.info = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
    return reports


def check(reports: list[NodeReport], ref: ImageRef) -> list[NodeReport]:
    """Set each report's status; return the nodes that need the driver's image shipped."""
    import ray

    need = []
    for r in reports:
        i = r.info
        where = f"node {r.ip} ({r.node[:8]})"
        if i.get("error"):
            r.status = f"{where}: {i['error']}"
        elif i.get("ray") != ray.__version__ or i.get("python", "").split(".")[:2] != \
                _python_minor():
            r.status = (f"{where} runs Ray {i.get('ray')} on Python {i.get('python')}, the driver "
                        f"Ray {ray.__version__} on Python {'.'.join(_python_minor())}: install "
                        "the same versions on every node")
        elif i.get("sandbox_tag") != ref.tag:
            r.status = (f"{where} has stop's sandbox {i.get('sandbox_tag')}, the driver "
                        f"{ref.tag}: install the same stop version on every node")
        elif i.get("image_id") is None:
            if ref.id is None:
                r.status = (f"{where} has no image {ref.tag} and the driver has none to send: "
                            "run `stop sandbox build` there or here")
            else:
                r.status = "missing"
                need.append(r)
        elif ref.id is not None and i["image_id"] != ref.id:
            r.status = (f"{where}: image {ref.tag} is {i['image_id'][:19]}, not the driver's "
                        f"{ref.id[:19]} (built there or altered): remove it on that node "
                        f"(docker rmi {ref.tag}) and stop sends the driver's")
        else:
            r.status = "ok"
    return need


def _python_minor() -> list[str]:
    import platform

    return platform.python_version().split(".")[:2]


def save_archive(tag: str) -> bytes:
    r = subprocess.run(["docker", "save", tag], capture_output=True, timeout=900)
    if r.returncode != 0:
        raise ClusterError(f"docker save {tag} failed: {r.stderr.decode(errors='replace')[:200]}")
    return r.stdout


def ship(ray: Any, ref: ImageRef, reports: list[NodeReport]) -> None:
    """Load the driver's image on each node in `reports`; the loaded id must be the driver's."""
    if not reports:
        return
    archive = ray.put(save_archive(ref.tag))
    refs = [_pinned(ray, load_image, r.node).remote(archive, ref.tag) for r in reports]
    for r, obj in zip(reports, refs, strict=True):
        try:
            loaded = ray.get(obj, timeout=1800)
        except Exception as e:
            r.status = f"node {r.ip} ({r.node[:8]}): loading the image failed: {type(e).__name__}"
            continue
        r.info["image_id"] = loaded
        r.status = "shipped" if loaded == ref.id else (
            f"node {r.ip} ({r.node[:8]}): the loaded image is {str(loaded)[:19]}, not the "
            f"driver's {str(ref.id)[:19]}")


def prepare(ray: Any, ref: ImageRef) -> list[NodeReport]:
    """Survey, ship where needed, and raise one ClusterError line naming the first bad node."""
    reports = survey(ray, ref)
    ship(ray, ref, check(reports, ref))
    bad = [r for r in reports if r.status not in ("ok", "shipped")]
    if bad:
        more = f" (and {len(bad) - 1} more node(s))" if len(bad) > 1 else ""
        raise ClusterError(bad[0].status + more)
    return reports


def inspect(address: str) -> tuple[ImageRef, list[NodeReport]]:
    """`stop doctor --ray-address`: every docker node, its slots, engine and image; nothing is
    shipped or changed (a node missing the image is `missing`: a run would send it)."""
    session = connect(address)
    try:
        ref = driver_image(build=False)
        reports = survey(session.ray, ref)
        check(reports, ref)
        return ref, reports
    finally:
        session.close()
