"""Model files of other frameworks, recognised so that the error names them: `dpm prune model.gguf`
said "not a readable PyTorch checkpoint (the file is corrupt ...)", which sends a user looking for
corruption instead of for the PyTorch model the file was converted from."""
from __future__ import annotations

from pathlib import Path

BACK = ("dpm prunes PyTorch models: give the Hugging Face folder (config.json, model.safetensors) or checkpoint "
        "it was {made} from, and {after}")
# (how the file is recognised, what it is, how it was made from a PyTorch model, what to do with the result)
MAGIC = ((b"GGUF", "a GGUF file (llama.cpp)", "converted", "convert the pruned folder to GGUF again"),
         (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras)", "converted", "convert the pruned model again"))
SUFFIXES = {".onnx": ("an ONNX graph", "exported", "export the pruned model again (dpm writes BASE.pt2)"),
            ".tflite": ("a TensorFlow Lite model", "converted", "convert the pruned model again"),
            ".mlmodel": ("a Core ML model", "converted", "convert the pruned model again"),
            ".engine": ("a TensorRT engine", "built", "build the engine from the pruned model again")}


# A repository cloned without git-lfs holds, for each large file, a pointer of ~130 bytes in its place.
# safetensors read one as "header too large", torch.load as "the file is corrupt".
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
LFS_FIX = "fetch the contents with `git lfs pull` in the clone (a Hugging Face repository: or `hf download ID --local-dir DIR`)"


def is_lfs_pointer(path: Path) -> bool:
    return _head(path, len(LFS_POINTER)) == LFS_POINTER


def lfs_pointers(folder: Path) -> list[str]:
    """The large files of a model folder (weights, tokenizer) that are Git LFS pointers, not contents."""
    candidates = [*folder.glob("*.safetensors"), *folder.glob("*.model"), folder / "tokenizer.json"]
    return sorted(p.name for p in candidates if p.is_file() and is_lfs_pointer(p))


def _head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def foreign_format(path: Path) -> str | None:
    """What the file is, and what to give dpm instead, when it is another framework's model; else None."""
    head = _head(path, len(LFS_POINTER))
    if head == LFS_POINTER:  # is_lfs_pointer, from the bytes already read
        return f"a Git LFS pointer ({path.stat().st_size} bytes), not the file's contents: {LFS_FIX}"
    for magic, what, made, after in MAGIC:
        if head.startswith(magic):
            return f"{what}, not a PyTorch checkpoint; {BACK.format(made=made, after=after)}"
    known = SUFFIXES[".tflite"] if head[4:8] == b"TFL3" else SUFFIXES.get(path.suffix.lower())
    if known is not None and not head.startswith((b"PK\x03\x04", b"\x80")):  # not torch.save's zip or pickle
        what, made, after = known
        return f"{what}, not a PyTorch checkpoint; {BACK.format(made=made, after=after)}"
    return None


def folder_of_weights(path: Path) -> Path | None:
    """The Hugging Face folder a weights file belongs to (config.json beside a .safetensors), or None."""
    if path.suffix == ".safetensors" or path.name.endswith(".safetensors.index.json"):
        return path.parent if (path.parent / "config.json").is_file() else None
    return None
