"""Which files in a folder dpm wrote: `--force` replaces those and nothing else.

Each folder dpm writes outputs into gets a small record, `.dpm-outputs.json`: file name -> size and
modification time when dpm wrote it. A file that is not in the record, or that changed since, is
someone else's, and dpm refuses to overwrite or delete it even with --force.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

RECORD = ".dpm-outputs.json"
_MAX_RECORD_BYTES = 1 << 20


def _read(folder: Path) -> dict[str, dict[str, int]]:
    path = folder / RECORD
    try:
        if not path.is_file() or path.stat().st_size > _MAX_RECORD_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # unreadable: then nothing counts as dpm's, the safe reading
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, dict)} if isinstance(data, dict) else {}


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def wrote(path: Path) -> bool:
    """True when `path` is a file dpm wrote and nobody changed since."""
    path = Path(path)
    if not path.is_file() or path.is_symlink():
        return False
    entry = _read(path.parent).get(path.name)
    return entry is not None and entry == _stamp(path)


def record(paths: list[Path]) -> None:
    """Add files just written (all in one folder per call is typical) to their folders' records."""
    from .checkpoint import write_atomically

    by_folder: dict[Path, list[Path]] = {}
    for p in paths:
        by_folder.setdefault(Path(p).parent, []).append(Path(p))
    for folder, files in by_folder.items():
        entries = _read(folder)
        entries.update({f.name: _stamp(f) for f in files if f.is_file()})
        text = json.dumps(entries, indent=1, sort_keys=True) + "\n"
        write_atomically(folder / RECORD, lambda tmp: tmp.write_text(text))


def remove_owned(folder: Path) -> None:
    """Delete the files the record lists that are unchanged, then the record."""
    for name in _read(folder):
        path = folder / name
        if os.path.basename(name) == name and wrote(path):
            path.unlink()
    (folder / RECORD).unlink(missing_ok=True)
