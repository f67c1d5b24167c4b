"""How a sentence-transformers folder pools its token states into one sentence embedding.

A sentence encoder is served through its Pooling module (modules.json names it; its config.json says
how): mean over the tokens for all-MiniLM, the first token for BGE, mxbai and Arctic, the last token for
decoder embedders (e5-mistral, Qwen3-Embedding). Distilling or comparing the mean of a model that serves
its first token trains and gates something its users never see, so the `embedding` target, the val
cosine and `dpm check --min-cosine` pool as the folder does. Mean (attention-mask aware) when the folder
says nothing. The arithmetic follows sentence-transformers' `Pooling` (padded inputs, no prompts).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import CheckpointError

MEAN = ("mean",)
MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# sentence-transformers' older configs: one flag per mode, concatenated in this order
LEGACY = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
          "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
          "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


def st_modules(folder: str | Path) -> list[dict]:
    """The modules a sentence-transformers folder's modules.json lists, in order ([] without one)."""
    modules = _json(Path(folder) / "modules.json")
    return [m for m in modules if isinstance(m, dict)] if isinstance(modules, list) else []


def folder_pooling(folder: str | Path) -> tuple[str, ...] | None:
    """The modes of the folder's sentence-transformers Pooling module, or None when it has none."""
    folder = Path(folder)
    module = next((m for m in st_modules(folder) if str(m.get("type", "")).endswith(".Pooling")), None)
    if module is None:
        return None
    path = str(module.get("path") or "")
    config = _json(folder / path / "config.json") if path and ".." not in Path(path).parts else None
    if not isinstance(config, dict):
        return None  # sentence-transformers' own default, as for a Pooling without settings
    modes = config.get("pooling_mode")
    if modes is None:
        modes = tuple(mode for key, mode in LEGACY.items() if config.get(key))
    modes = (modes,) if isinstance(modes, str) else tuple(modes) if isinstance(modes, list) else modes
    unknown = [m for m in modes or () if m not in MODES]
    if not modes or unknown:
        raise CheckpointError(f"{folder / path / 'config.json'}: pooling mode {(unknown or [modes])[0]!r} is not one "
                              f"of sentence-transformers' {', '.join(MODES)}")
    return modes


def after_pooling(folder: str | Path) -> list[str]:
    """The modules sentence-transformers runs on the pooled embedding other than its normalisation (a
    Dense projection: LaBSE, sentence-t5), by path: dpm compares the embedding before them."""
    modules = st_modules(folder)
    types = [str(m.get("type", "")) for m in modules]
    start = next((i for i, t in enumerate(types) if t.endswith(".Pooling")), None)
    if start is None:
        return []
    return [str(m.get("path") or t.rsplit(".", 1)[-1])[:40] for m, t in zip(modules[start + 1:], types[start + 1:])
            if not t.endswith(".Normalize")]


def pooling_of(*models: nn.Module | None) -> tuple[str, ...]:
    """The pooling load_hf found in the first of `models` that came from a sentence-transformers folder."""
    return next((m._dpm_pooling for m in models if getattr(m, "_dpm_pooling", None)), MEAN)


def pool(hidden: torch.Tensor, inputs: Any, modes: tuple[str, ...] = MEAN) -> torch.Tensor:
    """Sentence embeddings (batch, width x modes) from token states (batch, tokens, width)."""
    mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
    mask = hidden.new_ones(hidden.shape[:2]) if mask is None else mask[:, : hidden.shape[1]].to(hidden.dtype)
    kept = mask.unsqueeze(-1)
    vectors = []
    for mode in modes:
        if mode == "cls":  # the first kept token (left padding: not position 0)
            vectors.append(hidden[torch.arange(len(hidden)), mask.argmax(dim=1)])
        elif mode == "max":
            vectors.append(hidden.masked_fill(kept == 0, float("-inf")).max(dim=1).values)
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            count = kept.sum(dim=1).clamp_min(1e-9)
            vectors.append((hidden * kept).sum(dim=1) / (count if mode == "mean" else count.sqrt()))
        elif mode == "weightedmean":  # position weights 1, 2, ... counted from the first kept token
            weights = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype).view(1, -1, 1)
            weights = kept * (weights - mask.argmax(dim=1).view(-1, 1, 1))
            vectors.append((hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-9))
        elif mode == "lasttoken":  # the last kept token (right padding: before the pads)
            last = hidden.shape[1] - 1 - mask.flip(1).argmax(dim=1)
            vectors.append((hidden * kept)[torch.arange(len(hidden)), last])
        else:
            raise ValueError(f"unknown pooling mode {mode!r}")
    return torch.cat(vectors, dim=-1)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: nested past any data
        return None
