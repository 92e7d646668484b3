"""Values across the sandbox boundary: a JSON encoding that keeps tuples and numpy arrays.

This file is copied verbatim into the sandbox image and imported there by the harness, so it
must stay standalone (standard library only; numpy is optional and imported lazily).

Only exact built-in types pass as themselves. Subclasses and unknown objects (a list subclass, an
object whose ``__eq__`` always answers True) are encoded as ``{"__opaque__": "<type name>"}`` and
decode to ``Opaque``: a candidate can never smuggle behaviour to the host, only data.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64
_NUMBERS = frozenset((int, float, bool))


class Opaque:
    """A value the sandbox refused to carry: only its type name survives."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"Opaque({self.type_name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.type_name == self.type_name

    def __hash__(self) -> int:
        return hash(("Opaque", self.type_name))


def _type_name(x: Any) -> str:
    t = type(x)
    return f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__qualname__


def _numpy_encode(x: Any) -> Any:
    import sys

    np = sys.modules.get("numpy")
    if np is None:
        return None
    if type(x) is np.ndarray:
        if x.dtype.kind not in "biuf":
            return {"__opaque__": f"numpy.ndarray[{x.dtype}]"}
        data = x.ravel().tolist()
        if x.dtype.kind == "f" and not np.isfinite(x).all():  # only then an element needs a tag
            data = [_float_ok(v) for v in data]
        return {"__ndarray__": {"dtype": str(x.dtype), "shape": list(x.shape), "data": data}}
    if isinstance(x, np.generic) and type(x).__module__ == "numpy":
        if x.dtype.kind not in "biuf":
            return {"__opaque__": f"numpy.{type(x).__name__}"}
        return {"__npscalar__": {"dtype": str(x.dtype), "value": _float_ok(x.item())}}
    return None


def _float_ok(v: Any) -> Any:
    if type(v) is float and not math.isfinite(v):
        return {"__float__": repr(v)}
    return v


def encode(x: Any, _depth: int = 0) -> Any:
    """A JSON-able form of ``x``."""
    if _depth > MAX_DEPTH:
        return {"__opaque__": "too-deep"}
    t = type(x)
    if x is None or t is bool or t is int or t is str:
        return x
    if t is float:
        return _float_ok(x)
    if t is list:
        return [encode(v, _depth + 1) for v in x]
    if t is tuple:
        return {"__tuple__": [encode(v, _depth + 1) for v in x]}
    if t is dict:
        if all(type(k) is str for k in x):
            return {k: encode(v, _depth + 1) for k, v in x.items()}
        return {"__opaque__": "dict[non-str keys]"}
    np_form = _numpy_encode(x)
    if np_form is not None:
        return np_form
    return {"__opaque__": _type_name(x)}


def decode(x: Any) -> Any:
    """The value ``encode`` described: numpy arrays, tuples and ``Opaque`` come back."""
    t = type(x)
    if t is list:
        return [decode(v) for v in x]
    if t is not dict:
        return x
    if len(x) == 1:
        (tag, body), = x.items()
        if tag == "__tuple__" and type(body) is list:
            return tuple(decode(v) for v in body)
        if tag == "__opaque__":
            return Opaque(str(body))
        if tag == "__float__":
            return float(body) if body in ("nan", "inf", "-inf") else Opaque("float")
        if tag == "__ndarray__":
            return _decode_array(body)
        if tag == "__npscalar__":
            import numpy as np

            return np.dtype(_dtype(body["dtype"])).type(decode(body["value"]))
    return {k: decode(v) for k, v in x.items()}


def _dtype(name: str) -> str:
    import numpy as np

    dt = np.dtype(name)
    if dt.kind not in "biuf":
        raise ValueError(f"refused dtype {name!r}")
    return name


def _decode_array(body: dict) -> Any:
    import numpy as np

    raw = body["data"]
    # A plain list of numbers is the array's data as it is; anything tagged is decoded first.
    plain = type(raw) is list and all(type(v) in _NUMBERS for v in raw)
    data = raw if plain else [decode(v) for v in raw]
    shape = tuple(int(s) for s in body["shape"])
    return np.array(data, dtype=_dtype(body["dtype"])).reshape(shape)


def dumps(x: Any) -> str:
    """Encode and serialise on one line."""
    return json.dumps(encode(x), separators=(",", ":"), allow_nan=False)


def loads(s: str | bytes) -> Any:
    return decode(json.loads(s))
