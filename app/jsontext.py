"""Strings from a client's JSON that no response, database or socket can carry.

JSON's `\\ud800` escapes are legal syntax, and Python's parser turns an unpaired one into a lone
surrogate: a `str` that cannot be encoded as UTF-8. Stored, it broke every later answer that
showed it (an item's metadata made its catalog's listing a 500 until the catalog was deleted);
bound into SQLite or written in an error message, it was a 500 at once. `json.loads` of bytes
also lets UTF-8-encoded surrogates through ('surrogatepass'). Every JSON body is checked once,
right after parsing, so no code behind it meets such a string.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any, Final

# A `\uD800`-`\uDFFF` escape (paired escapes match too: the walk decides), or the UTF-8 bytes of
# a surrogate (ED A0-BF xx), which strict UTF-8 never contains.
_ESCAPE: Final = r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}"
_TEXT_HINT: Final = re.compile(_ESCAPE + "|[\ud800-\udfff]")
_BYTES_HINT: Final = re.compile(_ESCAPE.encode() + rb"|\xed[\xa0-\xbf]")
_WALKED: Final = (str, dict, list)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _unencodable(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def lone_surrogate_at(raw: bytes | str, value: Any) -> str | None:
    """Where `value` (parsed from `raw`) holds a string with an unpaired surrogate, as a path
    like `$.items[2].metadata` (a key is reported as its object), or None. Documents whose
    text shows no sign of one are not walked (the walk costs about 20 ns per value)."""
    if isinstance(raw, str):
        if not _TEXT_HINT.search(raw):
            return None
    elif json.detect_encoding(raw) == "utf-8" and not _BYTES_HINT.search(raw):
        return None  # (UTF-16/32 documents are rare: always walked)
    stack: list[tuple[Any, str]] = [(value, "$")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if _unencodable(node):
                return path
        elif isinstance(node, dict):
            for k, v in node.items():
                if _unencodable(k):
                    return path
                if isinstance(v, _WALKED):
                    stack.append((v, f"{path}.{k[:40]}"))
        elif isinstance(node, list):  # numbers are skipped without building their path
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node) if isinstance(v, _WALKED))
    return None


class RepeatedKey(ValueError):
    """An object of a client's JSON gives one key twice: `json.loads` keeps the last value in
    silence (a create with two "name"s made the second catalog), so which was meant is unknown."""

    def __init__(self, key: str, path: str) -> None:
        super().__init__(f"the key {_shown(key)} is given more than once in the object at {path}")
        self.key = key
        self.path = path


class _Repeated(dict[str, Any]):
    """An object with a repeated key, marked while parsing and found by the walk after it."""

    key: str = ""


def loads_unique(text: bytes | str, **kwargs: Any) -> Any:
    """`json.loads(text, **kwargs)` that raises RepeatedKey, naming the path of the object
    (`$.items[0].metadata`), when an object gives a key twice. The hook marks such objects;
    the document is walked only when one was marked."""
    marked: list[bool] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) == len(items):
            return obj
        seen: set[str] = set()
        rep = _Repeated(obj)
        for k, _ in items:
            if k in seen:
                rep.key = k
                break
            seen.add(k)
        marked.append(True)
        return rep

    value = json.loads(text, object_pairs_hook=pairs, **kwargs)
    if marked:
        _raise_repeated(value)
    return value


def _shown(key: str) -> str:
    """A key for a message: quoted, at most 40 characters, escapes for what is not printable."""
    short = key[:40] + ("..." if len(key) > 40 else "")
    return ascii(short) if _unencodable(short) or not short.isprintable() else repr(short)


def _raise_repeated(value: Any) -> None:
    stack: list[tuple[Any, str]] = [(value, "$")]
    while stack:  # depth first, in document order
        node, path = stack.pop()
        if isinstance(node, _Repeated):
            raise RepeatedKey(node.key, path)
        if isinstance(node, dict):
            kids = [(v, f"{path}.{_segment(k)}") for k, v in node.items()]
        elif isinstance(node, list):
            kids = [(v, f"{path}[{i}]") for i, v in enumerate(node)]
        else:
            continue
        stack.extend(kid for kid in reversed(kids) if isinstance(kid[0], (dict, list)))


def _segment(key: str) -> str:
    short = key[:40]
    return short if short.isprintable() and not _unencodable(short) else ascii(short)


def repeated_key_message(where: str, exc: RepeatedKey) -> str:
    return (
        f"{where} gives the key {_shown(exc.key)} more than once (at "
        f"{exc.path}.{_segment(exc.key)}): JSON object keys must be unique here (a parser "
        "would keep one of the values in silence). Send each key once."
    )


def stored_json(text: str) -> Any:
    """json.loads of a document this service stored itself. Versions before the check above
    stored unpaired surrogates (ASCII-escaped, so the write worked); they are read back as
    U+FFFD, so the item answers again instead of failing every response that shows it."""
    value = json.loads(text)
    if lone_surrogate_at(text, value) is None:
        return value
    return _scrub(value)


def _scrub(node: Any) -> Any:
    if isinstance(node, str):
        return _SURROGATE.sub("\ufffd", node)
    if isinstance(node, dict):
        return {_scrub(k): _scrub(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_scrub(v) for v in node]
    return node


def surrogate_message(where: str, path: str) -> str:
    return (
        f"{where} holds a string with an unpaired UTF-16 surrogate (a lone \\ud800-\\udfff "
        f"escape) at {path}: it is not text. Send valid Unicode (a character outside the basic "
        "plane is written as a pair of escapes, or as its UTF-8 bytes)."
    )


def whole(value: Any) -> int | None:
    """`value` as an integer the way JSON Schema counts one: 2, or 2.0 (Python's json.dumps
    writes a float so; other clients send what their numbers hold), else None: true, 2.5,
    a string, NaN and infinity are not integers."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def too_many_digits(exc: BaseException) -> str | None:
    """What to say of json.loads refusing an integer literal longer than int() takes (its own
    message names a Python setting), or None for any other error."""
    if isinstance(exc, ValueError) and "int_max_str_digits" in str(exc):
        return f"holds an integer of more than {sys.get_int_max_str_digits():,} digits"
    return None


class NotJson(ValueError):
    """Text Python's parser takes that JSON does not have (loads_strict)."""


def _finite_float(literal: str) -> float:
    """A number literal beyond float64 (1e400) became inf, stored as `Infinity` (not JSON) and
    answered as null: refused like the NaN and Infinity keywords."""
    value = float(literal)
    if not math.isfinite(value):
        raise NotJson(f"the number {literal[:40]} is beyond what a 64-bit float holds.")
    return value


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (Python's parser takes them; stored, NaN became null)."""
    raise NotJson(f"{name} is not a JSON value (RFC 8259 has no NaN or Infinity).")


def loads_strict(text: bytes | str) -> Any:
    """loads_unique that also refuses NaN, Infinity and numbers beyond float64 (NotJson)."""
    return loads_unique(text, parse_constant=_no_constant, parse_float=_finite_float)


def json_kind(value: Any) -> str:
    """What a parsed JSON value is, as a client would say it ("a string", "null", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    kinds = {str: "a string", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return kinds.get(type(value), "a value of another kind")
