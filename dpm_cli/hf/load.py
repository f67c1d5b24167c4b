"""Load a Hugging Face model and its tokenizer from a local folder, offline, running no code from it.

This is the one place dpm calls `from_pretrained` to read a user's folder (`load_hf`); a project-wide
trust module can route Hugging Face folders here.
"""
from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch.nn as nn

from ..engine.kv_cache import cached_scopes, set_cache
from ..errors import CheckpointError, ConfigError, DpmError
from ..pooling import LOWERCASED, MEAN, folder_pooling, folder_projections, served_lowercase
from ..recipe.schema import HF_TASKS as TASKS  # the Auto classes model.hf.task may name
from .custom_code import check_known_type, check_weights_match
from .dtypes import record_dtypes
from .tasks import AUTO, dropped_weights_note, resolve_task

WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


@dataclass
class HFLoaded:
    model: nn.Module
    tokenizer: Any  # None when the folder has no tokenizer files
    task: str
    path: Path
    notes: list[str] = field(default_factory=list)


def import_transformers() -> Any:
    """`transformers`, or one line saying why it cannot be imported (e.g. a torchvision built for
    another torch, which transformers imports on its own)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded at run time
    try:
        import transformers
        from transformers import modeling_utils  # noqa: F401  (the import that fails when broken)
    except Exception as err:  # ImportError, or a RuntimeError from a mismatched torchvision
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise DpmError(f"Hugging Face transformers cannot be imported ({type(err).__name__}: {first}); "
                       "install it with pip install 'dpm-cli[hf]' (transformers; and a torchvision matching torch, or none)"
                       ) from err
    major = str(getattr(transformers, "__version__", "5")).split(".")[0]
    if major.isdigit() and int(major) < 5:  # stacked experts, head-size configs, dtypes: transformers 5's
        raise DpmError(f"dpm's Hugging Face support is built for transformers 5 (found {transformers.__version__}, "
                       "whose mixture-of-experts, seq2seq and bfloat16 folders it gets wrong): "
                       "pip install -U 'dpm-cli[hf]' (transformers>=5)")
    transformers.utils.logging.disable_progress_bar()  # dpm draws its own progress
    try:
        from huggingface_hub.utils import disable_progress_bars
        disable_progress_bars()  # save_pretrained's "Writing model shards"
    except ImportError:
        pass
    return transformers


def is_hf_folder(path: str | Path) -> bool:
    """A folder holding a Hugging Face config.json."""
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def check_folder(path: Path) -> None:
    if not path.is_dir():
        raise CheckpointError(f"model.hf.path {path} is not a folder; give the folder save_pretrained wrote "
                              "(config.json and model.safetensors)")
    if not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file():
            raise CheckpointError(f"{path} holds a PEFT adapter (adapter_config.json), not a model: merge it into its "
                                  "base model (model.merge_and_unload()) and save that with save_pretrained")
        raise CheckpointError(f"{path} has no config.json: not a Hugging Face model folder")
    from ..foreign import LFS_FIX, lfs_pointers

    if pointers := lfs_pointers(path):
        raise CheckpointError(f"{path}: {', '.join(pointers)} {'is a Git LFS pointer' if len(pointers) == 1 else 'are Git LFS pointers'}"
                              f", not the file's contents: {LFS_FIX}")
    from .weights_files import cut_short

    if short := cut_short(path):  # an interrupted download or copy
        raise CheckpointError(f"{path}: {short}: copy or download the folder again")
    quantized = _quantization(path)
    if quantized:
        raise CheckpointError(f"{path} holds a quantized model ({quantized}, config.json quantization_config): dpm "
                              "prunes floating-point weights; give the model before quantization, and quantize the "
                              "pruned one")
    if not any((path / w).is_file() for w in WEIGHTS):
        pickled = (path / "pytorch_model.bin").is_file()
        hint = (" (only pytorch_model.bin, a pickle dpm does not load: convert it with "
                "model.save_pretrained(folder, safe_serialization=True))") if pickled else ""
        raise CheckpointError(f"{path} has no model.safetensors{hint}")


def folder_config(folder: str | Path) -> dict:
    """A model folder's config.json as read (no transformers), or {} when it cannot be read as a mapping:
    loading the folder says what is wrong with it."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return config if isinstance(config, dict) else {}


def _quantization(path: Path) -> str | None:
    """The quantization method config.json names (gptq, awq, bitsandbytes, fp8, ...), or None."""
    quant = folder_config(path).get("quantization_config")
    if not quant:
        return None
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    return str(method)[:40] if method else "quantized"


@contextmanager
def captured_warnings() -> Iterator[list[str]]:
    """Collect what transformers logs at WARNING and above (instead of printing it)."""
    records: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("transformers")
    old_handlers, old_level, old_propagate = logger.handlers[:], logger.level, logger.propagate
    # transformers' own stderr handler is set aside too: its multi-line "LOAD REPORT" of missing and
    # unexpected keys would otherwise be printed; dpm states the missing keys in one note (load_hf)
    logger.handlers = [_Collect(logging.WARNING)]
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield records
    finally:
        logger.handlers = old_handlers
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def load_hf(path: str | Path, task: str = AUTO) -> HFLoaded:
    """The model (eval mode, float32) and tokenizer saved in `path`; refuses anything but safetensors.
    `task` "auto": the Auto class of the architecture config.json names (`hf.tasks`)."""
    if task != AUTO and task not in TASKS:
        raise ConfigError(f"model.hf.task {task!r} is not one of {' | '.join((AUTO, *TASKS))}")
    path = Path(path)
    check_folder(path)
    transformers = import_transformers()
    config = folder_config(path)
    task, chosen = resolve_task(transformers, config, task)
    check_known_type(path, config, task, transformers)
    options = dict(local_files_only=True, trust_remote_code=False)
    try:
        with captured_warnings() as warned:
            model, info = getattr(transformers, task).from_pretrained(
                str(path), use_safetensors=True, output_loading_info=True, **options)
    except DpmError:
        raise
    except Exception as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: transformers cannot load it as {task} ({type(err).__name__}: {first})") from err
    own_code = check_weights_match(path, config, task, model, info)  # refuses another model under a known type
    cached = cached_scopes(model.config)
    if cached:
        # A decoder's key/value cache in the output is no tensor torch-pruning can trace (nor torch.export
        # a DynamicCache); off while dpm works on the model, and back on in the folder `save_hf` writes.
        set_cache(model.config, cached, False)
        model._dpm_use_cache = cached
    # What the source folder itself warns about (a config transformers finds odd) is no fault of the
    # folder dpm writes from it: `save_hf` holds the folder it writes to no new warning only.
    model._dpm_load_warnings = tuple(warned)
    model._dpm_task = task  # the Auto class `save_hf` reloads with (EXAONE's folder loads as LlamaModel)
    model._dpm_pooling = folder_pooling(path)  # how its sentence-transformers pipeline pools (pooling.py)
    record_dtypes(model)  # trained in float32, written back in the dtypes the folder held
    loaded = HFLoaded(model.float().eval(), _tokenizer(transformers, path, options), task, path)
    loaded.notes += [n for n in (chosen, own_code, dropped_weights_note(path, config, task, list(info.get("unexpected_keys") or []),
                                                               transformers)) if n]
    if model._dpm_pooling not in (None, MEAN):
        loaded.notes.append(f"sentence embeddings are pooled as the folder's sentence-transformers pipeline pools "
                            f"them ({'+'.join(model._dpm_pooling)}, modules.json): the embedding target, the val "
                            "cosine and dpm check --min-cosine")
    model._dpm_projections, later = folder_projections(path)  # a Dense after the pooling (LaBSE): applied
    if model._dpm_projections:
        loaded.notes.append(f"sentence embeddings pass through {', '.join(p.path for p in model._dpm_projections)} "
                            "as sentence-transformers serves them (modules.json): the embedding target, the val "
                            "cosine and dpm check --min-cosine")
    if later:  # the same, unpruned, in both models: the cosine before them is close to the served one, not equal
        loaded.notes.append(f"sentence-transformers applies {', '.join(later)} to the pooled embedding; dpm distils "
                            "and compares the embedding before it, which both models share unchanged")
    missing = list(info.get("missing_keys") or [])
    if missing:  # e.g. a classification head added to an encoder checkpoint: it starts random
        loaded.notes.append(f"{len(missing)} weight(s) not in {path.name} were initialised at random "
                            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    loaded.notes += [w for w in warned if "initialized" in w.lower() and not missing][:1]
    # anything else transformers said (a config it finds odd), one line each; its key table is the note above
    loaded.notes += [f"transformers: {w.strip().splitlines()[0][:200]}" for w in warned
                     if "LOAD REPORT" not in w and "initialized" not in w.lower()][:2]
    return loaded


VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                    "sentencepiece.bpe.model")
TOKENIZER_FILES = ("tokenizer_config.json", *VOCABULARY_FILES)


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved in the folder `path` (offline, no code run from it), or None without one."""
    path = Path(path)
    if not path.is_dir():
        return None
    return _tokenizer(import_transformers(), path, dict(local_files_only=True, trust_remote_code=False))


def _tokenizer(transformers: Any, path: Path, options: dict) -> Any:
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        return None  # transformers would build an empty tokenizer from the config alone
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(path), **options)
    except Exception as err:
        if not any((path / f).is_file() for f in VOCABULARY_FILES):
            return None  # a tokenizer_config.json alone (a processor's): no tokenizer, as for no files
        # a vocabulary that does not load is a broken folder: going on would write the pruned folder
        # without a tokenizer and say "the folder has none"
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: its tokenizer does not load ({type(err).__name__}: {first}); repair it "
                              "with tokenizer.save_pretrained, or remove the tokenizer files") from err
    if tok.pad_token is None and getattr(tok, "eos_token", None) is not None:
        tok.pad_token = tok.eos_token  # decoder tokenizers (GPT-2, Llama) ship without a pad token
    if served_lowercase(path):  # dpm lowercases the text (pooling.as_served), the saved tokenizer stays as it was
        setattr(tok, LOWERCASED, True)
    return tok
