"""Hugging Face transformers models from a plain config dict: the form a dpm artifact may name.

`from_config("BertForSequenceClassification", {"hidden_size": 64, ...})` builds the class with random
weights from `cls.config_class(**config)`: no hub look-up, no download, no remote code. It is on the
artifact allow-list (`dpm_cli.trust`), unlike `from_pretrained`, which reads files and fetches from the hub.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from dpm_cli.errors import ConfigError

# Config keys that point at files, the hub or remote code; a config dict never needs them to build a model.
_REFUSED = frozenset({"auto_map", "trust_remote_code", "_name_or_path", "name_or_path", "_commit_hash"})


def from_config(architecture: str, config: dict[str, Any] | None = None) -> nn.Module:
    """Build transformers' `architecture` (a PreTrainedModel class name) from plain config values."""
    import transformers

    cls = getattr(transformers, architecture, None) if str(architecture).isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)
            and cls.__module__.startswith("transformers.models.")):
        raise ConfigError(f"{architecture!r} is not a transformers model class (e.g. 'BertForSequenceClassification')")
    values = dict(config or {})
    refused = sorted(_REFUSED & set(values))
    if refused:
        raise ConfigError(f"transformers config keys {refused} name files or remote code; remove them")
    return cls(cls.config_class(**values))
