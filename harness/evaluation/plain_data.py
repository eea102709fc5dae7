"""Python values as plain JSON text, and back: the only form in which values cross the sandbox boundary.

Untrusted code (model-generated programs) runs in `harness.evaluation.sandbox`; what it computed comes
back to the harness as this text, never as objects or pickles. `loads` builds only builtin values (plus
`collections.OrderedDict`/`Counter` and numpy arrays/scalars of numeric, bool or string dtypes), so
nothing the untrusted side defines (an `__eq__` that is always true, a `__del__`, a subclass with its
own `__repr__`) can reach the code that compares outputs. A value the encoding does not carry (a
function, generator, regex match, custom object) becomes an `Opaque` marker that equals nothing.

Encoding (JSON; floats keep NaN/Infinity as Python's json does):
- None, bool, str, and int in [-2**63, 2**63) are themselves; float is itself (repr round-trips).
- list is a JSON list of encoded items.
- everything else is an object with a "$" tag: {"$": "int", "hex": ...} (big ints: Python caps decimal
  conversion at 4300 digits), "tuple", "set", "frozenset", "dict", "ordereddict", "counter" (their items;
  a dict's as [key, value] pairs), "bytes", "complex", "ndarray"/"npscalar" (numpy, only when the encoding
  side has numpy loaded), "opaque" ({"type": name}).
- The text is canonical: no spaces, set and dict items sorted by their own text (OrderedDict keeps its
  order), so equal values of the same types have equal text and `digest` can stand for a large value.
Subclasses of builtins (namedtuple, IntEnum, defaultdict, ...) are encoded as their builtin base, which
is how they compare with builtin values.

Stdlib only and no harness imports: the sandboxed runner loads this file by path.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, OrderedDict

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_DEPTH = 100  # deeper nesting is encoded as opaque, and refused when decoding
MAX_HASH_COLLISIONS = 32  # distinct items of one set/dict sharing a hash value (see `_hashed`)
_INT_LIMIT = 2**63
_NUMPY_KINDS = "biufcUS"  # bool, int, uint, float, complex, str, bytes dtypes; never object ("O")
_str_json = json.encoder.encode_basestring_ascii  # the C escaper json.dumps uses


class Opaque:
    """A value the encoding does not carry: equals nothing, itself included (as two distinct objects)."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __eq__(self, other: object) -> bool:
        return False

    def __ne__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"<opaque {self.type_name}>"


class PlainDataError(ValueError):
    """The text is not a valid encoding."""


# ------------------------------------------------------------------------------------------ encoding


def dumps(value: Any) -> str:
    """`value` as canonical plain JSON text (see the module docstring)."""
    parts: list[str] = []
    _emit(value, parts, 0)
    return "".join(parts)


def digest(text: str) -> str:
    """Stands for a value too large to send: sha256 of its canonical text, and the text's length."""
    import hashlib

    return f"{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()}:{len(text)}"


def _float_text(x: float) -> str:
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "Infinity" if x > 0 else "-Infinity"
    return float.__repr__(x)


def _items(values: Any, depth: int, sort: bool) -> str:
    texts = [dumps_at(v, depth + 1) for v in values]
    if sort:
        texts.sort()
    return ",".join(texts)


def dumps_at(value: Any, depth: int) -> str:
    parts: list[str] = []
    _emit(value, parts, depth)
    return "".join(parts)


def _pairs(pairs: Any, depth: int, sort: bool) -> str:
    texts = [f"[{dumps_at(k, depth + 2)},{dumps_at(v, depth + 2)}]" for k, v in pairs]
    if sort:
        texts.sort()
    return ",".join(texts)


def _tagged(tag: str, body: str) -> str:
    return f'{{"$":"{tag}","items":[{body}]}}'


def _all_json_scalars(items: list) -> bool:
    """Whether json.dumps writes `items` exactly as `_emit` would: exact str/float/bool/None and ints
    within the plain range."""
    for x in items:
        cls = type(x)
        if cls is int:
            if not -_INT_LIMIT <= x < _INT_LIMIT:
                return False
        elif cls is not float and cls is not str and cls is not bool and x is not None:
            return False
    return True


def _emit(value: Any, out: list[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        out.append('{"$":"opaque","type":"nesting too deep"}')
        return
    cls = type(value)
    if value is None:
        out.append("null")
    elif cls is bool:
        out.append("true" if value else "false")
    elif cls is str:
        out.append(_str_json(value))
    elif cls is int:
        out.append(int.__repr__(value) if -_INT_LIMIT <= value < _INT_LIMIT else f'{{"$":"int","hex":"{value:x}"}}')
    elif cls is float:
        out.append(_float_text(value))
    elif cls is list:
        if _all_json_scalars(value):  # the common large case (numbers, strings): C speed, same text
            out.append(json.dumps(value, separators=(",", ":")))
            return
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _emit(item, out, depth + 1)
        out.append("]")
    elif cls is tuple:
        out.append(_tagged("tuple", _items(value, depth, sort=False)))
    elif cls is dict:
        out.append(_tagged("dict", _pairs(value.items(), depth, sort=True)))
    elif cls is set or cls is frozenset:
        out.append(_tagged(cls.__name__, _items(value, depth, sort=True)))
    else:
        out.append(_other(value, depth))


def _other(value: Any, depth: int) -> str:
    cls = type(value)
    if cls is complex:
        return f'{{"$":"complex","re":{_float_text(value.real)},"im":{_float_text(value.imag)}}}'
    if cls is bytes or cls is bytearray:
        return f'{{"$":"bytes","hex":"{bytes(value).hex()}"}}'
    numpy = sys.modules.get("numpy")
    if numpy is not None and (cls is numpy.ndarray or isinstance(value, numpy.generic)):
        if value.dtype.kind not in _NUMPY_KINDS or value.dtype.names is not None:
            return f'{{"$":"opaque","type":{_str_json(f"numpy {value.dtype}"[:100])}}}'
        dtype = _str_json(value.dtype.str)
        if cls is numpy.ndarray:
            shape = ",".join(str(int(n)) for n in value.shape)
            return f'{{"$":"ndarray","dtype":{dtype},"shape":[{shape}],"items":{dumps_at(value.ravel().tolist(), depth + 1)}}}'
        return f'{{"$":"npscalar","dtype":{dtype},"value":{dumps_at(value.item(), depth + 1)}}}'
    # Subclasses of builtins compare with builtin values as their base does; read through the base type.
    if isinstance(value, int):
        return dumps_at(int.__int__(value), depth)
    if isinstance(value, float):
        return _float_text(float.__float__(value))
    if isinstance(value, str):
        return _str_json(str.__str__(value))
    if isinstance(value, tuple):
        return _tagged("tuple", _items(tuple.__iter__(value), depth, sort=False))
    if isinstance(value, list):
        return dumps_at(list(list.__iter__(value)), depth)
    if isinstance(value, dict):
        if isinstance(value, OrderedDict):
            return _tagged("ordereddict", _pairs(dict.items(value), depth, sort=False))
        return _tagged("counter" if isinstance(value, Counter) else "dict", _pairs(dict.items(value), depth, sort=True))
    if isinstance(value, frozenset):
        return _tagged("frozenset", _items(frozenset.__iter__(value), depth, sort=True))
    if isinstance(value, set):
        return _tagged("set", _items(set.__iter__(value), depth, sort=True))
    return f'{{"$":"opaque","type":{_str_json(f"{cls.__module__}.{cls.__qualname__}"[:100])}}}'


# ------------------------------------------------------------------------------------------ decoding


def loads(text: str | bytes) -> Any:
    """The value `text` encodes, built from builtins only; PlainDataError on anything malformed.

    Safe on hostile text: no code runs, nesting is bounded, and sets/dicts whose items collide on purpose
    (hash flooding, which would make building them quadratic) are refused.
    """
    try:
        tree = json.loads(text)
    except (ValueError, RecursionError) as err:  # also a decimal int past Python's 4300-digit cap
        raise PlainDataError(f"not JSON: {str(err)[:100]}") from err
    return decode(tree)


def decode(data: Any, _depth: int = 0) -> Any:
    """`loads` for an already parsed JSON tree."""
    if _depth > MAX_DEPTH + 2:
        raise PlainDataError("nesting too deep")
    cls = type(data)
    if data is None or cls is bool or cls is str or cls is int or cls is float:
        return data
    if cls is list:
        return [decode(item, _depth + 1) for item in data]
    if cls is not dict:
        raise PlainDataError(f"unexpected JSON value of type {cls.__name__}")
    tag = data.get("$")
    if tag in ("tuple", "set", "frozenset"):
        items = [decode(item, _depth + 1) for item in _field(data, "items", list)]
        if tag == "tuple":
            return tuple(items)
        return (set if tag == "set" else frozenset)(_hashed(items))
    if tag in ("dict", "ordereddict", "counter"):
        pairs = _field(data, "items", list)
        if not all(type(p) is list and len(p) == 2 for p in pairs):
            raise PlainDataError("dict items must be [key, value] pairs")
        keys = _hashed([decode(k, _depth + 2) for k, _ in pairs])
        mapping = dict(zip(keys, (decode(v, _depth + 2) for _, v in pairs)))
        return {"dict": dict, "ordereddict": OrderedDict, "counter": Counter}[tag](mapping)
    if tag == "int":
        try:
            return int(_field(data, "hex", str), 16)
        except ValueError as err:
            raise PlainDataError(f"invalid int: {str(err)[:100]}") from err
    if tag == "complex":
        return complex(_field(data, "re", (int, float)), _field(data, "im", (int, float)))
    if tag == "bytes":
        try:
            return bytes.fromhex(_field(data, "hex", str))
        except ValueError as err:
            raise PlainDataError(f"invalid bytes: {str(err)[:100]}") from err
    if tag in ("ndarray", "npscalar"):
        return _decode_numpy(data, tag, _depth)
    if tag == "opaque":
        return Opaque(_field(data, "type", str)[:100])
    raise PlainDataError(f"unknown tag {str(tag)[:50]!r}")


def _field(data: dict, name: str, types: type | tuple[type, ...]) -> Any:
    value = data.get(name)
    if not isinstance(value, types) or type(value) is bool:
        raise PlainDataError(f"tag {str(data.get('$'))[:50]!r}: field {name!r} missing or of the wrong type")
    return value


def _hashed(items: list[Any]) -> list[Any]:
    """`items`, checked to be hashable and not crafted to collide.

    Int, float and tuple hashes are predictable, so hostile text can list thousands of distinct values
    with one hash, and building a set or dict of them takes quadratic time in the harness. Honest outputs
    essentially never have more than a handful of items per hash value.
    """
    try:
        counts = Counter(hash(item) for item in items)
    except TypeError as err:
        raise PlainDataError(f"unhashable set item or dict key: {str(err)[:100]}") from err
    if counts and max(counts.values()) > MAX_HASH_COLLISIONS:
        raise PlainDataError(f"more than {MAX_HASH_COLLISIONS} set items or dict keys share one hash value")
    return items


def _decode_numpy(data: dict, tag: str, depth: int) -> Any:
    import numpy

    dtype = _field(data, "dtype", str)
    try:
        np_dtype = numpy.dtype(dtype)
    except TypeError as err:
        raise PlainDataError(f"invalid numpy dtype {dtype[:50]!r}") from err
    if np_dtype.kind not in _NUMPY_KINDS or np_dtype.names is not None:
        raise PlainDataError(f"numpy dtype {dtype[:50]!r} is not allowed")
    try:
        if tag == "npscalar":
            return np_dtype.type(decode(data.get("value"), depth + 1))
        shape = _field(data, "shape", list)
        if not all(type(n) is int and n >= 0 for n in shape):
            raise PlainDataError("invalid ndarray shape")
        return numpy.array(decode(_field(data, "items", list), depth + 1), dtype=np_dtype).reshape(shape)
    except (TypeError, ValueError, OverflowError) as err:
        raise PlainDataError(f"invalid numpy value: {str(err)[:100]}") from err
