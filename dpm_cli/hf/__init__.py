"""Hugging Face transformers models: load from a local folder, token inputs, what to prune, save back.

`transformers` is imported lazily, only when a recipe or command names a Hugging Face model, so the
rest of dpm works without it. Loading is offline (`local_files_only=True`) and never runs code from
the folder (`trust_remote_code=False`).
"""
from __future__ import annotations

from .inputs import (SAMPLE_TEXT, derived_example, folder_example, is_hf_model, token_example, with_decoder_data,
                     with_decoder_inputs)
from .load import TASKS, HFLoaded, import_transformers, is_hf_folder, load_hf
from .prunable import ffn_roots, protected_modules
from .save import HFFormatError, save_hf

__all__ = [
    "TASKS", "HFLoaded", "HFFormatError", "SAMPLE_TEXT", "import_transformers", "is_hf_folder", "is_hf_model",
    "load_hf", "token_example", "with_decoder_data", "with_decoder_inputs", "derived_example", "folder_example", "ffn_roots", "protected_modules", "save_hf",
]
