"""The model card (README.md) of a folder dpm writes: what it was pruned from, by how much, and how.

A folder pushed to the Hugging Face Hub shows its README.md; transformers' Trainer and sentence-transformers
write one on save, and a pruned model must not carry its source's card, which describes another model.
The card's metadata block follows the Hub's conventions (`library_name`, `tags`). What the source's card
says of the model's terms and use (`license`, `language`, `pipeline_tag`, its tags) still holds for the
pruned model, a derivative of it, and is carried over: the card dropped an apache-2.0 licence.
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
    carried = source_metadata(Path(source)) if source else {}
    tags = list(dict.fromkeys([*carried.pop("tags", []), "dpm", "pruned", "structured-pruning"]))
    meta = {"library_name": library, **carried, "tags": tags}
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
    if "license" in carried:
        lines += [f"License: `{carried['license']}`, the source model's; its terms apply to this derivative.", ""]
    lines += ["`dpm_provenance.json` records the hashes of the inputs; `dpm check FOLDER --built-from SOURCE -r "
              "recipe.yaml` verifies them.", ""]
    return "\n".join(lines)


# Keys of the source card's metadata that describe the pruned model as well (not `datasets`, `base_model`,
# `model-index`: those describe how the source was made and what it scored).
CARRIED = ("license", "license_name", "license_link", "language", "pipeline_tag", "tags")
CARD_BYTES = 64 * 1024  # the metadata block is at the top; a card larger than this is read no further


def source_metadata(source: Path) -> dict[str, Any]:
    """The CARRIED keys of the source folder's README.md metadata block, as plain strings (or lists of
    them); {} when it has none. Read with yaml.safe_load (no code) and typed before use."""
    try:
        with open(source / "README.md", encoding="utf-8", errors="replace") as f:
            text = f.read(CARD_BYTES)
    except OSError:
        return {}
    if not text.startswith("---"):
        return {}
    block = text[3:].split("\n---", 1)[0]
    try:
        meta = yaml.safe_load(block)
    except yaml.YAMLError:
        return {}
    if not isinstance(meta, dict):
        return {}
    plain = lambda v: isinstance(v, str) and 0 < len(v) <= 200  # noqa: E731
    found: dict[str, Any] = {}
    for key in CARRIED:
        value = meta.get(key)
        if plain(value):
            found[key] = value
        elif isinstance(value, list) and value and len(value) <= 50 and all(plain(v) for v in value):
            found[key] = list(value)
    if isinstance(found.get("tags"), str):
        found["tags"] = [found["tags"]]
    return found


def _change(before: float, after: float) -> str:
    return f"{int(before):,} -> {int(after):,} ({after / before:.3f})"
