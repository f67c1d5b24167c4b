"""Work-arounds for torch-pruning 1.6.1 bugs, applied only while dpm builds a dependency graph.

`index_mapping.update_concat_index_mapping` infers the width of every input of a concatenation; where
it cannot (partial rotary embeddings: `cat(rotated, passed_through)` after a `split`, as MiniMax,
DINOv3, GLM-4-MoE-Lite and DeepSeek-V4 do), it means to leave that concat without an index mapping
(its `if ch is None: return`), but first compares `out_size != sum(chs)` with a None in `chs`
(TypeError), or indexes a split's sizes past their end (IndexError), and the whole trace fails. The
wrapper gives those two the intended outcome, no mapping for that concat. Whatever then passes
through it is still checked: dpm's preflight rehearses the removal and compares outputs before any
training, and compaction compares the compact and the decayed model.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator

from torch_pruning.dependency import index_mapping


@contextmanager
def tolerant_concat_widths() -> Iterator[None]:
    original = index_mapping.update_concat_index_mapping

    def update(graph: Any, cat_node: Any) -> None:
        try:
            original(graph, cat_node)
        except (TypeError, IndexError):
            cat_node.module.concat_sizes = None  # unknown widths: no index mapping, as torch-pruning intends
            cat_node.module.offsets = None

    index_mapping.update_concat_index_mapping = update
    try:
        yield
    finally:
        index_mapping.update_concat_index_mapping = original


@contextmanager
def quiet_unwrapped() -> Iterator[None]:
    """Without torch-pruning's "Unwrapped parameters detected" warning while a graph is built: it names
    every parameter no layer pruner owns (a ViT's class token, T5's norm weights) and gives it its last
    dim, and it reached stderr on every run of such a model. Whatever dpm removes is rehearsed and
    checked for equivalence, whichever dim it took."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        yield
