"""`stop doctor`: is this machine ready to run stop, and if not, which command fixes it.

Each check looks at the real thing (the engine answers a ping, the image tag exists, the weights
hash to the published sha256, llama-cpp-python imports in a child process so a crashing build
cannot take the doctor down) and names the one command that repairs what is missing.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any

from stop.cluster import images
from stop.cluster.connect import RAY_VERSION, ClusterError
from stop.sandbox import image, runtimes
from stop.sandbox.execution import SandboxUnavailable

MIN_PYTHON = (3, 11)
SETUP_DOCKER = "bash scripts/setup.sh --only docker"

# Provider prefix of a litellm model string -> the key it reads. Providers not listed are
# checked through litellm itself.
PROVIDER_KEYS = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "groq": "GROQ_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY",
    "xai": "XAI_API_KEY",
}
KEYLESS_PROVIDERS = {"ollama", "ollama_chat", "hosted_vllm", "lm_studio", "llamafile"}
LOCAL_SPECS = {"embedded": "embedded", "smollm2": "smollm2"}


@dataclass
class Check:
    """One line of the report. `required` checks that fail make the doctor exit non-zero."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_python(version: tuple[int, ...] | None = None) -> Check:
    v = tuple(version or sys.version_info[:3])
    text = ".".join(str(x) for x in v)
    if v[:2] >= MIN_PYTHON:
        return Check("python", True, f"{text} ({sys.executable})")
    return Check("python", False, f"{text} is older than 3.11",
                 "install Python >= 3.11 (Debian bookworm: apt-get install python3 python3-venv), "
                 "then: rm -rf .venv && make setup")


def check_docker() -> Check:
    """Reachable engine: the same client settings (DOCKER_HOST, ...) the sandbox uses."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        try:
            version = client.version().get("Version", "?")
        finally:
            client.close()
    except Exception as e:  # docker.errors.DockerException and socket errors alike
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        fix = SETUP_DOCKER if os.geteuid() == 0 else f"sudo {SETUP_DOCKER}"
        return Check("docker engine", False, f"not reachable: {reason}",
                     f"{fix}  (or run with --sandbox process: no security boundary)")
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return Check("docker engine", True, f"server {version} at {host}")


def check_runtimes(docker_ok: bool, have: list[str] | None = None) -> Check:
    """Which OCI runtimes the engine has. runc is the default and required; runsc (gVisor, the
    second wall) is optional unless $STOP_SANDBOX_RUNTIME asks for it."""
    try:
        wanted = runtimes.choose()
    except SandboxUnavailable as e:
        return Check("sandbox runtimes", False, str(e), f"unset {runtimes.ENV_VAR} or set it to "
                     f"{' or '.join(runtimes.RUNTIMES)}")
    if have is None:
        if not docker_ok:
            return Check("sandbox runtimes", False, "unknown, the engine is not reachable",
                         "fix the Docker engine first")
        try:
            import docker

            client = docker.from_env(timeout=10)
            try:
                have = runtimes.engine_runtimes(client.api)
            finally:
                client.close()
        except Exception as e:
            return Check("sandbox runtimes", False, f"docker info failed: {type(e).__name__}",
                         "fix the Docker engine first")
    known = [r for r in runtimes.RUNTIMES if r in have]
    detail = (f"engine has {', '.join(have) or 'none'}; stop uses {wanted}"
              f"{' ($' + runtimes.ENV_VAR + ')' if os.environ.get(runtimes.ENV_VAR) else ''}")
    missing = [r for r in (runtimes.RUNC, wanted) if r not in have]
    if missing:
        fix = runtimes.SETUP_GVISOR if runtimes.RUNSC in missing else "reinstall the Docker engine"
        return Check("sandbox runtimes", False, f"{detail}; missing {', '.join(missing)}", fix)
    if runtimes.RUNSC not in known:
        return Check("sandbox runtimes", True, f"{detail}; gVisor (runsc) not registered: "
                     f"optional second wall, {runtimes.SETUP_GVISOR}")
    return Check("sandbox runtimes", True, detail)


def _other_image_tags(repo: str) -> list[str]:
    try:
        r = subprocess.run(["docker", "images", repo, "--format", "{{.Tag}}"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [t for t in r.stdout.split() if t and t != "<none>"]


def check_image(docker_ok: bool, status: Any = None) -> Check:
    """The image for the current contents of sandbox/ (its tag is a hash of them)."""

    if status is None:
        if not docker_ok:
            return Check("sandbox image", False, f"{image.image_tag()}: unknown, the engine is "
                         "not reachable", "fix the Docker engine first, then: stop sandbox build")
        status = image.image_status()
    if status.exists:
        return Check("sandbox image", True, f"{status.tag} (current)")
    repo = status.tag.split(":", 1)[0]
    stale = [t for t in _other_image_tags(repo) if f"{repo}:{t}" != status.tag]
    detail = f"{status.tag} not built"
    if stale:
        detail += f"; only older ones exist ({', '.join(stale[:3])}): sandbox/ changed since"
    elif status.base_exists:
        detail += f"; base {status.base} present (rebuild takes seconds)"
    return Check("sandbox image", False, detail, "stop sandbox build")


def check_llama_cpp() -> Check:
    """Import what stop's local server loads, in a child: a build for the wrong CPU dies of
    SIGILL there instead of here."""
    code = ("import llama_cpp; from llama_cpp import _internals; "
            "from llama_cpp.llama_chat_format import Jinja2ChatFormatter; "
            "print(llama_cpp.__version__)")
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120)
    except subprocess.TimeoutExpired:
        return Check("llama-cpp-python", False, "import hung for 120 s", "stop model install")
    if r.returncode == 0:
        return Check("llama-cpp-python", True, f"{r.stdout.strip()} (imports cleanly)")
    if r.returncode < 0:
        why = f"import crashed with signal {-r.returncode} (a build for another CPU?)"
    else:
        lines = (r.stderr or "").strip().splitlines()
        why = lines[-1][:160] if lines else f"exit {r.returncode}"
    return Check("llama-cpp-python", False, why, "stop model install")


def _model_check(which: str, required: bool) -> Check:
    """The weights of the embedded model ("embedded") or the smoke model ("smollm2")."""
    label = "embedded model" if which == "embedded" else "smoke model (smollm2)"
    fix = "stop model install" if which == "embedded" else "stop model install --smoke"
    try:
        local_model = importlib.import_module("stop.models.local")
        info = local_model.verify_weights(which)
    except ImportError as e:
        return Check(label, False, f"model support missing from this install: {e}", fix, required)
    except OSError as e:  # an unreadable file or cache is a finding, not a crash
        return Check(label, False, f"cannot read the weights: {e}", fix, required)
    path = info.get("path")
    if not info.get("exists"):
        return Check(label, False, f"not installed (expected at {path})", fix, required)
    if not info.get("ok"):
        return Check(label, False, f"{path}: size or sha256 does not match the published file "
                     f"(sha256 {str(info.get('sha256'))[:16]}..)", f"rm {path} && {fix}", required)
    size = info.get("size") or 0
    checked = "sha256 ok" if info.get("expected_sha256") else "present"
    return Check(label, True, f"{path} ({size / 1e6:.0f} MB, {checked})", "", required)


def _provider_of(spec: str) -> str | None:
    if spec in LOCAL_SPECS or spec.startswith(("scripted:", "replay:")):
        return None
    return spec.split("/", 1)[0] if "/" in spec else "openai"


def _key_missing_via_litellm(spec: str) -> list[str]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm

        env = litellm.validate_environment(model=spec)
    except Exception:
        return []
    return list(env.get("missing_keys") or []) if not env.get("keys_in_environment") else []


def check_model_choice() -> tuple[Check, str | None]:
    """Which model `stop run` will use (STOP_MODEL), whether its key is there, and which local
    model (if any) must therefore be installed."""
    spec = (os.environ.get("STOP_MODEL") or "").strip()
    api_base = os.environ.get("STOP_API_BASE") or os.environ.get("OPENAI_API_BASE")
    if not spec or spec in LOCAL_SPECS:
        local = LOCAL_SPECS.get(spec, "embedded")
        keys = sorted(k for k in set(PROVIDER_KEYS.values()) if os.environ.get(k))
        extra = f"; provider keys present: {', '.join(keys)}" if keys else ""
        return Check("model choice", True, f"STOP_MODEL={spec or '(unset)'}: the local "
                     f"{local} model{extra}"), local
    provider = _provider_of(spec)
    if provider is None or provider in KEYLESS_PROVIDERS or api_base:
        return Check("model choice", True, f"STOP_MODEL={spec}: no key needed"), None
    key = PROVIDER_KEYS.get(provider)
    missing = ([key] if not os.environ.get(key) else []) if key else _key_missing_via_litellm(spec)
    if missing:
        return Check("provider key", False, f"STOP_MODEL={spec} needs {', '.join(missing)}, "
                     "which is not set", f"export {missing[0]}=...  (or unset STOP_MODEL to use "
                     "the embedded model)"), None
    return Check("provider key", True, f"STOP_MODEL={spec}: {key or 'key'} is set"), None


def check_cluster(address: str | None) -> list[Check]:
    """Ray (optional), and with an address the cluster: each docker node's slots, engine and
    sandbox image (present, to be sent by the driver, or not the driver's)."""
    try:
        import ray

        version = ray.__version__
    except ImportError:
        version = None
    fix = f"pip install 'stop[ray]'  (ray=={RAY_VERSION})"
    if address is None:
        if version is None:
            return [Check("ray", False, "not installed (only --executor ray needs it)", fix,
                          required=False)]
        pin = "" if version == RAY_VERSION else f", not the pinned {RAY_VERSION}"
        return [Check("ray", version == RAY_VERSION, f"{version}{pin}; no cluster checked "
                      "(stop doctor --ray-address ADDRESS)", fix, required=False)]
    if version is None:
        return [Check("ray cluster", False, "Ray is not installed here", fix)]
    try:
        ref, reports = images.inspect(address)
    except ClusterError as e:
        return [Check("ray cluster", False, str(e))]
    slots = sum(r.slots for r in reports)
    out = [Check("ray cluster", True, f"{address}: {len(reports)} docker node(s), {slots:g} "
                 f"sandbox slot(s), Ray {version}; image {ref.tag} "
                 f"{ref.id[:19] if ref.id else '(not on the driver)'}")]
    for r in reports:
        where = f"node {r.ip} {r.node[:8]}"
        if r.status == "ok":
            out.append(Check(where, True, f"{r.slots:g} slot(s), docker {r.info.get('docker')}, "
                             "image present and the driver's"))
        elif r.status == "missing":
            out.append(Check(where, True, f"{r.slots:g} slot(s), docker {r.info.get('docker')}, "
                             "image absent: a run sends the driver's before the node takes work"))
        else:
            out.append(Check(where, False, r.status))
    return out


def run_checks(ray_address: str | None = None) -> list[Check]:
    checks = [check_python()]
    docker_check = check_docker()
    checks += [docker_check, check_runtimes(docker_check.ok), check_image(docker_check.ok)]
    choice, local = check_model_choice()
    checks.append(choice)
    checks.append(check_llama_cpp())
    checks[-1].required = local is not None
    checks.append(_model_check("embedded", required=local == "embedded"))
    checks.append(_model_check("smollm2", required=local == "smollm2"))
    checks += check_cluster(ray_address)
    return checks


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        mark = "ok" if c.ok else ("MISSING" if c.required else "absent")
        lines.append(f"  {mark:<8} {c.name:<{width}}  {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"  {'':<8} {'':<{width}}  fix: {c.fix}")
    missing = [c for c in checks if c.required and not c.ok]
    if missing:
        lines.append(f"{len(missing)} needed part(s) missing: "
                     + ", ".join(c.name for c in missing))
    else:
        lines.append("ready: everything stop needs is here")
    return "\n".join(lines)


def healthy(checks: list[Check]) -> bool:
    return all(c.ok for c in checks if c.required)
