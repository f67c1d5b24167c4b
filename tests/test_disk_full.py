"""A full disk is one line that says so, and nothing half-written is left.

Measured on a 600 KiB tmpfs: `dpm prune --recipe recipes/mnist-demo.yaml --run-dir /mnt/small/run`
failed with "error: RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos 239616 vs
239512": torch.save's way of saying the disk is full. safetensors says "SafetensorError: Error while
serializing: I/O error: No space left on device (os error 28)", a log append "OSError: [Errno 28]".
"""
from __future__ import annotations

import errno
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from cli_helpers import run_cli, write_checkpoint, write_recipe
from dpm_cli import checkpoint
from dpm_cli.checkpoint import write_atomically
from dpm_cli.errors import OutOfSpaceError

Usage = namedtuple("Usage", "total used free")


def _free(monkeypatch, free: int) -> None:
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda _: Usage(10**9, 10**9 - free, free))


def _fails_with(err: Exception):
    def write(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise err
    return write


def test_torch_saves_failure_on_a_full_disk_is_named_and_the_old_file_kept(tmp_path, monkeypatch):
    target = tmp_path / "state.pt"
    target.write_bytes(b"the last good state")
    _free(monkeypatch, 0)
    torch_says = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 239616 vs 239512")
    with pytest.raises(OutOfSpaceError, match=r"no space left to write .*state\.pt \(0 B free on its disk\): free "
                                              r"some space or write elsewhere \(--run-dir, -o\)"):
        write_atomically(target, _fails_with(torch_says))
    assert target.read_bytes() == b"the last good state" and [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_enospc_is_named_whatever_the_free_space_and_other_failures_stay_themselves(tmp_path, monkeypatch):
    _free(monkeypatch, 10**9)
    with pytest.raises(OutOfSpaceError):
        write_atomically(tmp_path / "a.pt", _fails_with(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OutOfSpaceError):  # safetensors' own error type
        write_atomically(tmp_path / "a.pt", _fails_with(Exception("I/O error: No space left on device (os error 28)")))
    with pytest.raises(RuntimeError, match="unexpected pos"):  # plenty of room: not the disk
        write_atomically(tmp_path / "a.pt", _fails_with(RuntimeError("unexpected pos 1 vs 2")))
    assert not list(tmp_path.iterdir())


def test_save_hf_on_a_full_disk_is_one_error_and_leaves_no_folder(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from hf_helpers import bert_folder

    from dpm_cli.hf import save_hf
    from dpm_cli.hf.load import load_hf

    loaded = load_hf(bert_folder(tmp_path / "src"))

    def full(*args, **kwargs):
        raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(loaded.model, "save_pretrained", full)
    out = tmp_path / "out" / "model-hf"
    with pytest.raises(OutOfSpaceError, match="no space left to write .*model-hf"):
        save_hf(loaded.model, loaded.tokenizer, out)
    assert not list((tmp_path / "out").iterdir())  # neither the folder nor its temporary one


def test_dpm_prune_on_a_full_disk_exits_1_in_one_line(tmp_path, capsys, monkeypatch):
    real = torch.save

    def save(obj, f, *args, **kwargs):
        if "state.pt" in str(f):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4096 vs 4000")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    _free(monkeypatch, 1024)
    recipe, ckpt = write_recipe(tmp_path), write_checkpoint(tmp_path)
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "--run-dir", tmp_path / "run", "-q"], capsys)
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: no space left to write ")
    assert not [p for p in (tmp_path / "run").iterdir() if ".tmp." in p.name]


def test_a_log_append_on_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    from dpm_cli.training import rundir

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir.RunDir, "append", full)
    recipe, ckpt = write_recipe(tmp_path), write_checkpoint(tmp_path)
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "--run-dir", tmp_path / "run", "-q"], capsys)
    assert code == 1 and "Traceback" not in err
    assert "no space left on device" in err.strip().splitlines()[-1].lower()
