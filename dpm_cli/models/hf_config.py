"""Hugging Face transformers models from a plain config dict: the form a dpm artifact may name.

`from_config("BertForSequenceClassification", {"hidden_size": 64, ...})` builds the class with random
weights from `cls.config_class(**config)`: no hub look-up, no download, no remote code. It is on the
artifact allow-list (`dpm_cli.trust`), unlike `from_pretrained`, which reads files and fetches from the hub.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from dpm_cli.errors import ConfigError

# Config keys that point at files, the hub or remote code; a config dict never needs them to build a
# model. Refused at any depth (a composite model nests its text/vision configs).
REFUSED = frozenset({"auto_map", "trust_remote_code", "_name_or_path", "name_or_path", "_commit_hash"})
# Attention implementations that are transformers' own code; any other value names a hub kernel
# ("kernels-community/...") or another package, which building the model would fetch or import.
ATTENTION = (None, "eager", "sdpa")
_ATTENTION_KEYS = ("attn_implementation", "_attn_implementation", "_attn_implementation_internal")


def config_problem(config: Any, where: str = "config") -> str | None:
    """Why `config` may not be built from, or None: a refused key at any depth, or an attention
    implementation that is not transformers' own. Reads the dict only; imports nothing."""
    if isinstance(config, dict):
        for key, value in config.items():
            if key in REFUSED:
                return f"{where}.{key} names files or remote code"
            if key in _ATTENTION_KEYS and value not in ATTENTION:
                return f"{where}.{key}={value!r:.60} is not one of transformers' own attention implementations {ATTENTION}"
            why = config_problem(value, f"{where}.{key}")
            if why:
                return why
    elif isinstance(config, list):
        for i, value in enumerate(config):
            why = config_problem(value, f"{where}[{i}]")
            if why:
                return why
    return None


def from_config(architecture: str, config: dict[str, Any] | None = None) -> nn.Module:
    """Build transformers' `architecture` (a PreTrainedModel class name) from plain config values."""
    if not isinstance(config, (dict, type(None))):
        raise ConfigError(f"config must be a mapping of config keys to values, got {type(config).__name__}")
    why = config_problem(dict(config or {}))
    if why:
        raise ConfigError(f"transformers {why}; remove it")
    from ..hf.load import import_transformers

    transformers = import_transformers()  # transformers 5, or one line

    name = str(architecture)
    cls = getattr(transformers, name, None) if name.isidentifier() and not name.startswith("_") else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)
            and cls.__module__.startswith("transformers.models.")):
        raise ConfigError(f"{architecture!r:.80} is not a transformers model class (e.g. 'BertForSequenceClassification')")
    return cls(cls.config_class(**dict(config or {})))
