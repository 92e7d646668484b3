"""Tripwires for a candidate reaching the harness's own objects (its channel, its nonce).

Threat model: the candidate shares the harness's interpreter, so the harness's frames, module
globals and channel are one walk away: ``sys._getframe(1).f_globals``, ``inspect.stack()``,
``gc.get_objects()``, ``gc.get_referrers(arg)``. None of that is a way out (the container is the
wall, and a frame sent through a stolen channel collides with the harness's own), but it is an
attempt worth a finding. These checks report what reaches the harness, not every harmless use:
a candidate looking at its own frames, or at objects of its own, is left alone; the standard
library formatting a traceback (code names and line numbers only) is left alone.

Seen here: sys._getframe returning a harness frame; f_code read on a harness frame (inspect.stack
does it for every frame it returns); sys._current_frames (every thread's frames, the harness's
included); gc.get_objects when the harness's channel is among the objects; gc.get_referrers and
gc.get_referents when a harness frame, module namespace or the channel is among the answers;
and, whichever way the channel was found, the candidate calling its methods or reading its
nonce, descriptor or input stream.
"""

import gc
import os
import sys
import threading
import types

HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep
CANDIDATE_FILE = "/candidate/candidate.py"
RULE = "harness-reach"
EVENTS = {"sys._getframe", "sys._current_frames", "object.__getattr__", "gc.get_objects",
          "gc.get_referrers", "gc.get_referents"}
# Standard-library modules that read frames only for code names and line numbers.
HARMLESS_READERS = ("traceback.py", "linecache.py")
PRIVATE_ATTRS = ("nonce", "out_fd", "in_file")
CHANNEL_METHODS = ("send", "request", "finding")

_state = {"chan": None, "ids": {}, "report": None}  # ids: id of a harness object -> its name
_quiet = threading.local()


def _is_harness_code(code):
    return code.co_filename.startswith(HERE)


def owner(frame):
    """("candidate", line) or ("harness", None) for the innermost frame of either on the stack
    from ``frame`` outwards; (None, None) when neither is (a thread of the standard library)."""
    f = frame
    while f is not None:
        name = f.f_code.co_filename
        if name == CANDIDATE_FILE:
            return "candidate", f.f_lineno
        if name.startswith(HERE):
            return "harness", None
        f = f.f_back
    return None, None


def _entry(frame):
    """The function the candidate called that led to ``frame`` (e.g. inspect.stack), and the
    files of the frames on the way."""
    files, last, f = [], None, frame
    while f is not None and f.f_code.co_filename != CANDIDATE_FILE:
        files.append(os.path.basename(f.f_code.co_filename))
        last, f = f, f.f_back
    if last is None:
        return "", files
    mod = os.path.splitext(os.path.basename(last.f_code.co_filename))[0]
    return f"{mod}.{last.f_code.co_name}", files


def harness_owned(obj):
    """A harness frame, one of the harness's module namespaces, or its channel."""
    if id(obj) in _state["ids"]:
        return True
    return isinstance(obj, types.FrameType) and _is_harness_code(obj.f_code)


def _frame_name(frame):
    return f"{frame.f_code.co_name}() in {os.path.basename(frame.f_code.co_filename)}"


def check_event(event, args, caller):
    """(rule, attempted, detail, line) for an audit event that reaches the harness, else None.
    Called from the audit hook (its guard is held, so the reads here raise no findings)."""
    if event == "object.__getattr__" and (len(args) < 2 or args[1] != "f_code"):
        return None
    if caller.f_code.co_filename.startswith(HERE):
        return None  # the harness reading its own stack (candidate_line, the stubs)
    who, line = owner(caller)
    if who != "candidate":
        return None
    if event in ("sys._getframe", "object.__getattr__"):
        target = args[0] if args else None
        if not isinstance(target, types.FrameType) or not _is_harness_code(target.f_code):
            return None
        via, files = _entry(caller)
        if event == "object.__getattr__" and files and all(
                f in HARMLESS_READERS for f in files):
            return None  # traceback formatting: names and line numbers, no objects
        what = f"{via}()" if via else ("sys._getframe()" if event == "sys._getframe"
                                       else "frame.f_code")
        return (RULE, f"{what} reached the harness's frame {_frame_name(target)}",
                {"event": event, "via": via or None}, line)
    if event == "sys._current_frames":
        return (RULE, "sys._current_frames(): every thread's frames, the harness's included",
                {"event": event}, line)
    if event == "gc.get_objects":
        gen = args[0] if args and isinstance(args[0], int) and args[0] >= 0 else None
        objs = gc.get_objects() if gen is None else gc.get_objects(gen)
        if not any(id(o) in _state["ids"] for o in objs):
            return None
        return (RULE, "gc.get_objects(): the heap holds the harness's channel", {"event": event},
                line)
    if event in ("gc.get_referrers", "gc.get_referents"):
        objs = tuple(args[0]) if args and isinstance(args[0], tuple) else tuple(args)
        fn = gc.get_referrers if event == "gc.get_referrers" else gc.get_referents
        found = next((o for o in (*fn(*objs), *objs) if harness_owned(o)), None)
        if found is None:
            return None
        what = (_frame_name(found) if isinstance(found, types.FrameType)
                else _state["ids"].get(id(found), type(found).__name__))
        return (RULE, f"{event}() reached the harness's {what}", {"event": event}, line)
    return None


def _check_caller(frame, what):
    """Report a use of the channel by anyone but the harness."""
    if getattr(_quiet, "on", False) or _state["report"] is None:
        return
    _quiet.on = True
    try:
        who, line = owner(frame)
        if who != "harness":
            _state["report"](RULE, what, line, {"target": what.split(" ")[-1]})
    except Exception:
        pass
    finally:
        _quiet.on = False


def _method(real, name):
    def wrapped(self, *a, **k):
        _check_caller(sys._getframe(1), f"called the harness's channel: {name}")
        return real(self, *a, **k)

    wrapped.__name__ = name
    return wrapped


def _attribute(name):
    def get(self):
        _check_caller(sys._getframe(1), f"read the harness's channel: {name}")
        return self.__dict__[name]

    def put(self, value):
        self.__dict__[name] = value

    return property(get, put)


def install(chan, namespaces, report):
    """Watch the channel's class; remember the objects that are the harness's own.

    namespaces: module dicts of the harness (its globals, the tripwires'). report(rule,
    attempted, line, detail) sends a finding.
    """
    _state["chan"], _state["report"] = chan, report
    _state["ids"] = {id(chan): "channel", id(vars(chan)): "channel's attributes",
                     **{id(ns): f"namespace of {ns.get('__file__', '?')}" for ns in namespaces}}
    cls = type(chan)
    for name in CHANNEL_METHODS:
        real = getattr(cls, name, None)
        if real is not None:
            setattr(cls, name, _method(real, name))
    for name in PRIVATE_ATTRS:
        if name in vars(chan):
            setattr(cls, name, _attribute(name))
