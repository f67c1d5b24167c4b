"""A model named by its Hugging Face Hub id (`BAAI/bge-small-en-v1.5`) where dpm takes a path.

dpm downloads nothing and reads no cache on its own: a model is a file or a folder the user names. But
an id is what transformers users type, and "no such file" does not tell them what to do. So a missing
path that reads as an id gets a hint: the folder of the id in the local Hugging Face cache when it is
there (the snapshot `from_pretrained` would load offline), else how to download it first.
"""
from __future__ import annotations

import re
from pathlib import Path

from .escaping import printable

# org/name as the Hub allows them: letters, digits, '-', '_', '.', not starting with a separator
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
# names of files, not of models (a model id may hold a dot: bge-small-en-v1.5)
FILE_SUFFIXES = (".pt", ".pth", ".pt2", ".bin", ".ckpt", ".safetensors", ".npz", ".onnx", ".json", ".yaml", ".yml",
                 ".txt", ".jsonl", ".csv", ".gz")


def hub_id_hint(value: str | Path) -> str:
    """'' unless `value` is no path here and reads as a Hub id; then "; ..." saying where its folder is."""
    text = str(value)
    if not HUB_ID.fullmatch(text) or Path(text).exists() or Path(text.split("/")[0]).exists():
        return ""  # a path in a folder that is there (runs/model.pt) is a path, however it reads
    if Path(text).suffix.lower() in FILE_SUFFIXES:
        return ""
    cached = cached_snapshot(text)
    if cached is not None:
        return (f"; {text} reads as a Hugging Face Hub id, and the local Hugging Face cache has it: give its "
                f"folder, {printable(cached)}")
    return (f"; {text} reads as a Hugging Face Hub id, and dpm downloads nothing: download it first "
            f"(hf download {text} --local-dir {text.split('/')[1]}) and give that folder")


def cached_snapshot(repo_id: str) -> Path | None:
    """The folder of `repo_id`'s cached snapshot (its config.json's folder), or None: not cached, or no
    huggingface_hub to find the cache with."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an id the hub library rejects is no cached model either
        return None
    return Path(found).parent if isinstance(found, str) else None
