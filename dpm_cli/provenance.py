"""Provenance: what produced a compact model, as content hashes, so CI can trust and reuse it.

`dpm prune` records `record(recipe, checkpoint)` in the artifact's metadata and in `summary.json`:

    checkpoint  sha256 of the input checkpoint file, or of a Hugging Face folder's files (null when the
                recipe pre-trained a dense model)
    recipe      sha256 of the resolved recipe in canonical form (sorted JSON of every key, defaults
                filled in), leaving out output.* (where results go, not what they are) and the
                checkpoint/data paths (their contents are hashed instead, so moving a file is no change)
    data        the data description (source, plus the sha256 of the tensors or text file it reads)
                and its sha256
    versions    dpm, torch and torch-pruning
    key         sha256 over the three input hashes: equal keys mean the same inputs

`dpm check --built-from` compares the inputs (the key); `dpm prune --reuse` also needs equal versions,
because another dpm or torch may train to a different model from the same inputs.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointError, InputError
from .hub_ids import hub_id_hint

SCHEMA = 1
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks (checkpoints can be large)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as err:
        raise InputError(f"{path}: cannot read it to hash it ({err.strerror or err})") from err
    return digest.hexdigest()


def sha256_path(path: str | Path) -> str:
    """A file's sha256, or a folder's (a Hugging Face model): the hash of its files' names and hashes.
    Hidden entries are not the model: `.git` (a clone from the Hub: every weight again, as LFS objects,
    and files git rewrites on a fetch) and `.cache/huggingface` (`hf download --local-dir` stamps it on
    every download) would change the hash of an unchanged model, and --reuse and --built-from with it."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    return sha256_json({p.relative_to(path).as_posix(): sha256_file(p) for p in _model_files(path)})


def _model_files(folder: Path) -> list[Path]:
    """A folder's files, hidden entries left out (see sha256_path)."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def path_bytes(path: str | Path) -> int:
    """The bytes sha256_path reads (0 for a path that is not there)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in _model_files(path))
    return path.stat().st_size if path.is_file() else 0


def sha256_json(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, tuples as lists."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def canonical_recipe(recipe: Any) -> dict[str, Any]:
    """The resolved recipe as plain data, without output.* and without the paths hashed by content."""
    doc = json.loads(canonical_json(recipe.to_dict()))
    doc.pop("output", None)
    doc.get("model", {})["checkpoint"] = None
    if isinstance(doc.get("model", {}).get("hf"), dict):
        doc["model"]["hf"]["path"] = None  # the folder's files are hashed as the checkpoint
    doc.get("data", {})["path"] = None
    return doc


def data_description(data: Any) -> dict[str, Any]:
    """Where the data comes from: the source and, for a file, its content hash. Built-in sets are
    named; a factory is named with its kwargs (its code and whatever it reads cannot be hashed)."""
    doc: dict[str, Any] = {"source": data.source}
    if data.source in ("tensors", "text") and data.path:
        doc["files"] = {Path(data.path).name: sha256_file(data.path)}
    elif data.source == "factory":
        doc["factory"] = data.factory
        doc["kwargs"] = json.loads(canonical_json(dict(data.kwargs)))
    elif data.source == "random":
        doc["kwargs"] = json.loads(canonical_json(dict(data.kwargs)))
    return doc


def versions() -> dict[str, str | None]:
    from importlib import metadata

    import torch

    from . import __version__

    try:
        tp = metadata.version("torch-pruning")
    except metadata.PackageNotFoundError:  # e.g. a source checkout on the path
        import torch_pruning

        tp = getattr(torch_pruning, "__version__", None)
    return {"dpm": __version__, "torch": str(torch.__version__).split("+")[0], "torch_pruning": tp}


def record(recipe: Any, checkpoint: str | Path | None) -> dict[str, Any]:
    """What `dpm prune` records about a run of `recipe` on `checkpoint` (None: pre-trained dense)."""
    ckpt = None
    hf = getattr(recipe.model, "hf", None)
    checkpoint = checkpoint if checkpoint is not None else getattr(hf, "path", None)
    if checkpoint is not None:
        if not Path(checkpoint).exists():
            raise CheckpointError(f"{checkpoint}: no such checkpoint file or model folder{hub_id_hint(checkpoint)}")
        # a Hugging Face folder is hashed by its files' contents, like a checkpoint file
        ckpt = {"file": Path(checkpoint).name, "sha256": sha256_path(checkpoint)}
    canonical = canonical_recipe(recipe)
    data = data_description(recipe.data)
    doc = {
        "schema": SCHEMA,
        "checkpoint": ckpt,
        "recipe": {"sha256": sha256_json(canonical), "canonical": canonical},
        "data": {"description": data, "sha256": sha256_json(data)},
        "versions": versions(),
    }
    doc["key"] = input_key(doc)
    return doc


def input_key(doc: dict[str, Any]) -> str:
    ckpt = (doc.get("checkpoint") or {}).get("sha256")
    return sha256_json([ckpt, doc["recipe"]["sha256"], doc["data"]["sha256"]])


def differences(recorded: dict[str, Any] | None, expected: dict[str, Any], *, versions: bool) -> list[str]:
    """What differs between two records, in words ("recipe: training.steps 30 -> 40"); [] when equal."""
    if not recorded or "recipe" not in recorded:
        return ["no provenance recorded (written by an older dpm, or not by dpm prune)"]
    out = []
    a, b = recorded.get("checkpoint") or {}, expected.get("checkpoint") or {}
    if a.get("sha256") != b.get("sha256"):
        out.append(f"checkpoint: sha256 {_short(a.get('sha256'))} recorded, {_short(b.get('sha256'))} given")
    if recorded["recipe"].get("sha256") != expected["recipe"]["sha256"]:
        canonical = recorded["recipe"].get("canonical")
        keys = _changed_keys(canonical, expected["recipe"]["canonical"], _defaults()) if canonical else []
        if keys or not canonical:  # none: only keys a later dpm added, at their defaults: the same recipe
            out.append("recipe: " + (", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "") if keys else "differs"))
    if (recorded.get("data") or {}).get("sha256") != expected["data"]["sha256"]:
        out.append(f"data: {_data_text(recorded.get('data'))} recorded, {_data_text(expected['data'])} given")
    if versions and recorded.get("versions") != expected["versions"]:
        out.append(f"versions: {recorded.get('versions')} recorded, {expected['versions']} now")
    return out


def _short(digest: str | None) -> str:
    return "none" if digest is None else digest[:12]


def _data_text(data: dict[str, Any] | None) -> str:
    desc = (data or {}).get("description") or {}
    files = ", ".join(f"{name} {_short(h)}" for name, h in (desc.get("files") or {}).items())
    return f"{desc.get('source')}" + (f" ({files})" if files else "")


def _changed_keys(a: Any, b: Any, defaults: Any = None, prefix: str = "") -> list[str]:
    """The keys whose values differ, "key recorded -> given"; a key the recorded recipe does not have
    (added to the schema since it was built) differs only when given other than its default."""
    if isinstance(a, dict) and isinstance(b, dict):
        defaults = defaults if isinstance(defaults, dict) else {}
        return [k for key in sorted(set(a) | set(b)) if key in a or b.get(key) != defaults.get(key, object())
                for k in _changed_keys(a.get(key), b.get(key), defaults.get(key), f"{prefix}{key}.")]
    return [] if a == b else [f"{prefix.rstrip('.')} {a!r} -> {b!r}"]


def _defaults() -> dict[str, Any]:
    """Every recipe key at its default, as canonical_recipe writes a recipe."""
    from .recipe.schema import Recipe

    return canonical_recipe(Recipe())


@dataclass
class BuiltFrom:
    """The outcome of `dpm check --built-from`: do the recorded inputs equal the given ones?"""

    differences: list[str]
    recorded: dict[str, Any] | None
    expected: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.differences


def recorded_in(artifact: str | Path) -> dict[str, Any] | None:
    """The provenance a dpm artifact (`*.dpm.pt`) or a Hugging Face folder dpm wrote records; None when it
    records none."""
    import torch

    from .checkpoint import is_artifact

    if Path(artifact).is_dir() and (Path(artifact) / "config.json").is_file():
        return _recorded_in_folder(Path(artifact))
    if not Path(artifact).is_file():
        raise CheckpointError(f"{artifact}: no such checkpoint file")
    try:  # mmap: only the small metadata is read, not the weights
        obj = torch.load(artifact, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # a pickled module or a foreign file: no metadata to read
        raise InputError(f"{artifact}: --built-from reads the provenance a dpm artifact records; "
                         f"pass the *.dpm.pt file dpm prune wrote ({type(err).__name__})") from err
    if not is_artifact(obj):
        raise InputError(f"{artifact} is not a dpm artifact: --built-from reads the provenance that "
                         "dpm prune records in MODEL.dpm.pt; pass that file")
    return (obj.get("metadata") or {}).get("provenance")


def _recorded_in_folder(folder: Path) -> dict[str, Any]:
    from .hf.save import PROVENANCE_FILE

    path = folder / PROVENANCE_FILE
    if not path.is_file():
        raise InputError(f"{folder} records no provenance ({PROVENANCE_FILE}): --built-from checks a folder "
                         "dpm prune wrote; pass that folder or its MODEL.dpm.pt")
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not the JSON dpm prune wrote ({type(err).__name__})") from err
    if not isinstance(recorded, dict):
        raise InputError(f"{path}: not the JSON dpm prune wrote")
    return recorded


def check_built_from(artifact: str | Path, recipe: Any, checkpoint: str | Path) -> BuiltFrom:
    """Was the compact model in `artifact` produced from `checkpoint` with `recipe` (and its data)?"""
    expected = record(recipe, checkpoint)
    recorded = recorded_in(artifact)
    result = BuiltFrom(differences(recorded, expected, versions=False), recorded, expected)
    if recorded and recorded.get("versions") != expected["versions"]:
        result.notes.append(f"built with {recorded.get('versions')}, checking with {expected['versions']}")
    return result
