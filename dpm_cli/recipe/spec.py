"""Field specs: how one recipe value is typed, bounded and explained.

A `Spec` rides in `dataclasses.field(metadata=...)` so the schema in `schema.py` stays one line per
key, and the loader, the override parser and `describe_schema` all read the same description.
`Spec.convert` turns a parsed YAML value into the stored value or raises `Problem`; it knows
nothing about files or line numbers, so the loader adds those.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from ..escaping import printable

# PyYAML follows YAML 1.1, where `1e-3` (no dot) is a *string*; people write it for learning
# rates all the time, so number fields accept such strings instead of failing on them.
_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

_NOUNS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "path": "a file path",
    "mapping": "a mapping of keyword arguments",
    "list": "a list",
}


class Problem(Exception):
    """A value breaks its spec. `subpath` (e.g. '[2]') points at the offending list item."""

    def __init__(self, message: str, subpath: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.subpath = subpath


@dataclass(frozen=True)
class Spec:
    """Type and constraints of one leaf key. `kind` is a key of `_NOUNS`."""

    kind: str
    help: str = ""
    choices: tuple[str, ...] = ()
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    nullable: bool = False
    item: Spec | None = None  # spec of each element when kind == "list"
    length: int | None = None  # exact list length
    min_len: int = 0
    unique: bool = False
    check: Callable[[Any], str | None] | None = None  # extra rule: returns a problem or None
    fix: str = ""  # how to fix a range error; defaults to the help text

    def convert(self, value: Any) -> Any:
        """Return the value to store (tuples for lists, floats for numbers) or raise `Problem`."""
        if value is None:
            if self.nullable:
                return None
            raise Problem(f"null is not allowed here; give {self.expected()} or remove the key to use the default")
        value = _CONVERTERS[self.kind](self, value)
        if self.kind in ("int", "float"):
            self._check_range(value)
        if self.choices and value not in self.choices:
            raise Problem(f"{show(value)} is not one of {' | '.join(self.choices)}{_did_you_mean(value, self.choices)}")
        problem = self.check(value) if self.check else None
        if problem:
            raise Problem(problem)
        return value

    def expected(self) -> str:
        """A short phrase for messages: 'a number in (0, 1]', 'one of sgd | adamw', ..."""
        if self.choices:
            return f"one of {' | '.join(self.choices)}"
        text = _NOUNS[self.kind]
        if self.kind == "list" and self.item is not None:
            count = f"{self.length} items" if self.length else "items"
            text = f"a list of {count}, each {self.item.expected()}"
        bounds = self.bounds()
        if not bounds:
            return text
        return f"{text} in {bounds}" if "," in bounds else f"{text} {bounds}"

    def bounds(self) -> str:
        """'(0, 1]' for two-sided ranges, '>= 1' for one-sided ones, '' for none."""
        lo = f"({_num(self.gt)}" if self.gt is not None else f"[{_num(self.ge)}" if self.ge is not None else ""
        hi = f"{_num(self.lt)})" if self.lt is not None else f"{_num(self.le)}]" if self.le is not None else ""
        if lo and hi:
            return f"{lo}, {hi}"
        if lo:
            return f"{'>' if lo[0] == '(' else '>='} {lo[1:]}"
        if hi:
            return f"{'<' if hi[-1] == ')' else '<='} {hi[:-1]}"
        return ""

    def _check_range(self, v: float) -> None:
        ok = (
            (self.gt is None or v > self.gt)
            and (self.ge is None or v >= self.ge)
            and (self.lt is None or v < self.lt)
            and (self.le is None or v <= self.le)
        )
        if not ok:
            where = f"out of range {self.bounds()}" if "," in self.bounds() else f"out of range: must be {self.bounds()}"
            raise Problem(f"{show(v)} is {where}; {self.fix or self.help}")


def _type_error(spec: Spec, value: Any) -> Problem:
    hint = ""
    if isinstance(value, bool):  # YAML 1.1 reads yes/no/on/off as booleans
        hint = " (YAML reads yes/no/on/off as true/false; quote the word if you meant text)"
    elif spec.kind == "list" and isinstance(value, str):
        hint = f"; write it as a list, e.g. [{printable(value, 40)}]"
    elif spec.kind in ("str", "path") and isinstance(value, (int, float)):
        hint = f"; quote it: '{printable(value, 40)}'"
    return Problem(f"expected {_NOUNS[spec.kind]}, got {show(value)}{hint}")


def _to_int(spec: Spec, v: Any) -> int:
    if isinstance(v, str) and _SCIENTIFIC.fullmatch(v.strip()):  # 1e5 steps: YAML 1.1 reads a string
        number = float(v)
        if math.isfinite(number) and number == int(number):
            v = int(number)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _type_error(spec, v)
    return v


def _to_float(spec: Spec, v: Any) -> float:
    if isinstance(v, str) and _SCIENTIFIC.fullmatch(v.strip()):
        v = float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _type_error(spec, v)
    if not math.isfinite(v):
        raise Problem(f"expected a finite number, got {show(v)}")
    return float(v)


def _to_bool(spec: Spec, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _type_error(spec, v)
    return v


def _to_str(spec: Spec, v: Any) -> str:
    if not isinstance(v, str):
        raise _type_error(spec, v)
    if not v.strip():
        raise Problem(f"is an empty string; give {spec.expected()}")
    return v


def _to_mapping(spec: Spec, v: Any) -> dict:
    if not isinstance(v, dict):
        raise _type_error(spec, v)
    bad = [k for k in v if not isinstance(k, str)]
    if bad:
        raise Problem(f"keyword names must be strings, got {show(bad[0])}; quote it")
    return _deep_copy(v)


def _to_list(spec: Spec, v: Any) -> tuple:
    if not isinstance(v, (list, tuple)):
        raise _type_error(spec, v)
    if spec.length is not None and len(v) != spec.length:
        raise Problem(f"expected {spec.expected()}, got {len(v)} item(s)")
    if len(v) < spec.min_len:
        raise Problem(f"must not be empty; give {spec.expected()}")
    items = []
    for i, element in enumerate(v):
        try:
            items.append(spec.item.convert(element) if spec.item else element)
        except Problem as p:
            raise Problem(p.message, f"[{i}]{p.subpath}") from None
        if spec.unique and items[-1] in items[:-1]:
            raise Problem(f"{show(element)} is listed twice; list each entry once", f"[{i}]")
    return tuple(items)


_CONVERTERS: dict[str, Callable[[Spec, Any], Any]] = {
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "str": _to_str,
    "path": _to_str,  # the loader resolves and checks the file; here it is only a string
    "mapping": _to_mapping,
    "list": _to_list,
}


def _deep_copy(v: Any) -> Any:
    # Copy so that a caller mutating the parsed YAML cannot change a built Recipe.
    if isinstance(v, dict):
        return {k: _deep_copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_deep_copy(x) for x in v]
    return v


def _num(x: float | None) -> str:
    return f"{x:g}"


def _did_you_mean(word: Any, options: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(str(word).lower(), [o.lower() for o in options], n=1)
    if not close:
        return ""
    original = next(o for o in options if o.lower() == close[0])
    return f"; did you mean '{original}'?"


def unknown_key_message(key: Any, valid: list[str]) -> str:
    """'unknown key; did you mean ...?' or, with no close match, the list of valid keys."""
    hint = _did_you_mean(key, valid)
    return f"unknown key{hint}" if hint else f"unknown key; valid keys here: {', '.join(valid)}"


def show(value: Any) -> str:
    """A value the way the user wrote it in YAML: 'fast', true, null, 1.5, [1, 2]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
    if isinstance(value, (list, tuple)):
        text = "[" + ", ".join(show(v) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{printable(k, 40)}: {show(v)}" for k, v in value.items()) + "}"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def opt(default: Any, kind: str, help: str, **constraints: Any) -> Any:
    """A leaf field. Null is allowed when the default is null unless `nullable` says otherwise."""
    constraints.setdefault("nullable", default is None)
    meta = {"spec": Spec(kind, help, **constraints)}
    if isinstance(default, list):  # lists are stored as tuples so that a Recipe stays immutable
        default = tuple(default)
    if isinstance(default, dict):  # dataclasses refuse mutable defaults; give each Recipe its own
        return dataclasses.field(default_factory=lambda: _deep_copy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type) -> Any:
    """A nested section: a dataclass whose fields are themselves `opt` or `section` fields."""
    return dataclasses.field(default_factory=cls, metadata={"section": cls})


def fields_of(cls: type) -> dict[str, dataclasses.Field]:
    """The keys valid in a section, in schema order."""
    return {f.name: f for f in dataclasses.fields(cls)}


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
