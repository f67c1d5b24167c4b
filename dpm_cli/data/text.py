"""Text data for token models: local text (read by records.py), tokenised by the model's own tokenizer.

A pair of texts is tokenised as a pair; a list of words with a label per word is token classification
(words.py); a conversation is written out by the tokenizer's chat template (chat.py). Every example is
tokenised to at most `seq_len` tokens with an attention mask; batches are trimmed to their longest
example (padding columns cost MACs for nothing).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..errors import InputError
from ..pooling import as_served
from .bundle import DataBundle
from .chat import Chat, rendered
# read_text and label_names are this module's API too (callers read and tokenise through it)
from .records import Label, Text, class_names, form_of, label_names, read_text  # noqa: F401
from .split import split_indices, truncate_indices
from .words import aligned_labels, is_words


class TokenDataset(Dataset):
    """Tokenised examples: a dict of 1-D tensors, with its label as `(dict, label)` when labelled."""

    def __init__(self, encoded: dict[str, torch.Tensor], labels: torch.Tensor | None) -> None:
        self.encoded, self.labels = encoded, labels

    def __len__(self) -> int:
        return len(next(iter(self.encoded.values())))

    def __getitem__(self, index: int) -> Any:
        item = {k: v[index] for k, v in self.encoded.items()}
        return item if self.labels is None else (item, self.labels[index])


LARGE_TEXT = 20_000  # texts: tokenising them takes minutes (400,000 short ones: 100 s), said before it starts
TOKENISED_AT_ONCE = 4096  # texts per tokenizer call; only its tensors are kept (see _tokenised)


def token_dataset(texts: list[Text], labels: torch.Tensor | list[list[int]] | None, tokenizer: Any,
                  seq_len: int) -> TokenDataset:
    """`texts` tokenised to at most `seq_len` tokens each, with an attention mask (and `labels`); pairs
    as the tokenizer joins them ([CLS] a [SEP] b [SEP], token_type_ids), the longer cut first; lists of
    words with their labels at each word's first piece (words.py). Padded to `seq_len`, so the chunks
    tokenised one by one join into what one call would give."""
    words = bool(texts) and is_words(texts[0])
    chats = bool(texts) and isinstance(texts[0], Chat)
    texts = rendered(texts, tokenizer) if chats else texts  # the template's special tokens are in the text
    per_word = labels if words and labels is not None else None
    parts = [_tokenised(texts[i:i + TOKENISED_AT_ONCE], tokenizer, seq_len, words,
                        None if per_word is None else per_word[i:i + TOKENISED_AT_ONCE], not chats)
             for i in range(0, max(len(texts), 1), TOKENISED_AT_ONCE)]
    encoded = {k: torch.cat([p[0][k] for p in parts]) for k in parts[0][0]}
    return TokenDataset(encoded, labels if per_word is None else torch.cat([p[1] for p in parts]))


def _tokenised(texts: list[Text], tokenizer: Any, seq_len: int, words: bool, word_labels: list[list[int]] | None,
               special_tokens: bool = True) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The tensors of one tokenizer call (and the word labels aligned to them). Not the BatchEncoding:
    its per-token Rust encodings (strings, offsets) held 8 GB for a 70 MB file of 400,000 texts."""
    pairs = bool(texts) and isinstance(texts[0], tuple)
    if special_tokens:  # not a rendered chat: lowercasing would change its template's special tokens
        texts = as_served(texts, tokenizer)
    first, second = ([t[0] for t in texts], [t[1] for t in texts]) if pairs else (texts, None)
    enc = tokenizer(first, second, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt",
                    is_split_into_words=words, add_special_tokens=special_tokens)
    aligned = aligned_labels(enc, word_labels) if word_labels is not None else None
    return {k: v for k, v in enc.items() if torch.is_tensor(v)}, aligned


def label_kind(labels: torch.Tensor | list | None, num_classes: int | None) -> str:
    """How the data is labelled, for its description."""
    if labels is None:
        return "unlabeled"
    if torch.is_tensor(labels) and labels.is_floating_point():
        return f"{num_classes} classes, several per example" if labels.dim() == 2 else "scores"
    return f"{num_classes} classes" + ("" if torch.is_tensor(labels) else " per word")


def class_per_text(labels: torch.Tensor | list | None) -> torch.Tensor | None:
    """`labels` when they are one class index per text (not scores, multi-hot rows or labels per word):
    what splits and subsets keep balanced."""
    return labels if torch.is_tensor(labels) and not labels.is_floating_point() else None


def picked(texts: list[Text], labels: torch.Tensor | list | None, idx: torch.Tensor) -> tuple[list[Text], Any]:
    """The texts `idx` and their labels (a tensor, or lists of labels per word)."""
    chosen = idx.tolist()
    if labels is not None:
        labels = labels[idx] if torch.is_tensor(labels) else [labels[i] for i in chosen]
    return [texts[i] for i in chosen], labels


def labels_of(labels: list[Label] | None, classes: int = 0) -> tuple[torch.Tensor | list[list[int]] | None, int | None]:
    """(labels as a tensor, or as lists per word; the number of classes) of read_text's labels. Several
    classes per example (tuples) become multi-hot rows of max(`classes`, the largest index + 1)."""
    if labels is None:
        return None, None
    if any(isinstance(x, tuple) for x in labels):
        if not all(isinstance(x, tuple) for x in labels):
            raise InputError("some examples have a list of labels and some one label; use one form")
        width = max(classes, max((max(x) for x in labels if x), default=-1) + 1)
        hot = torch.zeros(len(labels), width)
        for row, chosen in enumerate(labels):
            hot[row, list(chosen)] = 1.0
        return hot, width
    if labels and isinstance(labels[0], list):
        if any(isinstance(x, float) for row in labels for x in row):
            raise InputError("labels per word must be class indices or names, not scores")
        return labels, max((max(x) for x in labels if x), default=-1) + 1
    if any(isinstance(x, float) for x in labels):  # scores: no classes
        return torch.tensor(labels, dtype=torch.float32), None
    label_t = torch.tensor(labels, dtype=torch.long)
    return label_t, int(label_t.max()) + 1


def collate_tokens(samples: list[Any]) -> Any:
    """Stack, then drop the padding columns no example in the batch needs: at the end, and at the start
    for a tokenizer that pads on the left (Phi-3's, Mistral's), whose batches were all kept at full length."""
    batch = torch.utils.data.default_collate(samples)
    inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
    mask = inputs.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        columns = mask.any(dim=0).nonzero()
        used = slice(int(columns.min()), int(columns.max()) + 1) if len(columns) else slice(0, 1)

        def trim(v: Any) -> Any:  # ids, masks, types and labels per position
            return v[:, used] if torch.is_tensor(v) and v.dim() == 2 and v.shape[1] == mask.shape[1] else v
        trimmed = {k: trim(v) for k, v in inputs.items()}
        rest = [trim(v) for v in (batch[1:] if not isinstance(batch, dict) else [])]
        batch = trimmed if isinstance(batch, dict) else [trimmed, *rest]
    return batch


def pydoc_paragraphs() -> list[str]:
    """The paragraphs of Python's own documentation topics (`pydoc_data.topics`, shipped with every
    Python): about 2,000 passages of English prose and code, a calibration set on every machine."""
    from pydoc_data.topics import topics

    paragraphs = (" ".join(p.split()) for text in topics.values() for p in text.split("\n\n"))
    return [p for p in paragraphs if len(p) >= 40]


BUILTIN_TEXT = {"pydoc": "pydoc_data topics", "local-docs": "local documentation", "wordnet": "WordNet glosses",
                "english": "local documentation and WordNet glosses"}


def builtin_paragraphs(source: str) -> list[str]:
    """The paragraphs of a built-in text source (`pydoc`, `local-docs`, `wordnet`, `english`): text
    already on the machine or shipped with dpm."""
    if source in ("wordnet", "english"):
        from .wordnet import english_paragraphs, wordnet_paragraphs

        return wordnet_paragraphs() if source == "wordnet" else english_paragraphs()
    if source == "local-docs":
        from .local_docs import local_docs_paragraphs

        return local_docs_paragraphs()
    return pydoc_paragraphs()


def load_text(path: str | Path | None, tokenizer: Any, *, seq_len: int, val_fraction: float, split_seed: int,
              num_samples: int | None, text_field: str = "text", label_field: str = "label",
              builtin: str = "pydoc", augment: tuple[float, float] = (0.0, 0.0), label_names: Any = None,
              pair_field: str | None = None, log: Any = None) -> DataBundle:
    """Read (`path` None: the built-in source `builtin`), split (fixed by `split_seed`), truncate the
    training part, augment it (`augment` = (replace_words, share), see augment.py) and tokenise."""
    if tokenizer is None:
        raise InputError("text data needs a tokenizer, and the model folder has none; "
                         "save one into it with tokenizer.save_pretrained")
    if pair_field is not None and (path is None or augment[0] > 0):
        raise InputError("data.pair_field reads pairs from a JSON lines file (source text, data.path), and "
                         "data.augment does not change pairs; " + ("set data.augment.replace_words: 0" if path
                                                                   else "give data.path"))
    texts, labels = (read_text(path, text_field, label_field, label_names, pair_field) if path is not None
                     else (builtin_paragraphs(builtin), None))
    name = Path(path).name if path is not None else BUILTIN_TEXT[builtin]
    if len(texts) < 2:
        raise InputError(f"{path}: holds {len(texts)} example(s); a train/validation split needs at least 2")
    label_t, num_classes = labels_of(labels, len(class_names(label_names)))
    per_example = class_per_text(label_t)  # the split keeps classes balanced
    train_idx, val_idx = split_indices(len(texts), val_fraction, split_seed, per_example)
    total = len(train_idx)
    if num_samples is not None and num_samples < total:
        keep = truncate_indices(total, num_samples, split_seed, None if per_example is None else per_example[train_idx])
        train_idx = train_idx[keep]
    if augment[0] > 0 and texts and not isinstance(texts[0], str):
        raise InputError(f"data.augment replaces words in running text, not in {form_of(texts[0])}; set "
                         "data.augment.replace_words: 0")
    texts = _augmented(texts, train_idx, tokenizer, augment, split_seed)

    if log is not None and len(train_idx) + len(val_idx) >= LARGE_TEXT:
        log(f"tokenising {len(train_idx) + len(val_idx):,} texts (up to {seq_len} tokens each)")

    def part(idx: torch.Tensor) -> TokenDataset:
        return token_dataset(*picked(texts, label_t, idx), tokenizer, seq_len)

    if augment[0] > 0:
        name += f", {augment[1]:.0%} of the training paragraphs with {augment[0]:.0%} of words replaced"
    train_text = f"{len(train_idx)} train" + (f" (of {total})" if len(train_idx) < total else "")
    kind = label_kind(label_t, num_classes)
    return DataBundle(part(train_idx), part(val_idx), num_classes, (seq_len,), label_t is not None,
                      f"text {name}, {train_text} / {len(val_idx)} val, up to {seq_len} tokens, {kind}",
                      collate=collate_tokens)


def _augmented(texts: list[str], train_idx: torch.Tensor, tokenizer: Any, augment: tuple[float, float],
               seed: int) -> list[str]:
    """`texts` with the training paragraphs word-replaced as `augment` says; validation untouched."""
    rate, share = augment
    if rate <= 0 or share <= 0:
        return texts
    from .augment import replace_words, vocabulary_words

    idx = train_idx.tolist()
    out = list(texts)
    for i, text in zip(idx, replace_words([texts[i] for i in idx], vocabulary_words(tokenizer),
                                          rate=rate, share=share, seed=seed)):
        out[i] = text
    return out
