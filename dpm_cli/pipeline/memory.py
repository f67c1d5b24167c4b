"""Will the fine-tune fit in this machine's memory? Asked before the model is hashed or loaded.

A model too large for the machine was loaded for minutes and then killed by the kernel (exit 137, no
message), which is what a CI runner with 7-16 GiB does with a model of a few billion parameters. The
parameter count of a Hugging Face folder is read from its safetensors headers, without loading anything,
and the least that training on the CPU holds is compared with the memory the process may use:

    float32 weights + their gradients + the optimizer's state per weight (AdamW: two moments, SGD with
    momentum: one) + a frozen float32 copy of the original when it is distilled from or refitted to.

A language model (or a masked or seq2seq LM) adds its logits, one float per vocabulary entry per
token: in a training step the model's, their gradient and the original's when distilling; in an
evaluation the model's and the original's. With a 256,000-token vocabulary (Gemma) one evaluation batch
of 256 texts x 128 tokens is 34 GiB per copy, whatever the model's size: the run died at its first
evaluation.

Activations, the data and Python come on top, so this is a lower bound: above the memory the process may
use at all (physical memory, or its container's limit) the run cannot succeed and is refused in one line;
above what is free now it is said, and the run goes on.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputError

def stored_parameters(path: str | Path) -> int | None:
    """Parameters in a Hugging Face folder's safetensors files (every tensor's element count, read from
    the headers); None when unknown. A checkpoint file is not counted: its size says nothing exact (it may
    hold an optimizer's state beside the weights), and a guess must not refuse a run that would fit."""
    from ..hf.weights_files import stored_elements, weights_files

    path = Path(path)
    files = weights_files(path) if path.is_dir() else None
    counts = [stored_elements(f) for f in files or []]
    return None if not counts or None in counts else sum(counts)  # type: ignore[arg-type]


def _has_copy(recipe: Any) -> bool:
    return recipe.objective.kind == "distill" or bool(recipe.pruning.reconstruct)


def training_bytes(parameters: int, recipe: Any) -> int:
    """The least a CPU fine-tune of `parameters` float32 weights holds (see the module docstring)."""
    optimizer = recipe.training.optimizer
    states = 2 if optimizer.name == "adamw" else (1 if optimizer.momentum > 0 else 0)
    copies = 2 + states  # weights, gradients, optimizer state
    if _has_copy(recipe):
        copies += 1  # the frozen original
    return 4 * parameters * copies


# heads with a logit per vocabulary entry per token: language models, a masked LM (XLM-R: 250,002), and
# a seq2seq LM's decoder (which reads as many tokens as the text: the text shifted right)
VOCABULARY_TASKS = ("AutoModelForCausalLM", "AutoModelForImageTextToText", "AutoModelForMaskedLM",
                    "AutoModelForSeq2SeqLM")


def logits_bytes(recipe: Any, folder: str | Path) -> tuple[int, str]:
    """(The least a model's logits over its vocabulary take in its larger step, which step and why), or
    (0, "") for a model without such a head or whose vocabulary config.json does not state."""
    from ..hf.load import folder_config, is_hf_folder
    from ..hf.tasks import loads_as

    if not is_hf_folder(folder) or not loads_as(folder, recipe.model.hf.task, VOCABULARY_TASKS):
        return 0, ""
    config = folder_config(folder)
    vocab = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab < 1:
        return 0, ""
    d, tokens, teacher = recipe.data, recipe.model.seq_len, _has_copy(recipe)
    steps = [(4 * d.batch_size * tokens * vocab * (3 if teacher else 2), "training step", d.batch_size, "batch_size"),
             (4 * d.eval_batch_size * tokens * vocab * (2 if teacher else 1), "evaluation", d.eval_batch_size,
              "eval_batch_size")]
    need, step, batch, key = max(steps)
    return need, (f"{need / 2**30:.1f} GiB of logits in one {step} ({batch} texts x {tokens} tokens x a "
                  f"{vocab:,}-token vocabulary; data.{key})")


def usable_memory() -> tuple[int | None, int | None]:
    """(bytes the process may use at all: physical memory or its container's limit, bytes free now);
    None where this system does not say."""
    total = None
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        pass
    limit = _cgroup_limit()
    if limit is not None:
        total = limit if total is None else min(total, limit)
    free = _meminfo_available()
    return total, (min(free, total) if free is not None and total is not None else free)


def _cgroup_limit() -> int | None:
    for file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # "max", or v1's huge number: no limit
            return int(text)
    return None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(recipe: Any, model: str | Path | None, device: str) -> str | None:
    """Refuse a CPU fine-tune that cannot fit (InputError); the note to give when it may not fit, or None.
    Every process torchrun starts on this machine (LOCAL_WORLD_SIZE) holds its own copy."""
    if model is None or device != "cpu" or not Path(model).exists():
        return None
    parameters = stored_parameters(model)
    total, free = usable_memory()
    if parameters is None or total is None:
        return None
    local = os.environ.get("LOCAL_WORLD_SIZE", "")
    processes = max(1, int(local)) if local.isdigit() else 1
    weights = training_bytes(parameters, recipe)
    logits, why = logits_bytes(recipe, model)
    need = (weights + logits) * processes
    each = f" in {processes} processes" if processes > 1 else ""
    what = (f"{model} has {parameters / 1e9:.2f}B parameters: fine-tuning them on the CPU holds at least "
            f"{need / 2**30:.1f} GiB{each} (float32 weights, gradients, the optimizer's state"
            + (" and the original model's copy" if _has_copy(recipe) else "")
            + (f", and {why}" if logits else "") + ")")
    if need > total:
        fix = ("lower data.batch_size and data.eval_batch_size (or model.seq_len)" if logits > weights else
               "use a machine (or a GPU, training.device: cuda) with more memory, or a smaller model")
        raise InputError(f"{what}, more than the {total / 2**30:.1f} GiB this process may use; {fix}")
    if free is not None and need > free:
        return f"{what}, more than the {free / 2**30:.1f} GiB free now: the run may be stopped for memory"
    return None
