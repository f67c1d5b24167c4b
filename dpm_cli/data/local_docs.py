"""`data.source: local-docs`: the English documentation already on this machine, as calibration text.

Python's documentation topics (`pydoc_data`, what `data.source: pydoc` reads) are one narrow kind of
text, and a sentence encoder distilled on them alone does worse on other text (docs/BENCHMARKS.md).
This source adds the long descriptions of every installed Python distribution (their READMEs, read
with `importlib.metadata`: for dpm itself that is at least torch, transformers, typer, rich, PyYAML and
what they pull in): prose about many projects, written by many people. Paragraphs that are licence
text are left out (a licence is not what an encoder is asked to embed, and dpm's benchmark judges on
licences as text of another kind). Nothing is downloaded and nothing is imported; the order is fixed
(distributions by name), so the same machine gives the same text.
"""
from __future__ import annotations

import importlib.metadata
import re

from .text import pydoc_paragraphs

MIN_CHARS = 60
_LICENCE = re.compile(r"licen[cs]e|copyright|warrant|redistribut|hereby|rights reserved", re.IGNORECASE)


def prose_paragraphs(text: str, licences: bool = False) -> list[str]:
    """Blank-line separated paragraphs that read as prose: long enough, mostly letters, not a table,
    not licence text unless `licences`; whitespace collapsed."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        flat = " ".join(block.split())
        letters = sum(c.isalpha() for c in flat)
        if (len(flat) >= MIN_CHARS and letters >= 0.7 * len(flat.replace(" ", "")) and flat.count("|") < 3
                and (licences or not _LICENCE.search(flat))):
            out.append(flat)
    return out


def distribution_descriptions() -> list[str]:
    """Prose paragraphs of the long descriptions of the installed distributions, sorted by name,
    each paragraph once."""
    by_name: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower()
        body = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        if name and name not in by_name and isinstance(body, str):
            by_name[name] = body
    paragraphs = (p for name in sorted(by_name) for p in prose_paragraphs(by_name[name]))
    return list(dict.fromkeys(paragraphs))


def local_docs_paragraphs() -> list[str]:
    """Python's documentation topics, then the installed distributions' descriptions."""
    return list(dict.fromkeys(pydoc_paragraphs() + distribution_descriptions()))
