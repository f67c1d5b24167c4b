"""A decoder's key/value cache is no part of what torch-pruning traces: it is switched off meanwhile.

A transformers decoder whose config says `use_cache: True` (GPT-2's default) returns its key/value
cache, grown by `torch.cat([cache, key_states])` onto an empty tensor. torch-pruning 1.6.1 cannot
infer that concat's channels (the empty tensor is no node of its graph, and GPT-2's keys reach it
through view + transpose): `_ConcatIndexMapping` adds None and tracing fails. The cache holds no
parameters, so the graph is the same without it; `hf.load_hf` switches it off for the CLI too.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch.nn as nn


@contextmanager
def cache_off(model: nn.Module) -> Iterator[None]:
    """`model.config.use_cache` False for the duration (transformers models only), then as it was."""
    config = getattr(model, "config", None)
    if not getattr(config, "use_cache", False):
        yield
        return
    config.use_cache = False
    try:
        yield
    finally:
        config.use_cache = True
