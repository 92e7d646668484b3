"""What one sandbox container costs the machine in CPU, by what it runs.

Each variant is a whole container life with the sandbox's hardened flags and limits (create,
start, wait for exit, remove), one after another, and the CPU of all work on the machine is read
from /proc/stat around it (the engine's daemons, the shims and runc, the container, this client):

  /bin/true             the engine's floor: everything but the program itself
  python                the same with Python starting and exiting
  python + numpy        Python importing NumPy with OpenBLAS's default threads (one per core)
  python + numpy (1t)   the same with one OpenBLAS thread
  harness, N threads    the harness as the pool starts it (it reads its job, finds none, exits),
                        with the libraries' thread pools N wide; --threads 1 is what a container
                        of one CPU gets, the host's core count is what the libraries would pick

and, for comparison, the bare subprocess of bench_sandbox.py's baseline importing NumPy, and
(as root, with runc on PATH) `runc run` of /bin/true on the same image's files with no engine in
between: runc's default spec, read-only root, none of the engine's seccomp profile or cgroup
limits. Not a sandbox; it shows what of the floor is the engine (dockerd, containerd, the shim)
and what is runc. The variants run interleaved in --blocks slices so other work weighs on all
of them alike.

Usage: python benchmarks/bench_container_cpu.py [--n 20] [--blocks 3]
Writes benchmarks/results/container_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def runc_bundle(api, image: str) -> str:
    """An OCI bundle of the image's files for `runc run` (runc's default spec, /bin/true)."""
    import tarfile

    top = Path(tempfile.mkdtemp(prefix="stop-bench-runc-"))
    bundle, rootfs, tar_path = top / "bundle", top / "bundle" / "rootfs", top / "rootfs.tar"
    rootfs.mkdir(parents=True)
    c = api.create_container(image, command=["/bin/true"])
    try:
        with tar_path.open("wb") as f:  # the image's files, streamed to disk (hundreds of MB)
            for chunk in api.export(c["Id"]):
                f.write(chunk)
    finally:
        api.remove_container(c["Id"], force=True)
    with tarfile.open(tar_path) as tar:
        tar.extractall(rootfs, filter="tar")
    tar_path.unlink()
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"].update(args=["/bin/true"], terminal=False)
    spec["root"]["readonly"] = True
    (bundle / "config.json").write_text(json.dumps(spec))
    return str(bundle)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="containers per variant and block")
    ap.add_argument("--blocks", type=int, default=3, help="interleaved slices per variant")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/container_cpu.json")
    args = ap.parse_args()

    import dataclasses

    import docker
    from bench_sandbox import ONE_THREAD
    from sandbox_profile import machine_cpu_s

    from stop.sandbox.flags import container_args, harness_cmd, host_config
    from stop.sandbox.image import ensure_image
    from stop.sandbox.records import ExecLimits

    api = docker.from_env(timeout=60).api
    image = ensure_image()
    limits = ExecLimits()
    cores = os.cpu_count() or 1
    # The harness's command line for a container of one CPU, and as if its pools were as wide as
    # the host (only the command differs: every container gets the same limits).
    wide = harness_cmd(dataclasses.replace(limits, cpus=float(cores)))
    variants: dict[str, tuple[list[str], dict[str, str]]] = {
        "/bin/true": (["/bin/true"], {}),
        "python": (["python3", "-I", "-c", "pass"], {}),
        "python + numpy": (["python3", "-I", "-c", "import numpy"], {}),
        "python + numpy (1t)": (["python3", "-I", "-c", "import numpy"], ONE_THREAD),
        "harness, 1 thread": (harness_cmd(limits), {}),
        f"harness, {cores} threads": (wide, {}),
    }

    def life(cmd: list[str], env: dict[str, str]) -> None:
        ca = container_args(image, {"stop.bench": "container-cpu"}, limits)
        ca.update(command=cmd, environment=env, stdin_open=False)
        c = api.create_container(host_config=host_config(api, limits, "runc"), **ca)
        try:
            api.start(c["Id"])
            api.wait(c["Id"], timeout=60)
        finally:
            api.remove_container(c["Id"], force=True)

    def bare() -> None:
        subprocess.run([sys.executable, "-I", "-c", "import numpy"], env={}, check=True)

    runs = {name: (lambda c=cmd, e=env: life(c, e)) for name, (cmd, env) in variants.items()}
    runs["bare subprocess + numpy (host)"] = bare
    bundle = runc_bundle(api, image) if os.geteuid() == 0 and shutil.which("runc") else None
    if bundle is not None:
        count = iter(range(10 ** 9))
        runs["runc run /bin/true, no engine"] = lambda: subprocess.run(
            ["runc", "run", "--bundle", bundle, f"stop-bench-{os.getpid()}-{next(count)}"],
            stdin=subprocess.DEVNULL, check=True)
    cpu = {name: 0.0 for name in runs}
    wall = {name: 0.0 for name in runs}
    for run in runs.values():
        run()  # warm: the image's files and the client's imports
    names = list(runs)
    for k in range(args.blocks):
        for name in names[k % len(names):] + names[:k % len(names)]:
            t0, c0 = time.perf_counter(), machine_cpu_s()
            for _ in range(args.n):
                runs[name]()
            wall[name] += time.perf_counter() - t0
            cpu[name] += machine_cpu_s() - c0
        print(f"[bench] block {k + 1}/{args.blocks} done (load {os.getloadavg()[0]:.2f})",
              file=sys.stderr, flush=True)
    if bundle is not None:
        shutil.rmtree(Path(bundle).parent, ignore_errors=True)
    total = args.n * args.blocks
    rows = {name: {"cpu_ms": round(1000 * cpu[name] / total, 1),
                   "wall_ms": round(1000 * wall[name] / total, 1)} for name in names}
    result = {"n_per_variant": total, "image": image, "limits": limits.to_dict(),
              "cpus": os.cpu_count(), "variants": rows,
              "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'variant':<32} {'CPU ms':>8} {'wall ms':>8}   (per container, all work on the machine)")
    for name, r in rows.items():
        print(f"{name:<32} {r['cpu_ms']:>8.1f} {r['wall_ms']:>8.1f}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
