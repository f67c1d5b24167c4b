"""Text that ships on every machine, for calibrating and judging a pruned sentence encoder.

Three kinds, so that a model tuned on one is judged on another:
- `pydoc`: Python's documentation topics (`pydoc_data.topics`, what `data.source: pydoc` reads);
- `docstrings`: docstrings of the standard library's own modules, read with `ast` (nothing imported);
- `prose`: English prose that is not about Python: the licence texts Debian ships in
  /usr/share/common-licenses, Python's LICENSE.txt, and scikit-learn's dataset descriptions;
- `news`: general English, not documentation at all: the Lee corpus of 300 news articles (Australian
  Broadcasting Corporation, 2001) that gensim's wheel ships as test data, cut into paragraphs of at least
  50 words. It needs gensim's files, not gensim (`pip install --no-deps gensim`; nothing is imported).
Every list is deterministic (sorted files, fixed seeds) and deduplicated.
"""
from __future__ import annotations

import ast
import importlib.util
import random
import re
import sysconfig
from pathlib import Path


def _paragraphs(text: str) -> list[str]:
    from dpm_cli.data.local_docs import prose_paragraphs

    return prose_paragraphs(text, licences=True)  # the prose set IS licences: judged as text of another kind


def _sample(items: list[str], limit: int | None, seed: int) -> list[str]:
    unique = list(dict.fromkeys(items))
    random.Random(seed).shuffle(unique)
    return unique if limit is None else unique[:limit]


def pydoc(limit: int | None = None, seed: int = 0) -> list[str]:
    from dpm_cli.data.text import pydoc_paragraphs

    return _sample(pydoc_paragraphs(), limit, seed)


def docstrings(limit: int | None = 600, seed: int = 0) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo", "__pycache__"}
    texts: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if skip & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    texts.extend(_paragraphs(doc))
    return _sample(texts, limit, seed)


def prose(limit: int | None = 600, seed: int = 0) -> list[str]:
    files = sorted(p for p in Path("/usr/share/common-licenses").glob("*") if p.is_file() and not p.is_symlink())
    files.append(Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt")
    try:
        import sklearn

        files += sorted((Path(sklearn.__file__).parent / "datasets" / "descr").glob("*.rst"))
    except ImportError:
        pass
    texts: list[str] = []
    for path in files:
        if path.is_file():
            texts.extend(_paragraphs(path.read_text(encoding="utf-8", errors="replace")))
    return _sample(texts, limit, seed)


def news(limit: int | None = 600, seed: int = 0) -> list[str]:
    spec = importlib.util.find_spec("gensim")  # finds the package's folder without running it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the news set reads gensim's test data: pip install --no-deps gensim")
    corpus = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data" / "lee_background.cor"
    texts: list[str] = []
    for article in corpus.read_text(encoding="utf-8", errors="replace").splitlines():
        paragraph: list[str] = []
        for sentence in re.split(r"(?<=[.!?])\s+", article.strip()):
            paragraph.append(sentence)
            if sum(len(s.split()) for s in paragraph) >= 50:
                texts.append(" ".join(paragraph))
                paragraph = []
        if paragraph:
            texts.append(" ".join(paragraph))
    return _sample(texts, limit, seed)


KINDS = {"pydoc": pydoc, "docstrings": docstrings, "prose": prose, "news": news}
