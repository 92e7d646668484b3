"""The codec that carries values across the sandbox boundary."""

from __future__ import annotations

import json

import numpy as np
from stop.container.codec import Opaque, decode, dumps, encode, loads


def test_natives_tuples_and_arrays_round_trip():
    value = {"a": [1, 2.5, "x", None, True], "t": (1, (2, 3)),
             "arr": np.arange(6, dtype=np.int64).reshape(2, 3), "f": np.float32(1.5)}
    back = loads(dumps(value))
    assert back["a"] == [1, 2.5, "x", None, True]
    assert back["t"] == (1, (2, 3)) and isinstance(back["t"], tuple)
    assert back["arr"].dtype == np.int64 and back["arr"].shape == (2, 3)
    assert (back["arr"] == value["arr"]).all()
    assert isinstance(back["f"], np.float32) and back["f"] == 1.5


def test_subclasses_and_objects_become_opaque():
    class AlwaysEqual(list):
        def __eq__(self, other):
            return True

    class Weird:
        pass

    assert isinstance(decode(encode(AlwaysEqual([1]))), Opaque)
    assert decode(encode(Weird())).type_name.endswith("Weird")
    assert isinstance(decode(encode({1: 2})), Opaque)
    assert isinstance(decode(encode(np.array(["a"]))), Opaque)
    assert Opaque("x") != 1 and Opaque("x") == Opaque("x")


def test_non_finite_floats_and_depth_are_safe():
    back = loads(dumps([float("nan"), float("inf"), -float("inf")]))
    assert np.isnan(back[0]) and back[1] == float("inf") and back[2] == -float("inf")
    deep: list = []
    cur = deep
    for _ in range(200):
        cur.append([])
        cur = cur[0]
    json.loads(dumps(deep))  # bounded, not a RecursionError


def test_refused_dtypes_do_not_decode():
    bad = {"__ndarray__": {"dtype": "object", "shape": [1], "data": [1]}}
    try:
        decode(bad)
    except (ValueError, TypeError):
        return
    raise AssertionError("object dtype decoded")


def test_arrays_keep_their_non_finite_elements_and_refuse_tagged_ones_where_none_belong():
    f = np.array([[1.5, np.nan], [np.inf, -np.inf]], dtype=np.float32)
    wire = json.loads(dumps(f))  # strict JSON: the non-finite elements travel as tags
    assert wire["__ndarray__"]["data"][0] == 1.5 and wire["__ndarray__"]["data"][1] == {
        "__float__": "nan"}
    back = decode(wire)
    assert back.dtype == np.float32 and back.shape == (2, 2)
    assert np.isnan(back[0, 1]) and back[1, 0] == np.inf and back[1, 1] == -np.inf
    assert json.loads(dumps(np.arange(4)))["__ndarray__"]["data"] == [0, 1, 2, 3]
    forged = {"__ndarray__": {"dtype": "int64", "shape": [2],
                              "data": [1, {"__opaque__": "x"}]}}
    try:
        decode(forged)
    except (ValueError, TypeError):
        return
    raise AssertionError("an int array decoded with an opaque element")
