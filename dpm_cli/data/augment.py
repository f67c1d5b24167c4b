"""Word-replacement augmentation of training text: broader input for calibration and distillation.

A pruned encoder is calibrated (which units go, what the refit fits) and distilled on the text it is
given, and it keeps the units that text excites. Replacing some of the words of some paragraphs by
whole words drawn from the tokenizer's own vocabulary keeps the sentences' structure while reaching
words the calibration text never uses: on all-MiniLM-L6-v2 calibrated on pydoc topics, replacing half
the words of half the paragraphs lifts the one-shot cosine on English prose by 0.018; on text that is
already broad (local-docs) it trades docstrings for prose (docs/BENCHMARKS.md).
Labels are kept as they are, so it is meant for label-free distillation. Validation text is never changed.
"""
from __future__ import annotations

import random
from typing import Any


# How a vocabulary marks a word's first piece: byte-level BPE (GPT-2, RoBERTa) and SentencePiece (Llama,
# T5). Their unmarked pieces continue a word; WordPiece (BERT) marks the continuations instead ('##').
WORD_START = ("\u0120", "\u2581")  # 'Ġ', '▁'


def vocabulary_words(tokenizer: Any) -> list[str]:
    """The tokenizer's whole words (alphabetic, ASCII, two letters or more), sorted: the pieces that start
    a word, without their marker, when the vocabulary marks word starts; else its unmarked entries."""
    vocab = list(tokenizer.get_vocab())
    marker = next((m for m in WORD_START if sum(w.startswith(m) for w in vocab) * 10 > len(vocab)), None)
    words = [w[len(marker):] for w in vocab if w.startswith(marker)] if marker else vocab
    return sorted({w for w in words if len(w) > 1 and w.isascii() and w.isalpha()})


def replace_words(texts: list[str], words: list[str], *, rate: float, share: float, seed: int) -> list[str]:
    """A copy of `texts` where `share` of the paragraphs (chosen with `seed`) have each word replaced,
    with probability `rate`, by one of `words`. The same seed gives the same text."""
    if not words or rate <= 0 or share <= 0:
        return list(texts)
    rng = random.Random(seed)
    chosen = set(rng.sample(range(len(texts)), round(share * len(texts))))
    out = []
    for i, text in enumerate(texts):
        if i in chosen:
            text = " ".join(rng.choice(words) if rng.random() < rate else w for w in text.split())
        out.append(text)
    return out
