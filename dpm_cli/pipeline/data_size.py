"""Notes on data larger than a run reads: said before the first evaluation, which is where a large
validation split costs minutes with nothing on the log (a 70 MB file's 10% held out: 40,000 texts,
each evaluation of MiniLM about 5 minutes on 2 cores)."""
from __future__ import annotations

from typing import Any

LARGE_VALIDATION = 10_000  # samples: above it, each evaluation takes minutes for a transformer on a CPU
UNREAD_FACTOR = 4  # training data this many times what the steps read: most of it is prepared for nothing


def data_size_notes(recipe: Any, data: Any, steps: int) -> list[str]:
    """What to say about the size of `data` (a DataBundle) for a run of `steps` optimizer steps."""
    d, notes = recipe.data, []
    held = len(data.val)
    if held >= LARGE_VALIDATION and d.val_samples is None:
        notes.append(f"validation holds {held:,} samples and every evaluation reads all of them (before training, "
                     "every training.eval_every steps, after): set data.val_samples (e.g. 2000) to evaluate a "
                     "fixed part")
    read, train = steps * d.batch_size, len(data.train)
    if d.num_samples is None and train >= UNREAD_FACTOR * read and train >= LARGE_VALIDATION:
        notes.append(f"training reads at most {read:,} of the {train:,} training samples ({steps} steps x "
                     f"{d.batch_size}); data.num_samples: {read} would prepare only as many")
    return notes
