"""The model card (README.md) of a folder dpm writes: what it was pruned from, by how much, and how.

A folder pushed to the Hugging Face Hub shows its README.md; transformers' Trainer and sentence-transformers
write one on save, and a pruned model must not carry its source's card, which describes another model.
The card's metadata block follows the Hub's conventions (`library_name`, `tags`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def model_card(source: str | Path | None, summary: Any) -> str:
    """README.md for a pruned folder: `summary` is the PruneSummary (params and MACs before and after,
    the quality metric); `source` the folder pruned. No paths: the card is for publishing."""
    name = Path(source).resolve().name if source else "A model"
    library = "sentence-transformers" if source and (Path(source) / "modules.json").is_file() else "transformers"
    # no base_model: a folder does not know its Hub name (config's _name_or_path is often an ancestor's)
    meta = {"library_name": library, "tags": ["dpm", "pruned", "structured-pruning"]}
    params = _change(summary.params_before, summary.params_after)
    macs = _change(summary.macs_before, summary.macs_after)
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
        f"# {name}, pruned with dpm", "",
        "Structured pruning with the Decay Pruning Method (dpm): the channels and attention heads chosen as "
        "redundant decayed to zero while the model was fine-tuned, then were removed. The architecture is "
        "the source's with narrower layers; it loads with `from_pretrained` like the original.", "",
        "| | before -> after (kept) |", "|---|---|", f"| parameters | {params} |", f"| MACs | {macs} |",
        f"| validation {summary.metric} | {summary.before:.4g} -> {summary.after:.4g} |", "",
    ]
    lines += ["`dpm_provenance.json` records the hashes of the inputs; `dpm check FOLDER --built-from SOURCE -r "
              "recipe.yaml` verifies them.", ""]
    return "\n".join(lines)


def _change(before: float, after: float) -> str:
    return f"{int(before):,} -> {int(after):,} ({after / before:.3f})"
