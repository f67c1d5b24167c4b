"""Text data for token models: local text, tokenised by the model's own tokenizer.

A file holds one example per line, JSON lines (`{"text": ..., "label": 3}`), one JSON array of such
objects, or a CSV/TSV table with a header; labels are optional (all lines or none). A label is a class index, one of the model's class
names (label2id), a score (a number with a fraction, for a model with one output) or a list of classes
(multi-label). `data.pair_field` adds a second text, tokenised as a pair; a list of words with a label
per word is token classification (words.py). Every example is tokenised to at most `seq_len` tokens
with an attention mask; batches are trimmed to their longest example (padding columns cost MACs for
nothing).
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..errors import InputError
from ..escaping import printable
from .bundle import DataBundle
from .chat import CHAT_FIELD, Chat, chat_of, is_chat, rendered
from .words import aligned_labels, check_words, is_words
from .split import split_indices, truncate_indices
from .textfile import format_suffix, read_characters

NESTED = "JSON nested too deep to be examples; each example is an object such as {\"text\": ..., \"label\": ...}"


# one text, a pair tokenised together (data.pair_field), a list of words labelled one by one (words.py),
# or a conversation its chat template renders (chat.py)
Text = str | tuple[str, str] | list[str] | Chat
Label = int | float | tuple[int, ...] | list[int]  # a class or score per example, several classes, or per word


def read_text(path: str | Path, text_field: str = "text", label_field: str = "label",
              label_names: Any = None, pair_field: str | None = None) -> tuple[list[Text], list[Label] | None]:
    """(texts, labels or None) from a plain text file, JSON lines, a JSON array of objects or a CSV/TSV
    table (UTF-8 or UTF-16, gzip-compressed or not: textfile.py); blank lines are skipped.
    `label_names`: a model's label2id ({"NEGATIVE": 0, ...}), which maps labels written as names;
    `pair_field`: each record's second text, read as a (text, pair) tuple."""
    path = Path(path)
    whole = read_characters(path)
    lines = whole.splitlines()
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if not numbered:
        raise InputError(f"{path}: holds no text")
    suffix = format_suffix(path)  # train.jsonl.gz is JSON lines
    if suffix in (".csv", ".tsv"):  # read as plain lines, a header would be an example
        return _records(path, _table_rows(path, lines, label_field), (text_field, pair_field), label_field,
                        _names(label_names))
    if suffix in (".jsonl", ".json") or numbered[0][1].lstrip().startswith("{"):
        # one JSON array of objects (pandas' to_json(orient="records"), json.dump of a list), or JSON lines
        records = (_json_array(path, whole) if suffix in (".jsonl", ".json") and whole.lstrip().startswith("[")
                   else _json_records(path, numbered))
        return _records(path, records, (text_field, pair_field), label_field, _names(label_names))
    if pair_field is not None:
        raise InputError(f"{path}: data.pair_field {pair_field!r} reads JSON lines, and this is plain text; write "
                         f'one object per line, e.g. {{"{text_field}": ..., "{pair_field}": ...}}')
    return [line.strip() for _, line in numbered], None


def label_names(label2id: Any, id2label: Any = None) -> dict[str, int]:
    """A model config's class names as {name: class index}: its label2id, else its id2label inverted
    (transformers 5 does not derive one from the other); {} when neither is such a mapping."""
    if not isinstance(label2id, dict) and isinstance(id2label, dict):
        label2id = {v: int(k) for k, v in id2label.items() if str(k).isdigit()}
    return _names(label2id)


def _names(label2id: Any) -> dict[str, int]:
    if not isinstance(label2id, dict):
        return {}
    return {str(k): v for k, v in label2id.items() if isinstance(v, int) and not isinstance(v, bool) and v >= 0}


def _label(path: Path, number: int, label: Any, names: dict[str, int]) -> int | float | None:
    """A record's label as a class index: an integer, or a name of the model's (label2id); a number
    with a fraction is a score (STS similarity), for a model with one output."""
    if isinstance(label, str):
        key = label if label in names else label.strip()
        if key in names:
            return names[key]
        if key.isdigit():  # a class index written as text ("1": pandas' object columns), as CSV cells are read
            return int(key)
        if not names:
            raise InputError(f"{path}:{number}: label {label!r} is a name, and the model's config.json has no "
                             "label2id to map it to a class index; write class indices (0, 1, ...)")
        known = ", ".join(list(names)[:8]) + (", ..." if len(names) > 8 else "")
        raise InputError(f"{path}:{number}: label {label!r} is not one of the model's labels "
                         f"(config.json label2id: {known})")
    if isinstance(label, float) and math.isfinite(label):
        return label  # a score (a regression head, num_labels 1)
    if label is not None and (isinstance(label, bool) or not isinstance(label, int) or label < 0):
        raise InputError(f"{path}:{number}: label {label!r} is not a class index >= 0, a label name or a score")
    return label


def _json_records(path: Path, numbered: list[tuple[int, str]]) -> list[tuple[int, dict]]:
    records = []
    for number, line in numbered:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{number}: not a JSON object ({err.msg}); write one JSON object per line") from err
        except RecursionError:
            raise InputError(f"{path}:{number}: {NESTED}") from None
        records.append((number, _object(path, number, record)))
    return records


def _json_array(path: Path, whole: str) -> list[tuple[int | str, dict]]:
    """The objects of a file that is one JSON array, numbered "item N" in messages (no line numbers)."""
    try:
        items = json.loads(whole)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{err.lineno}: not JSON ({err.msg}); write one JSON array of objects, or one "
                         "object per line") from err
    except RecursionError:  # json's decoder recurses per level: 100,000 brackets are no data
        raise InputError(f"{path}: {NESTED}") from None
    if not isinstance(items, list) or not items:
        raise InputError(f"{path}: holds no examples; write a JSON array of objects, or one object per line")
    return [(f"item {i + 1}", _object(path, f"item {i + 1}", item)) for i, item in enumerate(items)]


def _object(path: Path, number: int | str, record: Any) -> dict:
    """A record must be an object: a list or a string there was read as one with no fields ("no text")."""
    if not isinstance(record, dict):
        kind = {str: "string", list: "array", bool: "boolean", int: "number", float: "number"}.get(type(record), "null")
        raise InputError(f"{path}:{number}: a JSON {kind}, not an object; "
                         'each example is an object such as {"text": ..., "label": ...}')
    return record


def _form(text: Text) -> str:
    return "a list of words" if is_words(text) else "chat messages" if isinstance(text, Chat) else "a text"


def _table_rows(path: Path, lines: list[str], label_field: str) -> list[tuple[int, dict]]:
    """A CSV or TSV file's rows under its header, as records; the label column's numbers become numbers
    (a class index, or a score), other labels stay text (a label name), an empty one is no label."""
    reader = csv.DictReader(io.StringIO("\n".join(lines)), delimiter="\t" if format_suffix(path) == ".tsv" else ",")
    if not reader.fieldnames:
        raise InputError(f"{path}: no header row; the first line names the columns, e.g. text,label")
    try:
        return [(reader.line_num, {k: _label_cell(v) if k == label_field else v for k, v in row.items() if k})
                for row in reader if any((v or "").strip() for v in row.values() if isinstance(v, str))]
    except csv.Error as err:
        raise InputError(f"{path}:{reader.line_num}: not CSV ({err})") from err


def _label_cell(value: Any) -> Any:
    if value is None or not str(value).strip():
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except (TypeError, ValueError):
            pass
    return value


def _records(path: Path, records: list[tuple[int | str, dict]], fields: tuple[str, str | None], label_field: str,
             names: dict[str, int]) -> tuple[list[Text], list[Label] | None]:
    texts, labels = [], []
    for number, record in records:
        field = fields[0] if fields[0] in record or fields[0] != "text" else CHAT_FIELD  # TRL's "messages"
        if is_chat(record.get(field)) and fields[1] is None:
            texts.append(chat_of(path, number, record[field]))
            labels.append(_label(path, number, record.get(label_field), names))
            continue
        if is_words(record.get(fields[0])) and fields[1] is None:  # labels per word (token classification)
            check_words(path, number, record[fields[0]], record.get(label_field))
            texts.append(record[fields[0]])
            label = record.get(label_field)
            labels.append(None if label is None else [_label(path, number, x, names) for x in label])
            continue
        parts = []
        for field, setting in zip(fields, ("data.text_field", "data.pair_field")):
            if field is None:
                continue
            text = record.get(field)
            if field not in record:  # the usual cause: the dataset's own name for it (sentence, question, ...)
                shown = ", ".join(repr(k)[:40] for k in list(record)[:8]) or "none"
                raise InputError(f"{path}:{number}: no field {field!r} (the record has {shown}); set {setting}")
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"{path}:{number}: field {field!r} holds no text ({printable(text, 40)}); every "
                                 "example needs one")
            parts.append(text)
        texts.append(parts[0] if len(parts) == 1 else tuple(parts))
        label = record.get(label_field)
        if isinstance(label, list):  # several classes of one example (multi-label): a tuple of them
            labels.append(tuple(sorted({_label(path, number, x, names) for x in label})))
            if any(isinstance(x, float) for x in labels[-1]):
                raise InputError(f"{path}:{number}: a list of labels holds class indices or names, not scores")
            continue
        labels.append(_label(path, number, label, names))
    forms = [_form(t) for t in texts]
    other = next((i for i, form in enumerate(forms) if form != forms[0]), None)
    if other is not None:
        raise InputError(f"{path}:{records[other][0]}: some lines hold {forms[0]} and some {forms[other]}; "
                         "use one form")
    present = [lab is not None for lab in labels]
    if any(present) and not all(present):
        first = records[present.index(False) if all(present[:1]) else present.index(True)][0]
        raise InputError(f"{path}:{first}: some lines have a {label_field!r} and some do not; label all or none")
    return texts, (labels if all(present) else None)


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
    """Stack, then drop the padding columns no example in the batch needs."""
    batch = torch.utils.data.default_collate(samples)
    inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
    mask = inputs.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        used = int(mask.any(dim=0).nonzero().max()) + 1 if bool(mask.any()) else 1
        trimmed = {k: (v[:, :used] if torch.is_tensor(v) and v.dim() == 2 and v.shape[1] == mask.shape[1] else v)
                   for k, v in inputs.items()}
        rest = [v[:, :used] if torch.is_tensor(v) and v.dim() == 2 and v.shape[1] == mask.shape[1] else v
                for v in (batch[1:] if not isinstance(batch, dict) else [])]  # labels per position too
        batch = trimmed if isinstance(batch, dict) else [trimmed, *rest]
    return batch


def pydoc_paragraphs() -> list[str]:
    """The paragraphs of Python's own documentation topics (`pydoc_data.topics`, shipped with every
    Python): about 2,000 passages of English prose and code, a calibration set on every machine."""
    from pydoc_data.topics import topics

    paragraphs = (" ".join(p.split()) for text in topics.values() for p in text.split("\n\n"))
    return [p for p in paragraphs if len(p) >= 40]


BUILTIN_TEXT = {"pydoc": "pydoc_data topics", "local-docs": "local documentation"}


def builtin_paragraphs(source: str) -> list[str]:
    """The paragraphs of a built-in text source (`pydoc`, `local-docs`): text already on the machine."""
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
    label_t, num_classes = labels_of(labels, len(_names(label_names)))
    # the split keeps classes balanced (not scores, nor labels per word)
    per_example = label_t if torch.is_tensor(label_t) and not label_t.is_floating_point() else None
    train_idx, val_idx = split_indices(len(texts), val_fraction, split_seed, per_example)
    total = len(train_idx)
    if num_samples is not None and num_samples < total:
        keep = truncate_indices(total, num_samples, split_seed, None if per_example is None else per_example[train_idx])
        train_idx = train_idx[keep]
    if augment[0] > 0 and texts and not isinstance(texts[0], str):
        raise InputError(f"data.augment replaces words in running text, not in {_form(texts[0])}; set "
                         "data.augment.replace_words: 0")
    texts = _augmented(texts, train_idx, tokenizer, augment, split_seed)

    if log is not None and len(train_idx) + len(val_idx) >= LARGE_TEXT:
        log(f"tokenising {len(train_idx) + len(val_idx):,} texts (up to {seq_len} tokens each)")

    def part(idx: torch.Tensor) -> TokenDataset:
        chosen = idx.tolist()
        picked = None if label_t is None else label_t[idx] if torch.is_tensor(label_t) else [label_t[i] for i in chosen]
        return token_dataset([texts[i] for i in chosen], picked, tokenizer, seq_len)

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
