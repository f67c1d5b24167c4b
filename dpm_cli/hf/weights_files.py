"""A model folder's safetensors files, read by their headers alone (no tensor is loaded).

The header says every tensor's shape and where its bytes end: enough to count a model's parameters
before loading it (pipeline/memory.py) and to tell a file cut short by an interrupted download or copy
from a corrupt one. transformers said "incomplete metadata, file not fully covered" of such a file.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

HEADER_LIMIT = 100 * 2**20  # a safetensors header larger than this is no header
INDEX = "model.safetensors.index.json"


def weights_files(folder: Path) -> list[Path] | None:
    """model.safetensors, or the shards its index names; None when the index cannot be read."""
    index = folder / INDEX
    if not index.is_file():
        return [folder / "model.safetensors"]
    try:
        shards = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()
        return [folder / name for name in sorted(set(shards)) if isinstance(name, str) and "/" not in name]
    except (OSError, ValueError, AttributeError):
        return None


def read_header(file: Path) -> tuple[int, dict[str, Any]] | None:
    """(the header's length, the header) of a safetensors file, or None when it has none."""
    try:
        with open(file, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > HEADER_LIMIT:
                return None
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error, RecursionError):
        return None
    return (size, header) if isinstance(header, dict) else None


def _header_length(file: Path) -> int | None:
    """The header length a safetensors file's first 8 bytes declare, or None if not plausibly one."""
    try:
        with open(file, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
    except (OSError, struct.error):
        return None
    return size if 0 < size <= HEADER_LIMIT else None


def _entries(header: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for name, e in header.items() if name != "__metadata__" and isinstance(e, dict)]


def stored_elements(file: Path) -> int | None:
    """How many numbers the file's tensors hold, from its header; None when it cannot be read."""
    read = read_header(file)
    if read is None:
        return None
    total = 0
    for entry in _entries(read[1]):
        count = 1
        for dim in entry.get("shape", []):
            count *= int(dim)
        total += count
    return total


def cut_short(folder: Path) -> str | None:
    """Which weights file of `folder` is missing or shorter than its header says, or None."""
    for file in weights_files(folder) or []:
        if not file.is_file():
            return f"{file.name}, named in {INDEX}, is missing" if (folder / INDEX).is_file() else None
        size = file.stat().st_size
        declared = _header_length(file)
        if declared is not None and 8 + declared > size:  # cut inside the header itself
            return f"{file.name} is cut short ({size:,} bytes, less than its {8 + declared:,}-byte header)"
        read = read_header(file)
        if read is None:
            continue  # not a header dpm can read: transformers' own error says what it is
        ends = [e.get("data_offsets", [0, 0])[-1] for e in _entries(read[1])]
        expected = 8 + read[0] + max((int(end) for end in ends if isinstance(end, int)), default=0)
        if size < expected:
            return f"{file.name} is cut short ({size:,} of the {expected:,} bytes its header describes)"
    return None
