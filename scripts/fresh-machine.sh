#!/usr/bin/env bash
# Prove the README commands on a fresh Debian bookworm machine: a container standing in for a VM
# (all capabilities the host has, its own cgroups, network and Docker data), from a bare
# debootstrap image (git and ca-certificates only: no Python, no Docker, no make), a fresh clone
# of this repository's HEAD, then the commands, each run twice (the second run shows the skips).
#
#   bash scripts/fresh-machine.sh test          # bash .ci/run (= make test), as CI does
#   bash scripts/fresh-machine.sh run           # make run
#   bash scripts/fresh-machine.sh both          # .ci/run, then make run, in the same machine
#   bash scripts/fresh-machine.sh setup-test    # only the set-up of make test, twice
#   bash scripts/fresh-machine.sh setup-run     # only the set-up of make run, twice
#   options: --seed-wheel   copy the cached llama-cpp-python wheel in (skips its ~6 min build)
#            --keep         keep the container afterwards (name: stop-fresh-machine)
#
# Needs a working Docker engine on this host and root. Logs: .cache/logs/fresh-machine-*.log
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHAT="${1:-test}"; shift || true
SEED_WHEEL=0; KEEP=0
for a in "$@"; do
    case "$a" in
        --seed-wheel) SEED_WHEEL=1 ;;
        --keep) KEEP=1 ;;
        *) echo "fresh-machine: unknown option $a" >&2; exit 2 ;;
    esac
done
case "$WHAT" in test|run|both|setup-test|setup-run) ;;
    *) echo "fresh-machine: test, run, both, setup-test or setup-run" >&2; exit 2 ;; esac

IMAGE=stop-fresh:bookworm
NET=stop-fresh
NAME=stop-fresh-machine
LOG="$ROOT/.cache/logs/fresh-machine-$WHAT-$(date +%Y%m%d-%H%M%S).log"
mkdir -p "$(dirname "$LOG")"

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    # The Debian mirror this host's apt uses, or STOP_DEBIAN_MIRROR: the sandbox image build's
    # own parser, which needs only python3 (no stop, no venv).
    mirror="$(python3 -I "$ROOT/stop/sandbox/debian_mirror.py")" || {
        echo "fresh-machine: python3 is needed to read the apt sources" >&2; exit 1; }
    tmp="$(mktemp -d)"
    echo "==> bootstrapping a bare bookworm ($mirror) into $tmp" >&2
    t0=$SECONDS
    debootstrap --variant=minbase --include=git,ca-certificates bookworm "$tmp/rootfs" "$mirror" \
        >"$tmp/debootstrap.log" 2>&1 || { tail -5 "$tmp/debootstrap.log" >&2; exit 1; }
    rm -rf "$tmp/rootfs/var/cache/apt/archives/"*.deb
    tar -C "$tmp/rootfs" -c . | docker import - "$IMAGE" >/dev/null
    rm -rf "$tmp"
    echo "    $IMAGE ready in $((SECONDS - t0))s" >&2
fi
# A network of its own: the machine needs apt and PyPI, and its inner dockerd its own namespace.
docker network inspect "$NET" >/dev/null 2>&1 || docker network create "$NET" >/dev/null

inner='set -euo pipefail
# Stand-in for a VM boot: writable cgroup hierarchies of its own, as dockerd needs.
if [[ "$(stat -fc %T /sys/fs/cgroup)" == tmpfs ]]; then    # cgroup v1: one mount per controller
    for d in /sys/fs/cgroup/*/; do
        n=$(basename "$d"); o=$n; [[ $n == systemd ]] && o=none,name=systemd
        umount "$d" && mount -t cgroup -o "$o" cgroup "$d"
    done
else
    mount -o remount,rw /sys/fs/cgroup
fi
t() {
    local s=$SECONDS r=0
    "$@" || r=$?
    echo "[fresh-machine] \`$*\` took $((SECONDS - s))s (exit $r)" >&2
    return $r
}
git clone -q /src /work/stop && cd /work/stop
echo "[fresh-machine] clone of $(git log -1 --format="%h %s")" >&2
if [[ -d /seed-wheels ]]; then mkdir -p .cache/wheels && cp /seed-wheels/*.whl .cache/wheels/; fi
case "$WHAT" in
    test) t bash .ci/run; t bash .ci/run ;;
    run) t bash -c "apt-get update -q && apt-get install -y -q make" ; t make run; t make run ;;
    both) rc=0; t bash .ci/run || rc=1; t make run || rc=1; t make setup-test; t make setup
          exit $rc ;;
    setup-test) t bash scripts/setup.sh --for test; t bash scripts/setup.sh --for test ;;
    setup-run) t bash scripts/setup.sh --for run; t bash scripts/setup.sh --for run ;;
esac'

# Not --privileged: where this host is itself a container it may lack a capability or two.
caps=$(capsh --decode="$(awk '/^CapBnd/ {print $2}' /proc/self/status)" 2>/dev/null | cut -d= -f2)
drop=()
for c in sys_resource sys_module sys_boot; do
    [[ ",$caps," == *",cap_$c,"* ]] || drop+=(--cap-drop "${c^^}")
done
args=(--name "$NAME" --cap-add ALL "${drop[@]}" --security-opt seccomp=unconfined
      --security-opt apparmor=unconfined --security-opt systempaths=unconfined --cgroupns private
      --network "$NET" -v /var/lib/docker
      -v "$ROOT:/src:ro" -e CI=true -e WHAT="$WHAT")
# Where this host reaches PyPI through a TLS-inspecting proxy, the machine needs its CA bundle too.
if [[ -n "${PIP_CERT:-}" && -f "$PIP_CERT" ]]; then
    args+=(-v "$PIP_CERT:/etc/ssl/certs/host-ca-bundle.crt:ro" -e PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt)
fi
if [[ "$SEED_WHEEL" == 1 ]]; then
    args+=(-v "$ROOT/.cache/wheels:/seed-wheels:ro")
fi
[[ "$KEEP" == 1 ]] || args+=(--rm)
docker rm -f "$NAME" >/dev/null 2>&1 || true
echo "==> fresh machine: $WHAT (log: $LOG)" >&2
start=$SECONDS
set +e
docker run "${args[@]}" "$IMAGE" bash -c "$inner" </dev/null 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
echo "==> fresh machine: $WHAT exited $rc after $((SECONDS - start))s (log: $LOG)" >&2
exit "$rc"
