"""Another framework's model given where dpm takes a PyTorch model is named as what it is, in one
line: `dpm prune model.gguf` said "not a readable PyTorch checkpoint (the file is corrupt ...)". The
weights file of a Hugging Face folder is pointed to its folder (it asked for a model factory)."""
from __future__ import annotations

import pytest
import torch

from cli_helpers import run_cli

FILES = {
    "model.gguf": (b"GGUF\x03\x00\x00\x00" + bytes(32), "a GGUF file (llama.cpp), not a PyTorch checkpoint"),
    "model.h5": (b"\x89HDF\r\n\x1a\n" + bytes(32), "an HDF5 file (Keras)"),
    "model.onnx": (b"\x08\x07\x12\x04onnx" + bytes(32), "an ONNX graph, not a PyTorch checkpoint"),
    "model.bin": (b"\x1c\x00\x00\x00TFL3" + bytes(32), "a TensorFlow Lite model"),  # by its bytes, not its name
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_another_frameworks_model_is_named_in_one_line(tmp_path, capsys, name):
    data, what = FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    for args in (["report", path, "--input-shape", "1,8"], ["check", path, "--max-params", "1M", "--input-shape", "1,8"]):
        code, out, err = run_cli(args, capsys)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and f"{path.name} is {what}" in lines[0], err
        assert "give the Hugging Face folder" in lines[0] and "corrupt" not in lines[0]


def test_check_names_a_foreign_baseline_before_reading_its_data(tmp_path, capsys, monkeypatch):
    from dpm_cli.report import evaldata

    monkeypatch.setattr(evaldata, "resolve_eval_data", lambda *a, **k: pytest.fail("read the data first"))
    gguf = tmp_path / "base.gguf"
    gguf.write_bytes(FILES["model.gguf"][0])
    model = tmp_path / "m.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), model)
    text = tmp_path / "t.txt"
    text.write_text("a text\n")
    code, out, err = run_cli(["check", model, "--baseline", gguf, "--data", text, "--min-cosine", "0.9"], capsys)
    assert code == 2 and "base.gguf is a GGUF file (llama.cpp)" in err, err


def test_a_torch_file_with_a_foreign_suffix_is_still_read(tmp_path, capsys):
    path = tmp_path / "weights.onnx"  # a name is no format: torch.save's own bytes win
    torch.save(torch.nn.Linear(2, 2), path)
    code, out, err = run_cli(["report", path, "--input-shape", "1,2"], capsys)
    assert code == 2 and "ONNX" not in err  # refused as a pickled module (no --trust-checkpoint), not as ONNX


def test_a_hugging_face_folders_weights_file_points_to_its_folder(tmp_path, capsys):
    pytest.importorskip("transformers")
    from hf_helpers import bert_folder, text_file, write_recipe

    folder = bert_folder(tmp_path / "enc")
    weights = folder / "model.safetensors"
    code, out, err = run_cli(["report", weights, "--input-shape", "1,8"], capsys)
    assert code == 2 and f"is the weights of the Hugging Face model folder {folder}: give the folder itself" in err
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.txt"))
    code, out, err = run_cli(["prune", weights, "-r", recipe], capsys)
    assert code == 2 and f"(model.safetensors is the weights of the folder {folder}: give {folder})" in err
    assert not (tmp_path / "run").exists()
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(FILES["model.gguf"][0])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.pt").write_bytes(b"an earlier output")  # said first, before the MODEL was looked at
    code, out, err = run_cli(["prune", gguf, "-r", recipe], capsys)
    assert code == 2 and "MODEL" in err and "is a GGUF file (llama.cpp)" in err, err


def test_a_foreign_model_with_a_factory_recipe_is_named_before_the_data_is_read(tmp_path, capsys, monkeypatch):
    import importlib

    pipeline = importlib.import_module("dpm_cli.pipeline.prune")
    monkeypatch.setattr(pipeline, "load_context", lambda *a, **k: pytest.fail("read the data first"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(FILES["model.gguf"][0])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nmodel: {factory: 'dpm_cli.models:mlp', input_shape: [1, 1, 8, 8]}\n"
                      f"data: {{source: digits}}\noutput: {{dir: {tmp_path / 'run'}}}\n")
    code, out, err = run_cli(["prune", gguf, "-r", recipe], capsys)
    assert code == 2 and "is a GGUF file (llama.cpp), not a PyTorch checkpoint" in err, err


LFS = (b"version https://git-lfs.github.com/spec/v1\noid sha256:4b4d0f1a2c3e5d6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f"
       b"5a6b7c8d9e0f\nsize 90868416\n")  # what a clone without git-lfs holds in place of a large file


@pytest.mark.parametrize("weights", ["model.safetensors", "tokenizer.json"])
def test_a_folder_cloned_without_git_lfs_is_named_in_one_line(tmp_path, capsys, weights):
    """A Hugging Face repository cloned without git-lfs has ~130-byte pointers for its large files:
    `dpm report` and `dpm prune` said "transformers cannot load it ... header too large"."""
    pytest.importorskip("transformers")
    from hf_helpers import bert_folder, text_file, write_recipe

    folder = bert_folder(tmp_path / "clone")
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.txt"))
    (folder / weights).write_bytes(LFS)
    for args in (["report", folder], ["prune", "-r", recipe]):
        code, out, err = run_cli(args, capsys)
        assert code == 2 and f"{weights} is a Git LFS pointer, not the file's contents: fetch the contents with " \
                              "`git lfs pull`" in err, err


def test_a_checkpoint_or_data_file_that_is_a_git_lfs_pointer_is_named_not_trained_on(tmp_path, capsys):
    """A text data file that was a pointer was read as three lines of text and trained on."""
    pointer = tmp_path / "model.pt"
    pointer.write_bytes(LFS)
    code, out, err = run_cli(["report", pointer, "--input-shape", "1,8"], capsys)
    assert code == 2 and f"model.pt is a Git LFS pointer ({len(LFS)} bytes), not the file's contents" in err, err
    from dpm_cli.data import load_data
    from dpm_cli.errors import InputError

    for name in ("train.txt", "train.pt"):
        (tmp_path / name).write_bytes(LFS)
        source = "text" if name.endswith(".txt") else "tensors"
        with pytest.raises(InputError, match=f"{name} is .*Git LFS pointer"):
            load_data(source, path=tmp_path / name, **({"tokenizer": object()} if source == "text" else {}))


@pytest.mark.parametrize("case", ["lfs-data", "lfs-weights", "cut-header", "pickled-namespace"])
def test_hostile_inputs_to_prune_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, case):
    """Each file the readers changed for this session: refused before any run directory exists, with no
    traceback, and the pickled object never constructed."""
    pytest.importorskip("transformers")
    import argparse

    from hf_helpers import bert_folder, text_file, write_recipe

    folder = bert_folder(tmp_path / "src")
    data = text_file(tmp_path / "t.txt")
    recipe = write_recipe(tmp_path, folder, data)
    args = ["prune", "-r", recipe]
    if case == "lfs-data":
        data.write_bytes(LFS)
    elif case == "lfs-weights":
        (folder / "model.safetensors").write_bytes(LFS)
    elif case == "cut-header":
        with open(folder / "model.safetensors", "r+b") as f:
            f.truncate(100)
    else:  # code inside a checkpoint: a factory recipe with a checkpoint whose pickle names a class
        from cli_helpers import write_recipe as factory_recipe

        ckpt = tmp_path / "last.ckpt"
        torch.save({"state_dict": {}, "hyper_parameters": argparse.Namespace(lr=0.1)}, ckpt)
        args = ["prune", ckpt, "-r", factory_recipe(tmp_path)]
    code, out, err = run_cli(args, capsys)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("note:", "\r", "Writing"))]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()
