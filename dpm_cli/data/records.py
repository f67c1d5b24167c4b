"""Reading a text data file into examples and their labels (text.py tokenises them).

A file holds one example per line, JSON lines (`{"text": ..., "label": 3}`), one JSON array of such
objects, or a CSV/TSV table with a header; labels are optional (all lines or none). An example is a text,
a pair of texts (`data.pair_field`), a list of words labelled one by one (words.py) or a conversation
(`{"messages": [...]}`, chat.py). A label is a class index, one of the model's class names (label2id), a
score, or a list of classes (multi-label). Every problem is one line naming the file and the line.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..escaping import printable
from .chat import CHAT_FIELD, Chat, chat_of, is_chat, prompt_and_completion
from .textfile import format_suffix, read_characters
from .words import check_words, is_words

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
                        class_names(label_names))
    if suffix in (".jsonl", ".json") or numbered[0][1].lstrip().startswith("{"):
        # one JSON array of objects (pandas' to_json(orient="records"), json.dump of a list), or JSON lines
        records = (_json_array(path, whole) if suffix in (".jsonl", ".json") and whole.lstrip().startswith("[")
                   else _json_records(path, numbered))
        return _records(path, records, (text_field, pair_field), label_field, class_names(label_names))
    if pair_field is not None:
        raise InputError(f"{path}: data.pair_field {pair_field!r} reads JSON lines, and this is plain text; write "
                         f'one object per line, e.g. {{"{text_field}": ..., "{pair_field}": ...}}')
    return [line.strip() for _, line in numbered], None


def label_names(label2id: Any, id2label: Any = None) -> dict[str, int]:
    """A model config's class names as {name: class index}: its label2id, else its id2label inverted
    (transformers 5 does not derive one from the other); {} when neither is such a mapping."""
    if not isinstance(label2id, dict) and isinstance(id2label, dict):
        label2id = {v: int(k) for k, v in id2label.items() if str(k).isdigit()}
    return class_names(label2id)


def class_names(label2id: Any) -> dict[str, int]:
    """{name: class index} of a label2id mapping, the entries that are such."""
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


def form_of(text: Text) -> str:
    """How an example is written, for messages."""
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


def _trl_example(path: Path, number: int | str, record: dict, fields: tuple[str, str | None]) -> str | Chat | None:
    """A record in one of TRL's forms: messages (in `messages` when data.text_field is left at "text" and
    the record has none, else in data.text_field), or a prompt and its completion; None for any other."""
    if fields[1] is not None:  # pairs are read as pairs
        return None
    field = fields[0]
    if field == "text" and field not in record:
        joined = prompt_and_completion(path, number, record)
        if joined is not None:
            return joined
        field = CHAT_FIELD
    return chat_of(path, number, record[field]) if is_chat(record.get(field)) else None


def _records(path: Path, records: list[tuple[int | str, dict]], fields: tuple[str, str | None], label_field: str,
             names: dict[str, int]) -> tuple[list[Text], list[Label] | None]:
    texts, labels = [], []
    for number, record in records:
        conversation = _trl_example(path, number, record, fields)
        if conversation is not None:
            texts.append(conversation)
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
    forms = [form_of(t) for t in texts]
    other = next((i for i, form in enumerate(forms) if form != forms[0]), None)
    if other is not None:
        raise InputError(f"{path}:{records[other][0]}: some lines hold {forms[0]} and some {forms[other]}; "
                         "use one form")
    present = [lab is not None for lab in labels]
    if any(present) and not all(present):
        first = records[present.index(False) if all(present[:1]) else present.index(True)][0]
        raise InputError(f"{path}:{first}: some lines have a {label_field!r} and some do not; label all or none")
    return texts, (labels if all(present) else None)
