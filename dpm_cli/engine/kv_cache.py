"""A decoder's key/value cache is no part of what torch-pruning traces: it is switched off meanwhile.

A transformers decoder whose config says `use_cache: True` (GPT-2's default) returns its key/value
cache, grown by `torch.cat([cache, key_states])` onto an empty tensor. torch-pruning 1.6.1 cannot
infer that concat's channels (the empty tensor is no node of its graph, and GPT-2's keys reach it
through view + transpose): `_ConcatIndexMapping` adds None and tracing fails. The cache holds no
parameters, so the graph is the same without it; `hf.load_hf` switches it off for the CLI too.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch.nn as nn


def cached_scopes(config: Any) -> list[str | None]:
    """Where a config turns the cache on: None for the config itself, a part's name ("text_config") for a
    composite model's language model (LLaVA, PaliGemma), whose own config has no use_cache."""
    scopes: list[str | None] = [None] if getattr(config, "use_cache", False) else []
    for name in getattr(config, "sub_configs", None) or {}:
        if getattr(getattr(config, name, None), "use_cache", False):
            scopes.append(name)
    return scopes


def set_cache(config: Any, scopes: list[str | None], value: bool) -> None:
    for scope in scopes:
        setattr(config if scope is None else getattr(config, scope), "use_cache", value)


@contextmanager
def cache_off(model: nn.Module) -> Iterator[None]:
    """`use_cache` False for the duration in the model's config and its parts' (transformers models only),
    then as it was."""
    config = getattr(model, "config", None)
    scopes = cached_scopes(config) if config is not None else []
    set_cache(config, scopes, False)
    try:
        yield
    finally:
        set_cache(config, scopes, True)
