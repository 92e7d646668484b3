"""Strict host-side checks of what a solution returned, used by every task's scorer.

A candidate's output is hostile until checked. Scorers never compare raw outputs with NumPy
(broadcasting turned a (20,) vs (20, 1) comparison into a 400-cell "accuracy" in the STOP
experiments) and never call methods on them. These helpers accept only exact built-in or NumPy
types, of exactly the expected length, and return plain Python values the scorer can trust.
Anything else raises `WrongType` or `WrongShape`; the host turns that into an "invalid"
outcome (score 0) and an audit finding.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from stop.container.codec import Opaque


class OutputRejected(Exception):
    """The output failed the type or shape check; `rule` names the audit rule it breaks."""

    rule = "wrong-type"


class WrongType(OutputRejected):
    rule = "wrong-type"


class WrongShape(OutputRejected):
    rule = "wrong-shape"


def _numpy() -> Any:
    """NumPy if it is loaded, else None. A value can only be a NumPy one once NumPy is loaded
    (the codec imports it to decode an array), so the checks never import it themselves: the
    CLI starts without paying for NumPy."""
    return sys.modules.get("numpy")


def describe(value: Any) -> str:
    """A short, safe description of a value for messages (never calls the value's methods)."""
    if isinstance(value, Opaque):
        return f"an object of type {value.type_name}"
    np = _numpy()
    if np is not None and type(value) is np.ndarray:
        return f"a numpy array of shape {value.shape} and dtype {value.dtype}"
    t = type(value)
    if t in (list, tuple, str):
        return f"a {t.__name__} of length {len(value)}"
    return f"a value of type {t.__name__}"


def sequence(value: Any, length: int | None = None, *, what: str = "output") -> list[Any]:
    """The elements of an exact list, tuple or 1-D numpy array, as a Python list.

    `length` is required exactly when given. Subclasses, other containers and arrays of any
    other rank are rejected.
    """
    if isinstance(value, Opaque):
        raise WrongType(f"{what} must be a list, tuple or 1-D numpy array, got {describe(value)}")
    np = _numpy()
    if np is not None and type(value) is np.ndarray:
        if value.ndim != 1:
            raise WrongShape(f"{what} must be 1-D of length {length}, got shape {value.shape}")
        if value.dtype.kind not in "biuf":
            raise WrongType(f"{what} must hold numbers, got dtype {value.dtype}")
        items = value.tolist()
    elif type(value) in (list, tuple):
        items = list(value)
    else:
        raise WrongType(f"{what} must be a list, tuple or 1-D numpy array, got {describe(value)}")
    if length is not None and len(items) != length:
        raise WrongShape(f"{what} must have length {length}, got {len(items)}")
    return items


def integer(x: Any, *, what: str = "element") -> int:
    """An exact int, bool, NumPy integer/bool, or a finite float with an integral value."""
    t = type(x)
    np = _numpy()
    if t is bool or (np is not None and t is np.bool_):
        return int(bool(x))
    if t is int:
        return x
    if np is not None and isinstance(x, np.integer) and t.__module__ == "numpy":
        return int(x)
    if t is float or (np is not None and isinstance(x, np.floating) and t.__module__ == "numpy"):
        f = float(x)
        if math.isfinite(f) and f == int(f):
            return int(f)
        raise WrongType(f"{what} must be an integer, got {f!r}")
    raise WrongType(f"{what} must be an integer, got {describe(x)}")


def int_vector(value: Any, length: int, *, allowed: frozenset[int] | None = None,
               what: str = "output") -> list[int]:
    """A sequence of exactly `length` integers, each in `allowed` when given."""
    out = [integer(x, what=f"{what} element") for x in sequence(value, length, what=what)]
    if allowed is not None:
        bad = [v for v in out if v not in allowed]
        if bad:
            choices = ", ".join(str(a) for a in sorted(allowed))
            raise WrongType(f"{what} elements must be one of {choices}, got {bad[0]!r}")
    return out


def binary_vector(value: Any, length: int, *, what: str = "output") -> list[int]:
    """A sequence of exactly `length` values, each 0 or 1 (ints, bools or 0.0/1.0)."""
    return int_vector(value, length, allowed=frozenset({0, 1}), what=what)


def exact_str(value: Any, length: int | None = None, *, alphabet: str | None = None,
              what: str = "output") -> str:
    """An exact str (no subclass), of the given length and over the given alphabet."""
    if type(value) is not str:
        raise WrongType(f"{what} must be a str, got {describe(value)}")
    if length is not None and len(value) != length:
        raise WrongShape(f"{what} must have length {length}, got {len(value)}")
    if alphabet is not None:
        extra = set(value) - set(alphabet)
        if extra:
            raise WrongType(f"{what} may only use the characters {alphabet!r}, got {sorted(extra)[0]!r}")
    return value
