"""The README's Python example must run as written."""
from __future__ import annotations

import re

import pytest
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has a Python example"
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    kept = float(re.search(r"MACs kept ([0-9.]+)", out).group(1))
    assert kept <= 0.5


def test_readme_first_lines_are_the_two_commands():
    lines = README.read_text().splitlines()[:5]
    commands = [line for line in lines if line.startswith("pip install torch==2.13.0")]
    assert len(commands) == 2
    assert "dpm prune --recipe recipes/mnist-demo.yaml" in commands[0]
    assert "pytest" in commands[1]
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1].split("#")[0].strip().replace("pip install ", "pip install -q ") in ci


def test_readme_hugging_face_python_example_runs(tmp_path, monkeypatch):
    """The transformers section's loop, on a tiny BERT folder: it prunes and writes a folder that loads."""
    transformers = pytest.importorskip("transformers")
    from hf_helpers import bert_folder

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(b for b in blocks if "save_hf(" in b).replace("128", "32")  # the tiny model has 64 positions
    bert_folder(tmp_path / "my-encoder")
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {"__name__": "readme"})
    pruned = transformers.AutoModel.from_pretrained(str(tmp_path / "my-encoder-pruned"))
    assert pruned.config.intermediate_size == 32  # half of the tiny model's 64
