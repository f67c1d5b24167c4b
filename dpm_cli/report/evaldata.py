"""The data `dpm check` evaluates on: the recipe's validation data, or `--data`.

`--data` takes what a recipe's data section names, through `dpm_cli.data` (no second reader):
- a `.pt`/`.pth`/`.npz` file: its `val_inputs`/`val_labels` when it has them, else every sample in it
  (a file given to a check is evaluation data; with validation arrays, the rest was for training);
- a source name (`mnist`, `digits`, `random`): its validation split, with the recipe's split settings;
- `package.module:callable`: the validation dataset the factory returns (with the recipe's data.kwargs
  when the recipe names the same factory).
Without `--data`, the recipe's data section is loaded as `dpm prune` loads it and its validation part
is used, so the numbers match the "after" accuracy `dpm prune` reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError

_FILE_SUFFIXES = (".pt", ".pth", ".npz")


@dataclass
class EvalData:
    dataset: Dataset
    description: str
    labeled: bool

    @property
    def samples(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def for_model(self, model: Any) -> "EvalData":
        """The same data with an encoder-decoder's decoder inputs added (the text shifted, as in training)."""
        from ..hf.inputs import with_decoder_dataset

        return EvalData(with_decoder_dataset(model, self.dataset), self.description, self.labeled)

    def loader(self, batch_size: int) -> DataLoader:
        from ..data.text import TokenDataset, collate_tokens

        collate = collate_tokens if isinstance(self.dataset, TokenDataset) else None  # trims token padding
        return DataLoader(self.dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate)


def resolve_eval_data(data: str | None, recipe: Any | None, model: str | Path | None = None,
                      baseline: str | Path | None = None, seq_len: int | None = None,
                      max_samples: int | None = None) -> EvalData | None:
    """`--data` if given, else the recipe's validation data, else None (no data to evaluate on). Text is
    tokenised as `dpm prune` tokenised it: by the recipe's model folder's tokenizer (else MODEL's, else
    the baseline's, when it is a folder), at `seq_len` tokens, else the recipe's model.seq_len, else the
    length a sentence-transformers folder serves (max_seq_length), else 128. Unlabelled text for a language
    model is labelled with its next tokens (data/next_token.py), so the accuracy and loss gates score it.
    With `max_samples`, a fixed, seeded, class-balanced part of that many (a text file's texts are chosen
    before they are tokenised)."""
    from ..data.next_token import described, is_language_model, relabels, with_next_token_labels

    folders = [f for f in (model, baseline) if f is not None]
    found = _capped(_eval_data(data, recipe, folders, seq_len, max_samples), max_samples)
    if found is None or not relabels(found.dataset, found.labeled) or not is_language_model(recipe, folders):
        return found
    return EvalData(with_next_token_labels(found.dataset), described(found.description, found.labeled), True)


def _eval_data(data: str | None, recipe: Any | None, folders: list[str | Path], seq_len: int | None,
               max_samples: int | None = None) -> EvalData | None:
    from ..data import SOURCES, load_data

    section = recipe.data if recipe is not None else None
    split = {"val_fraction": section.val_fraction, "split_seed": section.split_seed} if section else {}
    if data is None:
        if section is None:
            return None
        bundle = load_data(section.source, path=section.path, factory=section.factory, kwargs=dict(section.kwargs),
                           num_samples=section.num_samples, val_samples=section.val_samples, **split,
                           **_token_options(section.source, recipe, folders, seq_len))
        return _val_part(bundle, "the recipe's data")
    text = str(data).strip()
    if text.lower().endswith(_FILE_SUFFIXES):
        return _file(Path(text))
    if Path(text).is_file():  # any other file is text: one example per line, or JSON lines
        return _text_file(Path(text), _token_options("text", recipe, folders, seq_len), max_samples)
    if text.lower() in SOURCES:
        if text.lower() == "tensors":
            raise ConfigError("--data tensors: give the .pt or .npz file itself as --data")
        kwargs = dict(section.kwargs) if section is not None and section.source == text.lower() else None
        return _val_part(load_data(text.lower(), kwargs=kwargs if text.lower() == "random" else None, **split,
                                   **_token_options(text.lower(), recipe, folders, seq_len)), f"--data {text}")
    if ":" in text:
        kwargs = dict(section.kwargs) if section is not None and section.factory == text else {}
        return _val_part(load_data("factory", factory=text, kwargs=kwargs), f"--data {text}")
    if Path(text).is_dir():
        raise ConfigError(f"--data {text!r} is a folder; give one file (its files joined into one, e.g. cat "
                          "*.txt > all.txt)")
    raise ConfigError(f"--data {text!r}: no such file; give a .pt/.npz file, a text file, a data source "
                      f"({', '.join(s for s in SOURCES if s != 'tensors')}) or 'package.module:callable'")


def _token_options(source: str, recipe: Any | None, given: list[str | Path], seq_len: int | None) -> dict[str, Any]:
    """What text data needs to be tokenised (nothing for other sources): a tokenizer, the length, the fields."""
    from ..recipe.loader import TEXT_SOURCES

    if source not in TEXT_SOURCES:
        return {}
    from ..hf.load import load_tokenizer

    hf = getattr(getattr(recipe, "model", None), "hf", None)
    folders = [f for f in (getattr(hf, "path", None), *given) if f is not None]
    tokenizer = next((t for t in map(load_tokenizer, folders) if t is not None), None)
    if tokenizer is None:
        raise ConfigError(f"text data ({source}) is tokenised by a model folder's tokenizer, and neither the "
                          "recipe's model.hf.path, MODEL nor --baseline is a folder with one; pass --recipe with "
                          "the model.hf.path it was pruned from")
    from ..data.records import label_names
    from ..hf.load import folder_config
    from ..pooling import served_length
    from .forward import max_positions

    configs = [folder_config(f) for f in folders]
    longest = min(filter(None, map(max_positions, configs)), default=None)  # as dpm report caps it
    # with no recipe, as long as the folder's sentence-transformers pipeline embeds (MiniLM: 256), not 128
    wanted = seq_len or (recipe.model.seq_len if recipe is not None else None)
    wanted = wanted or next(filter(None, map(served_length, folders)), None) or 128
    seq_len = min(wanted, longest or 2**31)
    # labels may be written as the model's class names
    names = next(filter(None, (label_names(c.get("label2id"), c.get("id2label")) for c in configs)), None)
    if recipe is None:
        return {"tokenizer": tokenizer, "seq_len": seq_len, "label_names": names}
    return {"tokenizer": tokenizer, "seq_len": seq_len, "text_field": recipe.data.text_field,
            "label_field": recipe.data.label_field, "label_names": names, "pair_field": recipe.data.pair_field}


def _text_file(path: Path, options: dict[str, Any], max_samples: int | None = None) -> EvalData:
    """Every line of a text file (a file given to a check is evaluation data), or `max_samples` of them,
    chosen before tokenising (which took 100 s for 400,000 texts), tokenised."""
    from ..data.text import class_per_text, label_kind, labels_of, picked, read_text, token_dataset

    seq_len = options.get("seq_len", 128)
    texts, labels = read_text(path, options.get("text_field", "text"), options.get("label_field", "label"),
                              options.get("label_names"), options.get("pair_field"))
    label_t, classes = labels_of(labels, len(options.get("label_names") or {}))
    kind = label_kind(label_t, classes)
    which = f"all {len(texts)} examples"
    if max_samples is not None and max_samples < len(texts):
        which = f"{max_samples} of {len(texts)} examples, seeded"
        texts, label_t = picked(texts, label_t, _chosen(len(texts), max_samples, class_per_text(label_t)))
    return EvalData(token_dataset(texts, label_t, options["tokenizer"], seq_len),
                    f"text {path.name} ({which}), up to {seq_len} tokens, {kind}", label_t is not None)


def _chosen(total: int, keep: int, labels: Any) -> Any:
    """The same `keep` of `total` samples on every run and machine (seed 0; class-balanced by `labels`)."""
    from ..data.split import truncate_indices

    return truncate_indices(total, keep, 0, labels)


def _capped(found: EvalData | None, max_samples: int | None) -> EvalData | None:
    """`found` with at most `max_samples` samples (a text file's are already chosen)."""
    if found is None or max_samples is None or found.samples <= max_samples:
        return found
    from ..data.bundle import class_labels, take

    idx = _chosen(found.samples, max_samples, class_labels(found.dataset))
    return EvalData(take(found.dataset, idx), f"{found.description}; {max_samples} of its {found.samples} samples",
                    found.labeled)


def _val_part(bundle: Any, origin: str) -> EvalData:
    note = " (RANDOM data: the numbers mean nothing)" if bundle.synthetic else ""
    return EvalData(bundle.val, f"validation part of {bundle.description}{note}", bundle.labeled)


def _file(path: Path) -> EvalData:
    from ..data.bundle import make_dataset, shape_text
    from ..data.files import read_tensors

    x, y, vx, vy = read_tensors(path)
    if vx is not None:
        x, y, part = vx, vy, "val_inputs"
    else:
        part = "all samples"
    labels = f"{int(y.max()) + 1} classes" if y is not None and len(y) else "unlabeled"
    return EvalData(make_dataset(x, y), f"tensors {path.name} ({part}), {shape_text(tuple(x.shape[1:]))}, {labels}",
                    y is not None)
