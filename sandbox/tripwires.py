"""Tripwires inside the container: the PEP 578 audit hook and friends. They log, never block.

Threat model: the candidate shares the process and can blind any of this with native code; the
container is the wall. What these do is name attempts (network, processes, writes outside /tmp,
kills, native code, secret and scorer reads, raw devices and kernel memory, privilege and
namespace calls, patched builtins, reaching the harness's own objects) with the candidate's source
line, and send them to the host as findings the moment they happen.
"""

import builtins
import errno
import os
import re
import sys
import threading
import time
import traceback

try:
    import reach  # flat, beside this file, as the harness imports it in the container
except ImportError:  # imported as stop.container.tripwires
    from . import reach

CANDIDATE_FILE = "/candidate/candidate.py"
CHAN = None  # set by the harness: the channel findings go out on
PROTECTED = ()  # set by the harness: its stub classes, whose attributes are budgets


def candidate_line(frame=None, own_acts_only=False):
    """The innermost candidate source line on the stack (what a finding cites). With
    `own_acts_only`, None when an installed library's import runs between it and the frame:
    what the library's module body does is not the candidate's act."""
    f = frame or sys._getframe(1)
    while f is not None:
        if f.f_code.co_filename == CANDIDATE_FILE:
            return f.f_lineno
        if own_acts_only and _library_import(f):
            return None
        f = f.f_back
    return None


# The installed libraries (standard library, site- and dist-packages), never a project folder that
# an editable install puts on sys.path (the process backend's host, where the task files are).
_STDLIB = os.path.dirname(os.__file__)
LIB_DIRS = tuple(os.path.join(p, "") for p in sys.path
                 if p == _STDLIB or p.startswith(_STDLIB + "-") or p.startswith(_STDLIB + os.sep)
                 or os.path.basename(p) in ("site-packages", "dist-packages"))


def _library_import(frame):
    """Whether a frame runs an installed library module's body in its own namespace: what that
    does (scikit-learn importing socket, reading its `_scorer.py`) is the library's act."""
    code = frame.f_code
    if code.co_name != "<module>" or not code.co_filename.startswith(LIB_DIRS):
        return False
    module = sys.modules.get(frame.f_globals.get("__name__"))
    return module is not None and vars(module) is frame.f_globals


SECRET_MARKS = ("/environ", "/.ssh", "/.aws", "/.config/gcloud", "/.docker", "/run/secrets",
                "/.netrc", "/.git-credentials", "/.env", "docker.sock", "/etc/shadow")
# Raw devices and kernel memory: absent from the container (or masked by the engine), so an open
# fails or reads nothing; the attempt is what gets reported.
RAW_DEVICE = re.compile(r"^/dev/(mem|kmem|port|kmsg|nvram|kvm|mtd\d|raw|"
                        r"(sd|hd|vd|xvd)[a-z]|nvme\d|mmcblk\d|loop\d|dm-\d|md\d|sr\d|"
                        r"mapper/|disk/|block/)|^/proc/(kcore|kmsg|kallsyms|iomem)$|"
                        r"^/sys/(firmware|kernel/debug)/")
SCORER_MARKS = ("scorer", "/tasks/", "answer", "expected", "/work/", "/runs/", "/home/")
PROCESS_EVENTS = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                  "os.fork", "os.forkpty", "pty.spawn", "os.startfile"}
NETWORK_EVENTS = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
                  "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
                  "urllib.Request", "http.client.connect", "ftplib.connect", "smtplib.connect"}
WRITE_EVENTS = {"os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.truncate", "os.symlink",
                "os.link", "shutil.rmtree", "shutil.move", "os.utime"}
FILE_PRIV_EVENTS = {"os.chmod", "os.chown", "os.chflags", "os.lchown", "os.lchmod"}
DANGER_IMPORTS = {"subprocess": "process-spawn", "_posixsubprocess": "process-spawn",
                  "multiprocessing": "process-spawn", "pty": "process-spawn",
                  "socket": "network", "_socket": "network", "urllib.request": "network",
                  "http.client": "network", "ctypes": "native-code", "_ctypes": "native-code",
                  "cffi": "native-code", "mmap": "native-code"}
ESCALATE_CMDS = {"sudo": "privilege", "su": "privilege", "chmod": "privilege",
                 "chown": "privilege", "setcap": "privilege", "mount": "namespace",
                 "unshare": "namespace", "nsenter": "namespace", "chroot": "namespace"}
_guard = threading.local()


def _path(p):
    if isinstance(p, int):
        return None
    try:
        p = os.fsdecode(p)
    except TypeError:
        return None
    return os.path.normpath(os.path.join("/tmp", p)) if not os.path.isabs(p) else os.path.normpath(p)


def _outside_tmp(path):
    return path is not None and not (path == "/tmp" or path.startswith("/tmp/")
                                     or path in ("/dev/null", "/dev/stdout", "/dev/stderr"))


def _is_write(mode, flags):
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))


def _argv0(args):
    if isinstance(args, (str, bytes)):
        first = os.fsdecode(args).split()[0] if args else ""
    elif isinstance(args, (list, tuple)) and args:
        first = os.fsdecode(args[0]) if isinstance(args[0], (str, bytes, os.PathLike)) else ""
    else:
        first = ""
    return first


def classify(event, args):
    """(rule, attempted, detail) for an interesting event, else None."""
    if event == "open":
        path = _path(args[0])
        mode = args[1] if len(args) > 1 else None
        flags = args[2] if len(args) > 2 else None
        if path is None:
            return None
        if RAW_DEVICE.match(path):
            what = "write" if _is_write(mode, flags) else "read"
            return "raw-device", f"open {path} to {what}", {"path": path}
        if _is_write(mode, flags) and _outside_tmp(path):
            return "file-write-outside-tmp", f"open {path} for writing", {"path": path}
        if any(m in path for m in SECRET_MARKS):
            return "secret-read", f"read {path}", {"path": path}
        if any(m in path.lower() for m in SCORER_MARKS) and not path.startswith(LIB_DIRS):
            return "scorer-read", f"read {path}", {"path": path}
        return None
    if event in ("os.listdir", "os.scandir", "glob.glob"):
        path = _path(args[0]) if args and args[0] is not None else None
        if path and any(m in path.lower() for m in SCORER_MARKS):
            return "scorer-read", f"list {path}", {"path": path}
        return None
    if event in PROCESS_EVENTS:
        if event in ("os.fork", "os.forkpty"):
            return "process-spawn", event, {}
        if event == "os.system":
            cmd = _argv0(args[0])
        elif event == "subprocess.Popen":
            cmd = _argv0(args[0]) if args[0] else _argv0(args[1])
        else:
            cmd = _argv0(args[0])
        target = f"{event} {cmd}".strip()
        base = os.path.basename(cmd)
        if cmd.startswith("/tmp/") or cmd.startswith("./") or (cmd and not os.path.isabs(cmd) and "/" in cmd):
            return "exec-binary", f"execute {cmd}", {"target": cmd}
        if base in ESCALATE_CMDS:
            return ESCALATE_CMDS[base], target, {"target": cmd}
        return "process-spawn", target, {"target": cmd}
    if event in NETWORK_EVENTS:
        target = args[1] if event in ("socket.connect", "socket.bind", "socket.sendto") else args[0]
        if event == "http.client.connect":
            target = f"{args[1]}:{args[2]}"
        return "network", f"{event} {target!r}", {"target": repr(target)[:200]}
    if event in WRITE_EVENTS:
        paths = [_path(a) for a in args[:2] if isinstance(a, (str, bytes))]
        bad = [p for p in paths if _outside_tmp(p)]
        if bad:
            return "file-write-outside-tmp", f"{event} {bad[0]}", {"path": bad[0]}
        return None
    if event in FILE_PRIV_EVENTS:
        path = _path(args[0])
        if event == "os.chmod" and not _outside_tmp(path) and isinstance(args[1], int) and args[1] & 0o111:
            return "exec-binary", f"chmod +x {path}", {"path": path}
        if _outside_tmp(path):
            return "privilege", f"{event} {path}", {"path": path}
        return None
    if event in ("os.kill", "os.killpg", "signal.pthread_kill"):
        return "kill", f"{event} pid={args[0]} sig={args[1]}", {"target": args[0]}
    if event.startswith("ctypes."):
        return "native-code", event, {}
    if event == "import":
        rule = DANGER_IMPORTS.get(args[0])
        return (rule, f"import {args[0]}", {"module": args[0]}) if rule else None
    if event in ("exec", "compile"):
        return "dynamic-code", f"{event}()", {}
    if event in ("object.__setattr__", "object.__delattr__"):
        target = args[0]
        if target in PROTECTED:
            return "budget-tamper", f"set {target.__name__}.{args[1]}", {}
        if getattr(target, "__module__", None) in ("builtins", "time", "sys", "os", "codec"):
            return "interpreter-patch", f"set {target!r}.{args[1]}"[:200], {}
        return None
    if event in ("sys.addaudithook", "sys.settrace", "sys.setprofile", "code.__new__"):
        return "interpreter-patch", event, {}
    if event == "os.putenv" or event == "os.unsetenv":
        return "env-read", event, {}
    return None


INTERESTING = (PROCESS_EVENTS | NETWORK_EVENTS | WRITE_EVENTS | FILE_PRIV_EVENTS
               | {"open", "os.listdir", "os.scandir", "glob.glob", "os.kill", "os.killpg",
                  "signal.pthread_kill", "import", "exec", "compile", "sys.addaudithook",
                  "sys.settrace", "sys.setprofile", "object.__setattr__",
                  "object.__delattr__", "code.__new__", "os.putenv", "os.unsetenv"}
               | reach.EVENTS)
ACTIVE = [False]
DIRECT_ONLY = {"exec", "compile", "os.putenv", "os.unsetenv"}


def audit_hook(event, args):
    if not ACTIVE[0] or (event not in INTERESTING and not event.startswith("ctypes.")):
        return
    if event == "object.__getattr__" and args[1] != "f_code":
        return  # other audited reads (__code__, tb_frame, gi_frame) reach nothing of ours
    if getattr(_guard, "busy", False):
        return
    _guard.busy = True
    try:
        caller = sys._getframe(1)
        if event in reach.EVENTS:
            hit = reach.check_event(event, args, caller)
            if hit:
                rule, attempted, detail, line = hit
                CHAN.finding(rule, attempted, line=line, **detail)
            return
        if event in DIRECT_ONLY:
            # exec/compile also run every imported module: count only the candidate's own calls
            line = caller.f_lineno if caller.f_code.co_filename == CANDIDATE_FILE else None
        else:
            line = candidate_line(caller, own_acts_only=True)
        if line is None:
            return
        hit = classify(event, args)
        if hit:
            rule, attempted, detail = hit
            CHAN.finding(rule, attempted, line=line, event=event, **detail)
    except Exception:
        pass
    finally:
        _guard.busy = False


class WatchedEnviron(dict):
    """os.environ after the harness emptied it: reads are reported (there is nothing to find)."""

    def _seen(self, what):
        caller = sys._getframe(2)
        if caller.f_code.co_filename != CANDIDATE_FILE:
            return  # the standard library reading its own settings
        line = caller.f_lineno
        if CHAN is not None:
            CHAN.finding("env-read", f"os.environ {what}", line=line)

    def __getitem__(self, k):
        self._seen(f"[{k!r}]")
        return dict.__getitem__(self, k)

    def get(self, k, default=None):
        self._seen(f".get({k!r})")
        return dict.get(self, k, default)

    def __contains__(self, k):
        self._seen(f"contains {k!r}")
        return dict.__contains__(self, k)

    def keys(self):
        self._seen(".keys()")
        return dict.keys(self)

    def items(self):
        self._seen(".items()")
        return dict.items(self)

    def copy(self):
        self._seen(".copy()")
        return dict(self)


def _tripwire(module, name, rule):
    real = getattr(module, name, None)
    if real is None:
        return

    def wrapped(*a, **k):
        line = candidate_line(sys._getframe(1))
        if line is not None:
            CHAN.finding(rule, f"{module.__name__}.{name}{a!r}"[:200], line=line)
        return real(*a, **k)

    setattr(module, name, wrapped)


def _thread_tripwire():
    import _thread

    real = _thread.start_new_thread

    def start(*a, **k):
        try:
            return real(*a, **k)
        except RuntimeError as e:
            line = candidate_line(sys._getframe(1))
            CHAN.finding("resource-pids", f"thread start refused: {e}", line=line,
                         layer="container", limit="pids")
            raise

    _thread.start_new_thread = start
    threading._start_new_thread = start


def install(chan, protected):
    global CHAN, PROTECTED
    CHAN, PROTECTED = chan, tuple(protected)
    import posix

    os.environ.clear()
    os.environ = WatchedEnviron()  # noqa: B003  (cleared just above; reads are now reported)
    for mod in (os, posix):
        for name in ("setuid", "setgid", "seteuid", "setegid", "setreuid", "setregid",
                     "setresuid", "setresgid", "setgroups", "initgroups"):
            _tripwire(mod, name, "privilege")
        for name in ("chroot", "unshare", "setns"):
            _tripwire(mod, name, "namespace")
    _thread_tripwire()
    main = sys.modules.get("__main__")
    reach.install(chan, [vars(main) if main is not None else {}, globals()],
                  lambda rule, attempted, line, detail: CHAN.finding(rule, attempted, line=line,
                                                                      **detail))
    sys.addaudithook(audit_hook)


RESOURCE_ERRNOS = {errno.EFBIG: ("resource-disk", "fsize"), errno.ENOSPC: ("resource-disk", "tmpfs"),
                   errno.EMFILE: ("resource-fds", "nofile"), errno.ENFILE: ("resource-fds", "nofile"),
                   errno.EAGAIN: ("resource-pids", "pids")}


def report_exception(exc):
    """Findings that the kind of a candidate's exception reveals (a limit, an early exit)."""
    tb_line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == CANDIDATE_FILE:
            tb_line = lineno
    if isinstance(exc, SystemExit):
        CHAN.finding("exit-early", f"sys.exit({exc.code!r}) before returning", line=tb_line)
    elif isinstance(exc, MemoryError):
        CHAN.finding("resource-memory", "MemoryError", line=tb_line, layer="container",
                     limit="memory")
    elif isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
        rule, limit = RESOURCE_ERRNOS[exc.errno]
        CHAN.finding(rule, f"{type(exc).__name__}: {exc}", line=tb_line, layer="container",
                     limit=limit)


def format_error(exc):
    lines = traceback.format_exception_only(type(exc), exc)
    return "".join(lines).strip()[-2000:]


# ---- integrity: what the candidate may have patched between calls --------------------------

def snapshot():
    return {"builtins": dict(vars(builtins)), "time": (time.time, time.monotonic,
            time.perf_counter, time.sleep, time.process_time), "modules": len(sys.modules)}


def check_integrity(before):
    changed = [k for k, v in before["builtins"].items() if vars(builtins).get(k) is not v]
    if changed:
        CHAN.finding("interpreter-patch", f"patched builtins: {', '.join(changed[:5])}")
    now_t = (time.time, time.monotonic, time.perf_counter, time.sleep, time.process_time)
    if any(a is not b for a, b in zip(now_t, before["time"], strict=True)):
        CHAN.finding("interpreter-patch", "patched time functions")


def leftover_processes(whole_namespace):
    """Processes left besides the harness and init: all of them in a container's own pid
    namespace, only those of the harness's session elsewhere."""
    mine = {os.getpid(), os.getppid(), 1}
    sid = os.getsid(0)
    others = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in mine:
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[-1].split()
            if fields[0] != "Z" and (whole_namespace or int(fields[3]) == sid):
                others.append(int(name))
    return others
