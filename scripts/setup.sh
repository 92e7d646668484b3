#!/usr/bin/env bash
# Prepare this checkout for `make run` or `make test`, from a bare Debian machine or a ready one.
#
#   bash scripts/setup.sh --for run    # venv, package, Docker engine, sandbox image, Qwen model
#   bash scripts/setup.sh --for test   # the same with the SmolLM2 smoke model instead of Qwen
#   bash scripts/setup.sh --only STEP  # one step: system, venv, docker, browser, image, model,
#                                      # smoke-model, gvisor, ray
#   bash scripts/setup.sh --only gvisor  # gVisor's runsc as a second runtime (--runtime runsc)
#   bash scripts/setup.sh --dry-run    # say what each step would do, change nothing
#
# `--for test` also installs gVisor, so the tests run the sandbox under both runtimes; `--for run`
# keeps the engine's default runtime (runc).
#
# Every step checks first and skips when its work is already done, so a second run takes seconds.
# Installing system packages and starting dockerd need root; without root the script says what to
# run instead and exits non-zero.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PURPOSE=run
ONLY=""
DRY_RUN=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --for) PURPOSE="${2:?--for needs run or test}"; shift 2 ;;
        --for=*) PURPOSE="${1#--for=}"; shift ;;
        --only) ONLY="${2:?--only needs a step name}"; shift 2 ;;
        --only=*) ONLY="${1#--only=}"; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
case "$PURPOSE" in run|test) ;; *) echo "setup: --for takes run or test, not '$PURPOSE'" >&2; exit 2 ;; esac

VENV="${STOP_VENV:-$ROOT/.venv}"
CACHE="${STOP_CACHE_DIR:-$ROOT/.cache}"
LOG_DIR="$CACHE/logs"
STAMP="$VENV/.stop-install-stamp"
DOCKERD_WAIT_S="${STOP_DOCKERD_WAIT_S:-90}"
# Extra dockerd flags, e.g. a private socket and data root (with DOCKER_HOST pointing there).
read -r -a DOCKERD_ARGS <<< "${STOP_DOCKERD_ARGS:-}"
# The flags that keep llama.cpp off AMX: the default build crashes on CPUs that report it.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"

IS_ROOT=0; [[ "$(id -u)" == 0 ]] && IS_ROOT=1
SUMMARY=()

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
say() { printf '%s\n' "$*" >&2; }
step() { printf '\n==> %s\n' "$*" >&2; }
fail() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
record() {
    local st="$2"
    [[ "$DRY_RUN" == 1 && "$st" =~ ^(installed|started|ok)$ ]] && st=dry-run
    SUMMARY+=("$(printf '%-14s %-9s %7ss' "$1" "$st" "$3")")
}
want() { [[ -z "$ONLY" || "$ONLY" == "$1" ]]; }
run_cmd() {
    say "    \$ $*"
    if [[ "$DRY_RUN" == 1 ]]; then return 0; fi
    "$@"
}

# ---------------------------------------------------------------- python
find_python() {
    local c
    for c in ${PYTHON:-} python3.13 python3.12 python3.11 python3; do
        [[ -n "$c" ]] || continue
        command -v "$c" >/dev/null 2>&1 || continue
        if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$c"; return 0
        fi
    done
    return 1
}

docker_answers() { timeout 20 docker info >/dev/null 2>&1; }

has_lib() {
    local libs
    libs="$(ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true)"
    [[ "$libs" == *"$1"* ]]
}

llama_wheel_cached() { compgen -G "$CACHE/wheels/llama_cpp_python-*.whl" >/dev/null; }

# ---------------------------------------------------------------- system packages
# One apt transaction for everything missing: apt-get update alone costs ~10 s.
step_system() {
    local t0 pkgs=() py
    t0=$(now)
    step "system packages: checking python3, venv, docker.io, debootstrap, libgomp1, a C++ toolchain"
    py="$(find_python || true)"
    if [[ -z "$py" ]]; then
        pkgs+=(python3 python3-venv)
    elif ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
        pkgs+=(python3-venv)
    fi
    if ! docker_answers && ! command -v dockerd >/dev/null 2>&1; then
        pkgs+=(docker.io)
    fi
    command -v debootstrap >/dev/null 2>&1 || pkgs+=(debootstrap)
    # The llama-cpp-python wheel links the OpenMP runtime, which a bare system lacks.
    has_lib libgomp.so.1 || pkgs+=(libgomp1)
    if ! llama_wheel_cached; then
        # Only the one-time llama-cpp-python build needs a compiler.
        { command -v gcc >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1; } || pkgs+=(build-essential)
        command -v cmake >/dev/null 2>&1 || pkgs+=(cmake)
    fi
    if [[ ${#pkgs[@]} -eq 0 ]]; then
        say "    all present"
        record system skipped "$(elapsed "$t0")"
        return 0
    fi
    say "    missing: ${pkgs[*]}"
    if [[ "$IS_ROOT" != 1 ]]; then
        # Some may not be needed (debootstrap once the image exists); later steps fail clearly.
        say "    warning: not root, so not installing them. If a later step fails, run:"
        say "      sudo apt-get install -y ${pkgs[*]}"
        record system missing "$(elapsed "$t0")"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || fail "no apt-get here: install ${pkgs[*]} with this system's package manager"
    export DEBIAN_FRONTEND=noninteractive
    run_cmd apt-get update -q
    run_cmd apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends "${pkgs[@]}"
    say "    installed ${pkgs[*]} in $(elapsed "$t0")s"
    record system installed "$(elapsed "$t0")"
}

# ---------------------------------------------------------------- virtualenv + package
extras_for() {
    # The test and ui extras: llama-cpp-python (the `local` extra) is installed by the model
    # step, from the project's wheel cache or built once with the AMX-free flags into it.
    "$1" - "$ROOT/pyproject.toml" <<'EOF'
import sys, tomllib
declared = tomllib.load(open(sys.argv[1], "rb")).get("project", {}).get("optional-dependencies", {})
print(",".join(e for e in ("test", "ui") if e in declared))
EOF
}

install_fingerprint() {
    { cat "$ROOT/pyproject.toml"; echo "root=$ROOT"; "$VENV/bin/python" -V 2>&1; } | sha256sum | cut -d' ' -f1
}

step_venv() {
    local t0 py extras spec
    t0=$(now)
    step "python environment: $VENV with the stop package"
    py="$(find_python)" || fail "Python >= 3.11 not found. Install it (Debian: apt-get install -y python3 python3-venv) or set PYTHON=/path/to/python3.11"
    say "    python: $py ($("$py" -V 2>&1))"
    if [[ ! -x "$VENV/bin/python" ]]; then
        run_cmd "$py" -m venv "$VENV" || fail "could not create $VENV (Debian: apt-get install -y python3-venv)"
    fi
    if [[ "$DRY_RUN" == 1 && ! -x "$VENV/bin/python" ]]; then
        say "    would install the package (editable) with its extras"
        record venv dry-run "$(elapsed "$t0")"
        return 0
    fi
    if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(install_fingerprint)" && -x "$VENV/bin/stop" ]] \
        && "$VENV/bin/python" -c 'import stop' 2>/dev/null; then
        say "    up to date (pyproject.toml unchanged since the last install)"
        record venv skipped "$(elapsed "$t0")"
        return 0
    fi
    extras="$(extras_for "$VENV/bin/python")"
    spec="."
    [[ -n "$extras" ]] && spec=".[$extras]"
    local progress=()
    [[ -t 1 ]] || progress=(--progress-bar off)
    # A cached llama-cpp-python wheel is preferred; should pip build one anyway, it builds the
    # AMX-free variant.
    mkdir -p "$CACHE/wheels"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" run_cmd "$VENV/bin/python" -m pip install "${progress[@]}" \
        --find-links "$CACHE/wheels" -e "$spec"
    [[ "$DRY_RUN" == 1 ]] || install_fingerprint > "$STAMP"
    say "    installed stop with extras [${extras}] in $(elapsed "$t0")s"
    record venv installed "$(elapsed "$t0")"
}

# ---------------------------------------------------------------- docker engine
start_dockerd() {
    local log="$LOG_DIR/dockerd.log" pid waited=0
    mkdir -p "$LOG_DIR"
    say "    starting dockerd${*:+ $*} (log: $log)"
    if [[ "$DRY_RUN" == 1 ]]; then say "    \$ setsid nohup dockerd $* >>$log 2>&1 &"; return 0; fi
    # Its own session and no stdin: the engine must outlive this script and `make`.
    setsid nohup dockerd "$@" >>"$log" 2>&1 </dev/null &
    pid=$!
    while ! docker_answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "    dockerd exited; the end of its log:"
            tail -n 15 "$log" | sed 's/^/      /' >&2
            return 1
        fi
        if (( waited >= DOCKERD_WAIT_S )); then
            say "    dockerd (pid $pid) did not answer within ${DOCKERD_WAIT_S}s; the end of its log:"
            tail -n 15 "$log" | sed 's/^/      /' >&2
            return 1
        fi
        sleep 1; waited=$((waited + 1))
    done
    say "    dockerd (pid $pid) answers after ${waited}s"
}

step_docker() {
    local t0
    t0=$(now)
    step "Docker engine"
    if docker_answers; then
        say "    reachable ($(docker version --format 'server {{.Server.Version}}' 2>/dev/null || echo ok))"
        record docker running "$(elapsed "$t0")"
        return 0
    fi
    if [[ "$IS_ROOT" != 1 ]]; then
        say "    the Docker engine does not answer, and starting it needs root. Do one of:"
        say "      sudo systemctl start docker        # where systemd manages Docker"
        say "      sudo make $PURPOSE                     # lets this script install/start dockerd"
        say "      sudo usermod -aG docker $(id -un)   # if the engine runs but your user may not use it; log in again"
        fail "Docker engine not reachable"
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 || fail "dockerd is not installed; install Docker Engine"
        say "    dockerd is not installed: installing docker.io"
        DEBIAN_FRONTEND=noninteractive run_cmd apt-get update -q
        DEBIAN_FRONTEND=noninteractive run_cmd apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends docker.io
    fi
    # A dockerd that is still starting answers on the default socket soon; do not start a second.
    if [[ -z "${DOCKER_HOST:-}" ]] && pgrep -x dockerd >/dev/null 2>&1; then
        say "    a dockerd process exists but does not answer yet; waiting up to ${DOCKERD_WAIT_S}s"
        local waited=0
        while ! docker_answers && (( waited < DOCKERD_WAIT_S )); do sleep 1; waited=$((waited + 1)); done
        docker_answers || fail "dockerd runs (pid $(pgrep -x dockerd | head -1)) but \`docker info\` fails; see its log or restart it"
    elif ! start_dockerd "${DOCKERD_ARGS[@]}"; then
        # Inside some containers iptables is not usable; the sandbox needs no bridge network.
        if grep -qi iptables "$LOG_DIR/dockerd.log" 2>/dev/null; then
            say "    retrying without iptables and the default bridge (sandboxes run with --network none)"
            start_dockerd "${DOCKERD_ARGS[@]}" --iptables=false --bridge=none \
                || fail "dockerd did not start; see $LOG_DIR/dockerd.log"
        else
            fail "dockerd did not start; see $LOG_DIR/dockerd.log"
        fi
    fi
    say "    engine up in $(elapsed "$t0")s"
    record docker started "$(elapsed "$t0")"
}

# ---------------------------------------------------------------- gVisor (a second wall)
# runsc from Debian, registered in the engine's daemon.json (merged: other settings and runtimes
# stay), then dockerd is sent SIGHUP, which reloads its runtimes without stopping any container.
DAEMON_JSON="${STOP_DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}"
engine_has_runsc() { timeout 20 docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; }

step_gvisor() {
    local t0 py pid waited=0
    t0=$(now)
    step "gVisor: runsc as a second sandbox runtime (stop ... --runtime runsc)"
    py="$VENV/bin/python"
    if engine_has_runsc && [[ -x "$py" ]] && command -v runsc >/dev/null 2>&1 \
        && "$py" -m stop.sandbox.runsc_setup register --check --config "$DAEMON_JSON" \
            --runsc "$(command -v runsc)" >/dev/null 2>&1; then
        say "    the engine has runsc ($(runsc --version 2>/dev/null | head -1 || echo registered))"
        record gvisor skipped "$(elapsed "$t0")"
        return 0
    fi
    docker_answers || fail "the Docker engine does not answer: run bash scripts/setup.sh --only docker first"
    if [[ "$IS_ROOT" != 1 ]]; then
        say "    installing runsc and registering it with the engine needs root. Run:"
        say "      sudo bash scripts/setup.sh --only gvisor"
        fail "gVisor not set up"
    fi
    if ! command -v runsc >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 || fail "no apt-get here: install gVisor's runsc by hand, then rerun this step"
        DEBIAN_FRONTEND=noninteractive run_cmd apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends runsc \
            || { DEBIAN_FRONTEND=noninteractive run_cmd apt-get update -q \
                 && DEBIAN_FRONTEND=noninteractive run_cmd apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends runsc; } \
            || fail "apt-get could not install runsc"
    fi
    [[ -x "$py" || "$DRY_RUN" == 1 ]] || fail "$py is missing: run bash scripts/setup.sh --only venv first"
    run_cmd "$py" -m stop.sandbox.runsc_setup register --config "$DAEMON_JSON" \
        --runsc "$(command -v runsc || echo /usr/bin/runsc)" || fail "could not register runsc in $DAEMON_JSON"
    pid="$(pgrep -x dockerd | head -1 || true)"
    if [[ -z "$pid" ]]; then
        fail "no dockerd process to reload here: restart the engine so it reads $DAEMON_JSON"
    fi
    run_cmd kill -HUP "$pid"
    if [[ "$DRY_RUN" != 1 ]]; then
        while ! engine_has_runsc; do
            (( waited >= 20 )) && fail "dockerd (pid $pid) did not pick up runsc after SIGHUP; see its log"
            sleep 1; waited=$((waited + 1))
        done
    fi
    say "    runsc registered and the engine reloaded (pid $pid, running containers untouched) in $(elapsed "$t0")s"
    record gvisor installed "$(elapsed "$t0")"
}

# ---------------------------------------------------------------- browser (web view tests)
CHROMIUM="${STOP_CHROMIUM:-/usr/bin/chromium}"

# Debian's chromium: the web view's tests drive it with Playwright (which cannot download a
# browser of its own here).
step_browser() {
    local t0
    t0=$(now)
    step "browser for the web view tests: $CHROMIUM"
    if [[ -x "$CHROMIUM" ]]; then
        say "    present ($("$CHROMIUM" --version 2>/dev/null || echo chromium))"
        record browser skipped "$(elapsed "$t0")"
        return 0
    fi
    if [[ "$IS_ROOT" != 1 ]]; then
        say "    warning: not root, so not installing it; the ui tests fail until you run:"
        say "      sudo apt-get install -y chromium"
        record browser missing "$(elapsed "$t0")"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || fail "no apt-get here: install chromium and set STOP_CHROMIUM to its path"
    export DEBIAN_FRONTEND=noninteractive
    run_cmd apt-get update -q
    run_cmd apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends chromium
    [[ "$DRY_RUN" == 1 || -x "$CHROMIUM" ]] || fail "chromium installed, but $CHROMIUM is missing; set STOP_CHROMIUM"
    say "    installed chromium in $(elapsed "$t0")s"
    record browser installed "$(elapsed "$t0")"
}

# ---------------------------------------------------------------- stop commands
step_stop_cmd() {
    local name="$1" t0; shift
    t0=$(now)
    step "$name: stop $*"
    if [[ "$DRY_RUN" != 1 && ! -x "$VENV/bin/stop" ]]; then
        fail "$VENV/bin/stop is missing: run bash scripts/setup.sh --only venv"
    fi
    run_cmd "$VENV/bin/stop" "$@" || fail "\`stop $*\` failed (exit $?)"
    say "    $name done in $(elapsed "$t0")s"
    record "$name" ok "$(elapsed "$t0")"
}

# ---------------------------------------------------------------- ray (the cluster executor)
# The pinned `ray` extra of pyproject.toml, so tests/cluster runs in `make test`.
step_ray() {
    local t0 pin
    t0=$(now)
    pin="$(sed -n 's/^ray = \["\(ray==[^"]*\)"\]$/\1/p' "$ROOT/pyproject.toml")"
    [[ -n "$pin" ]] || fail "no pinned ray extra in pyproject.toml"
    step "Ray for the cluster executor: $pin"
    [[ -x "$VENV/bin/python" || "$DRY_RUN" == 1 ]] || fail "$VENV/bin/python is missing: run bash scripts/setup.sh --only venv first"
    if [[ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("ray"))' 2>/dev/null)" == "${pin#ray==}" ]]; then
        say "    present"
        record ray skipped "$(elapsed "$t0")"
        return 0
    fi
    local progress=()
    [[ -t 1 ]] || progress=(--progress-bar off)
    run_cmd "$VENV/bin/python" -m pip install "${progress[@]}" "$pin" || fail "could not install $pin"
    say "    installed in $(elapsed "$t0")s"
    record ray installed "$(elapsed "$t0")"
}

# ---------------------------------------------------------------- main
T_ALL=$(now)
say "stop set-up for \`make $PURPOSE\` in $ROOT$([[ "$DRY_RUN" == 1 ]] && echo ' (dry run)')"
mkdir -p "$LOG_DIR"
want system && step_system
want venv && step_venv
want docker && step_docker
if [[ "$ONLY" == browser || ( -z "$ONLY" && "$PURPOSE" == test ) ]]; then
    step_browser
fi
want image && step_stop_cmd image sandbox build
if [[ "$ONLY" == ray || ( -z "$ONLY" && "$PURPOSE" == test ) ]]; then
    step_ray
fi
if [[ "$ONLY" == gvisor || ( -z "$ONLY" && "$PURPOSE" == test ) ]]; then
    step_gvisor
fi
if [[ "$ONLY" == model || ( -z "$ONLY" && "$PURPOSE" == run ) ]]; then
    step_stop_cmd model model install
fi
if [[ "$ONLY" == smoke-model || ( -z "$ONLY" && "$PURPOSE" == test ) ]]; then
    step_stop_cmd smoke-model model install --smoke
fi

printf '\n==> set-up finished in %ss\n' "$(elapsed "$T_ALL")" >&2
printf '    %s\n' "${SUMMARY[@]}" >&2
