"""The plain-data boundary of the coding sandbox: values cross it as JSON text and come back as builtins
(types kept, so EvalPlus's equality rules see the same values), canonically, and hostile text is refused."""

from __future__ import annotations

import collections
import enum
import math
import re
import time

import numpy as np
import pytest

from harness.evaluation import plain_data
from harness.evaluation.code_runner import DIGEST_OVER, output_line


def _typed(x):
    """Structure with types, for comparisons where 1 == 1.0 == True must not count as equal."""
    if isinstance(x, np.ndarray):
        return ("ndarray", x.dtype.str, x.shape, [_typed(i) for i in x.ravel().tolist()])
    if isinstance(x, np.generic):
        return ("np", x.dtype.str, _typed(x.item()))
    if isinstance(x, float) and math.isnan(x):
        return ("float", "nan")
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, [_typed(i) for i in x])
    if isinstance(x, (set, frozenset)):
        return (type(x).__name__, sorted(repr(_typed(i)) for i in x))
    if isinstance(x, dict):
        items = [(repr(_typed(k)), _typed(v)) for k, v in x.items()]
        return (type(x).__name__, items if isinstance(x, collections.OrderedDict) else sorted(items))
    if type(x) is int:
        return ("int", hex(x))  # repr is capped at 4300 digits
    return (type(x).__name__, repr(x))


VALUES = [
    None, True, False, 0, -7, 2**63 - 1, -(2**63), 2**63, -(10**5000), 10**100000,
    1.5, -0.0, float("inf"), float("-inf"), float("nan"), 5e-324, 1e308,
    "", "héllo \n \"quoted\" \x00 \ud800 \U0001f600", b"\x00\xffbytes", bytearray(b"ba"), 3 + 4j, complex(float("nan"), 1),
    [], [1, [2, [3.0, "x"]]], (), (1,), (1, (2, 3), [4]), {1: "a", (2, 3): [4], "k": {5: None}},
    {3, 1, 2}, frozenset({(1, 2), "a"}), {frozenset({1}): 2},
    collections.OrderedDict([("b", 1), ("a", 2)]), collections.Counter("hello"),
    np.array([[1.5, 2.0], [3.0, np.nan]]), np.array([1, 2, 3], dtype=np.int32), np.array([True, False]),
    np.array(["ab", "c"]), np.array([], dtype=np.float64), np.float64(2.5), np.int64(-3), np.bool_(True),
]


@pytest.mark.parametrize("value", VALUES, ids=[f"{type(v).__name__}-{i}" for i, v in enumerate(VALUES)])
def test_values_come_back_with_their_types(value):
    text = plain_data.dumps(value)
    back = plain_data.loads(text)
    expected = bytes(value) if isinstance(value, bytearray) else value  # bytearray travels as bytes
    assert _typed(back) == _typed(expected)
    assert plain_data.dumps(back) == text  # canonical: decoding and encoding again changes nothing


def test_text_is_canonical_for_unordered_containers():
    a, b = {3, 1, 2, 10, -4}, {-4, 10, 2, 1, 3}
    assert plain_data.dumps(a) == plain_data.dumps(b)
    assert plain_data.dumps({"x": 1, "y": 2}) == plain_data.dumps({"y": 2, "x": 1})
    od1, od2 = collections.OrderedDict(x=1, y=2), collections.OrderedDict(y=2, x=1)
    assert plain_data.dumps(od1) != plain_data.dumps(od2)  # two OrderedDicts compare in order
    assert plain_data.dumps([1, 2]) != plain_data.dumps((1, 2)) != plain_data.dumps([1.0, 2.0])


def test_subclasses_travel_as_their_builtin_base():
    Point = collections.namedtuple("Point", "x y")

    class Color(enum.IntEnum):
        RED = 1

    class Loud(str):
        def __eq__(self, other):
            return True

        __hash__ = str.__hash__

    assert plain_data.loads(plain_data.dumps(Point(1, 2))) == (1, 2)
    assert type(plain_data.loads(plain_data.dumps(Color.RED))) is int
    assert plain_data.loads(plain_data.dumps(collections.defaultdict(list, a=[1]))) == {"a": [1]}
    loud = plain_data.loads(plain_data.dumps(Loud("a")))
    assert type(loud) is str and loud != "b"  # its __eq__ did not come along


def test_objects_become_opaque_and_equal_nothing():
    class Yes:
        def __eq__(self, other):
            return True

    for value in (Yes(), lambda: 1, (i for i in range(3)), re.match("a", "a"), range(3), object()):
        back = plain_data.loads(plain_data.dumps(value))
        assert isinstance(back, plain_data.Opaque)
        assert back != back and not (back == 1) and back is not None
    nested = [[[]]]
    for _ in range(300):
        nested = [nested]
    assert "nesting too deep" in plain_data.dumps(nested)


def test_large_outputs_travel_as_digests():
    rows = [("x" * 90, i) for i in range(200_000)]  # > 16 MiB of text
    line = output_line(rows)
    assert line.startswith("#m:") and int(line.rsplit(":", 1)[1]) > DIGEST_OVER
    assert output_line([tuple(r) for r in rows]) == line  # equal values, equal digests
    assert output_line(rows[:-1] + [("x" * 90, -1)]) != line
    assert output_line([1, 2, 3]) == "=[1,2,3]"


def test_hostile_text_is_refused_quickly():
    flood = '{"$":"set","items":[' + ",".join(f'{{"$":"int","hex":"{k * (2**61 - 1):x}"}}' for k in range(1, 50001)) + "]}"
    start = time.monotonic()
    with pytest.raises(plain_data.PlainDataError, match="share one hash value"):
        plain_data.loads(flood)
    assert time.monotonic() - start < 2.0
    for text in ("[" * 100000 + "]" * 100000, "1" * 5000, '{"$":"nope"}', '{"$":"ndarray","dtype":"O","shape":[1],"items":[1]}',
                 '{"$":"set","items":[[1]]}', '{"$":"tuple"}', "{", '{"$":"int","hex":"zz"}', b"\xff\xfe\x00",
                 '{"$":"dict","items":[[1]]}', '{"$":"complex","re":true,"im":1}', '{"$":"npscalar","dtype":"V8","value":1}'):
        with pytest.raises(plain_data.PlainDataError):
            plain_data.loads(text)
