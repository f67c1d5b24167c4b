"""How a sentence-transformers folder pools its token states into one sentence embedding.

A sentence encoder is served through its Pooling module (modules.json names it; its config.json says
how): mean over the tokens for all-MiniLM, the first token for BGE, mxbai and Arctic, the last token for
decoder embedders (e5-mistral, Qwen3-Embedding). Distilling or comparing the mean of a model that serves
its first token trains and gates something its users never see, so the `embedding` target, the val
cosine and `dpm check --min-cosine` pool as the folder does. Mean (attention-mask aware) when the folder
says nothing. The arithmetic follows sentence-transformers' `Pooling` (padded inputs, no prompts).

Text is lowercased first where the folder's sentence_bert_config.json says `do_lower_case` (its
Transformer module lowercases whatever the tokenizer does). The modules after the Pooling are applied too
where they are plain arithmetic: a `Dense` projection (LaBSE, distiluse, sentence-t5: its weights read
from safetensors, its activation a torch.nn class named in its config, so no code from the folder runs)
and `Normalize`. Both models share them unchanged (dpm keeps the hidden width), but a tanh projection
moves the cosine: the gate measures what users are served.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

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


@dataclass(frozen=True, eq=False)  # tensors inside: compared by identity, not elementwise
class Projection:
    """One module sentence-transformers runs on the pooled embedding: a Dense layer
    (activation(W x + b)) or, with no weight, Normalize."""
    path: str
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    activation: str = "Identity"  # a class of torch.nn, built with no arguments

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return F.normalize(x, p=2, dim=-1)
        if x.shape[-1] != self.weight.shape[1]:
            raise CheckpointError(f"{self.path} takes {self.weight.shape[1]} values but the pooled sentence embedding "
                                  f"has {x.shape[-1]}: the folder's modules.json does not fit its model")
        bias = None if self.bias is None else self.bias.to(x)
        return getattr(nn, self.activation)()(F.linear(x, self.weight.to(x), bias))


@dataclass(frozen=True, eq=False)
class SentencePooling:
    """How a folder's pipeline turns token states into the embedding it serves."""
    modes: tuple[str, ...] = MEAN
    projections: tuple[Projection, ...] = ()


Pooling = Union[tuple[str, ...], SentencePooling]


def folder_projections(folder: str | Path) -> tuple[tuple[Projection, ...], list[str]]:
    """The modules after the Pooling, in order, as far as dpm can apply them; and the paths it cannot
    apply with why (an unknown module, a pickled Dense, a custom activation): the embedding is then
    compared before the first of them."""
    folder = Path(folder)
    modules = st_modules(folder)
    types = [str(m.get("type", "")) for m in modules]
    start = next((i for i, t in enumerate(types) if t.endswith(".Pooling")), None)
    later = list(zip(modules, types))[start + 1:] if start is not None else []
    applied: list[Projection] = []
    skipped: list[str] = []
    for i, (module, kind) in enumerate(later):
        step, why = _projection(folder, _path(module, kind), kind)
        if step is None:
            skipped = [f"{_path(module, kind)} ({why})"] + [_path(m, t) for m, t in later[i + 1:]
                                                            if not t.endswith(".Normalize")]
            break
        applied.append(step)
    while applied and applied[-1].weight is None:  # a last Normalize leaves the cosine as it is, and the
        applied.pop()                              # MSE targets keep the scale they had
    return tuple(applied), skipped


def _path(module: dict, kind: str) -> str:
    return str(module.get("path") or kind.rsplit(".", 1)[-1])[:40]


def after_pooling(folder: str | Path) -> list[str]:
    """The modules after the Pooling that dpm does not apply (see folder_projections), with why."""
    return folder_projections(folder)[1]


def _projection(folder: Path, path: str, kind: str) -> tuple[Projection | None, str]:
    if kind.endswith(".Normalize"):
        return Projection(path), ""
    if not kind.endswith(".Dense"):
        return None, f"a {kind.rsplit('.', 1)[-1] or 'module'} dpm does not run"
    if Path(path).is_absolute() or ".." in Path(path).parts:
        return None, "a path outside the folder"
    config = _json(folder / path / "config.json")
    weights = folder / path / "model.safetensors"
    if not isinstance(config, dict):
        return None, "no readable config.json"
    if not weights.is_file():
        return None, "no model.safetensors; a pickled Dense is not loaded"
    activation = str(config.get("activation_function", "torch.nn.modules.activation.Tanh"))  # its default
    name = activation.rsplit(".", 1)[-1]
    cls = getattr(nn, name, None)  # an activation of torch.nn's, or Identity: built with no arguments
    if not (activation.startswith("torch.nn.modules.") and isinstance(cls, type)
            and (cls.__module__ == "torch.nn.modules.activation" or cls is nn.Identity)):
        return None, f"activation {activation[:80]!r} is no torch.nn activation"
    shape = (config.get("out_features"), config.get("in_features"))
    try:  # the shapes from the header first: only the two tensors named, of the size config.json says, are read
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            names = set(f.keys())
            sizes = {n: tuple(f.get_slice(n).get_shape()) for n in ("linear.weight", "linear.bias") if n in names}
            if sizes.get("linear.weight") != shape or sizes.get("linear.bias", shape[:1]) != shape[:1]:
                return None, f"linear.weight is not {shape[0]} x {shape[1]} as config.json says"
            weight, bias = (f.get_tensor(n) if n in names else None for n in ("linear.weight", "linear.bias"))
    except Exception as err:  # noqa: BLE001 - any unreadable file: compare before it, as before
        return None, f"model.safetensors unreadable ({type(err).__name__})"
    return Projection(path, weight.float(), None if bias is None else bias.float(), name), ""


def served_length(folder: str | Path) -> int | None:
    """The most tokens a sentence-transformers folder embeds a text with (sentence_bert_config.json's
    max_seq_length: 256 for all-MiniLM-L6-v2), or None."""
    length = _transformer_config(folder).get("max_seq_length")
    return length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else None


# Set by hf.load on the tokenizer of a folder that lowercases (served_lowercase). sentence-transformers puts a
# Lowercase normalizer into the tokenizer; dpm lowercases the text instead, so that the tokenizer it saves
# into the pruned folder is the one it read.
LOWERCASED = "_dpm_lower_case"


def as_served(texts: list, tokenizer: Any) -> list:
    """`texts` (strings, pairs of strings or lists of words) lowercased when `tokenizer` is that of a
    folder whose sentence-transformers pipeline lowercases them; else `texts` itself."""
    if not getattr(tokenizer, LOWERCASED, False):
        return texts
    return [t.lower() if isinstance(t, str) else type(t)(as_served(list(t), tokenizer)) for t in texts]


def served_lowercase(folder: str | Path) -> bool:
    """Whether a sentence-transformers folder lowercases text before its tokenizer sees it
    (sentence_bert_config.json's do_lower_case), as its Transformer module does whatever the tokenizer does."""
    return _transformer_config(folder).get("do_lower_case") is True


def _transformer_config(folder: str | Path) -> dict:
    """The folder's sentence_bert_config.json (its Transformer module's settings), {} without a readable one."""
    config = _json(Path(folder) / "sentence_bert_config.json") if Path(folder).is_dir() else None
    return config if isinstance(config, dict) else {}


def pooling_of(*models: nn.Module | None) -> Pooling:
    """The pooling load_hf found in the first of `models` that came from a sentence-transformers folder."""
    found = next((m for m in models if getattr(m, "_dpm_pooling", None) or getattr(m, "_dpm_projections", None)),
                 None)
    if found is None:
        return MEAN
    modes = getattr(found, "_dpm_pooling", None) or MEAN
    projections = getattr(found, "_dpm_projections", ())
    return SentencePooling(modes, projections) if projections else modes


def pool(hidden: torch.Tensor, inputs: Any, pooling: Pooling = MEAN) -> torch.Tensor:
    """Sentence embeddings (batch, width x modes, or what the projections make of it) from token states
    (batch, tokens, width)."""
    modes, projections = ((pooling.modes, pooling.projections) if isinstance(pooling, SentencePooling)
                          else (pooling, ()))
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
    embedding = torch.cat(vectors, dim=-1)
    for projection in projections:
        embedding = projection(embedding)
    return embedding


# sentence-transformers' settings files are under a KB; only dpm reads them (transformers does not), so a
# file past this is not read into memory but treated as unreadable, as a file that is not JSON is.
MAX_SETTINGS_BYTES = 1 << 20


def _json(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_SETTINGS_BYTES:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: nested past any data
        return None
