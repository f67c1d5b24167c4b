"""Command-line overrides: `key.path=value`, applied to the parsed YAML before validation.

The value is parsed as a YAML scalar or flow collection, so `0.25`, `adamw`, `[fc, layer1.*]`,
`{depth: 20}` and `null` mean what they mean in a recipe. Key paths are checked against the schema
here (with did-you-mean), because an override has no line the loader could point at; value
errors are left to the normal validation, which names the override instead of a line.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

import yaml

from ..errors import ConfigError
from ..escaping import printable
from .bounded_yaml import safe_load_bounded
from .schema import Recipe
from .spec import fields_of, unknown_key_message

_SEGMENT = re.compile(r"[^.=\s\[\]]+")
_EXAMPLE = "e.g. pruning.budget.keep=0.25"


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split 'a.b.c=value' into (['a', 'b', 'c'], parsed value); raise ConfigError if malformed."""
    shown = printable(text, 80)  # echoed in messages: escaped, cut
    if "=" not in text:
        raise ConfigError(f"override '{shown}': expected KEY.PATH=VALUE, {_EXAMPLE}")
    key, raw_value = (part.strip() for part in text.split("=", 1))
    keys = key.split(".")
    if not all(_SEGMENT.fullmatch(k) for k in keys):
        raise ConfigError(f"override '{shown}': '{printable(key, 60)}' is not a key path; write dotted keys, {_EXAMPLE}")
    if not raw_value:
        raise ConfigError(f"override '{shown}': no value after '='; write {key}=null to clear it")
    try:
        value = safe_load_bounded(raw_value, f"override '{shown}'")
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or getattr(err, "reason", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"override '{shown}': cannot parse the value '{printable(raw_value, 60)}' as YAML ({printable(problem)}); "
            "quote it or close its brackets"
        ) from None
    return keys, value


def check_key_path(keys: list[str], text: str) -> None:
    """Raise unless `keys` names a key of the schema (or a key inside a free-form mapping)."""
    cls: type = Recipe
    text = printable(text, 80)
    for depth, key in enumerate(keys):
        path = ".".join(keys[: depth + 1])
        known = fields_of(cls)
        if key not in known:
            raise ConfigError(f"override '{text}': {path}: {unknown_key_message(key, list(known))}")
        meta = known[key].metadata
        if "section" in meta:
            cls = meta["section"]
            continue
        if depth < len(keys) - 1 and meta["spec"].kind != "mapping":
            raise ConfigError(f"override '{text}': {path}: is a single value, not a section; write {path}=VALUE")
        return  # a leaf, or a path into a free-form mapping such as model.kwargs.depth


def apply_overrides(raw: dict, overrides: Sequence[str]) -> tuple[dict, dict[str, str]]:
    """Return (a copy of `raw` with the overrides applied, {key path: override text}).

    Later overrides win over earlier ones, as on most command lines.
    """
    if isinstance(overrides, str):  # a lone string would otherwise be iterated char by char
        overrides = [overrides]
    result = copy.deepcopy(raw)
    origins: dict[str, str] = {}
    for text in overrides:
        keys, value = parse_override(text)
        check_key_path(keys, text)
        _set(result, keys, value, text)
        origins[".".join(keys)] = text
    return result, origins


def _set(raw: dict, keys: list[str], value: Any, text: str) -> None:
    node = raw
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:  # absent, or an empty section such as `model:` in the file
            child = node[key] = {}
        if not isinstance(child, dict):
            path = ".".join(keys[: depth + 1])
            raise ConfigError(f"override '{printable(text, 80)}': {path} is not a mapping in the recipe; fix the recipe first")
        node = child
    node[keys[-1]] = value
