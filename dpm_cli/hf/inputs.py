"""Example inputs for token models: a sample sentence from the model's own tokenizer, padded to a stated length."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError

# Costs are measured on this sentence padded to model.seq_len: MACs grow with the sequence length,
# so every report states the length it counted at.
SAMPLE_TEXT = "Pruning removes whole channels from a trained network while it keeps learning."


def is_hf_model(model: nn.Module) -> bool:
    """A transformers `PreTrainedModel` (checked by duck type: transformers is imported lazily)."""
    return hasattr(model, "config") and hasattr(model, "save_pretrained") and hasattr(model.config, "to_dict")


def token_example(tokenizer: Any, seq_len: int, batch: int = 1) -> dict[str, torch.Tensor]:
    """The tokenizer's encoding of SAMPLE_TEXT, padded (or truncated) to `seq_len` tokens."""
    if tokenizer is None:
        raise ConfigError("the model folder has no tokenizer, so dpm cannot build token inputs; "
                          "save the tokenizer into the folder (tokenizer.save_pretrained)")
    enc = tokenizer([SAMPLE_TEXT] * batch, padding="max_length", truncation=True, max_length=seq_len,
                    return_tensors="pt")
    return {k: v for k, v in enc.items() if torch.is_tensor(v)}
