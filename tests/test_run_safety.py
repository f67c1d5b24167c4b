"""--force deletes only what dpm wrote; one run per run directory and output; outputs checked before training."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import run_cli, write_checkpoint, write_recipe
from dpm_cli.pipeline import prune
from dpm_cli.recipe import load_recipe
from dpm_cli.training.rundir import RunDir


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_force_never_deletes_a_folder_of_user_files(tmp_path, capsys):
    """Finding: a recipe whose output.dir named a folder of the user's files deleted them with --force."""
    ckpt = write_checkpoint(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    recipe = write_recipe(tmp_path, extra="")
    recipe.write_text(recipe.read_text().replace(str(tmp_path / "run"), str(mine)))
    code, _, err = run_cli(["prune", ckpt, "-r", recipe, "--force", "-q"], capsys)
    assert code == 2
    assert "is not a dpm run directory: choose a new or empty one" in one_error_line(err)
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"], "nothing written there either"


def test_run_dir_dot_keeps_the_checkpoint_and_recipe(tmp_path, capsys, monkeypatch):
    """Finding: `--run-dir .` deleted the input checkpoint and the recipe, then failed."""
    recipe, ckpt = write_recipe(tmp_path), write_checkpoint(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code, _, err = run_cli(["prune", "dense.pt", "-r", "r.yaml", "--run-dir", ".", "--force", "-q"], capsys)
    assert code == 2
    assert "is not a dpm run directory" in one_error_line(err)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_force_replaces_only_dpm_files_and_outputs_it_wrote(tmp_path, capsys):
    recipe, ckpt = write_recipe(tmp_path, steps=10), write_checkpoint(tmp_path)
    run, out = tmp_path / "run", tmp_path / "out" / "m"
    assert run_cli(["prune", ckpt, "-r", recipe, "-o", out, "-q"], capsys)[0] == 0
    assert json.loads((run / ".dpm-run").read_text())["dpm"]
    (run / "notes.txt").write_text("mine")
    (run / "metrics.jsonl").write_text('{"step": 999}\n')
    # the same command again: outputs exist, no --force -> refused before anything runs
    code, _, err = run_cli(["prune", ckpt, "-r", recipe, "-o", out, "-q"], capsys)
    assert code == 2 and "exists" in one_error_line(err)
    code, _, err = run_cli(["prune", ckpt, "-r", recipe, "-o", out, "--force", "-q"], capsys)
    assert code == 0, err
    assert (run / "notes.txt").read_text() == "mine", "a file dpm did not write survives --force"
    assert '"step": 999' not in (run / "metrics.jsonl").read_text(), "dpm's own log was replaced"
    # a file of the user's under an output name is never overwritten, even with --force
    out.with_name("m.pt").write_text("someone else's model")
    code, _, err = run_cli(["prune", ckpt, "-r", recipe, "-o", out, "--force", "-q"], capsys)
    assert code == 2 and "dpm did not write it" in one_error_line(err)
    assert out.with_name("m.pt").read_text() == "someone else's model"


def test_force_refuses_a_run_dir_holding_an_input(tmp_path, capsys):
    recipe, ckpt = write_recipe(tmp_path, steps=10), write_checkpoint(tmp_path)
    run = tmp_path / "run"
    assert run_cli(["prune", ckpt, "-r", recipe, "-q"], capsys)[0] == 0
    inside = run / "dense.pt"  # dpm's own cache name: exactly what --force would delete
    inside.write_bytes(ckpt.read_bytes())
    code, _, err = run_cli(["prune", inside, "-r", recipe, "--force", "-q"], capsys)
    assert code == 2 and "an input of this run" in one_error_line(err)
    assert inside.read_bytes() == ckpt.read_bytes()
    moved = run / "r.yaml"
    moved.write_text(recipe.read_text())
    code, _, err = run_cli(["prune", ckpt, "-r", moved, "--force", "-q"], capsys)
    assert code == 2 and "an input of this run" in one_error_line(err)
    assert moved.is_file()


def test_output_under_a_file_fails_before_training(tmp_path, capsys):
    """Finding: `--output afile/sub/model` failed only after all the training."""
    recipe, ckpt = write_recipe(tmp_path, steps=10**6), write_checkpoint(tmp_path)
    (tmp_path / "afile").write_text("")
    start = time.monotonic()
    code, _, err = run_cli(["prune", ckpt, "-r", recipe, "-o", tmp_path / "afile" / "sub" / "model", "-q"], capsys)
    assert code == 2 and "is not a folder" in one_error_line(err)
    assert time.monotonic() - start < 30, "refused before a million training steps"
    assert not (tmp_path / "run").exists()


def test_second_run_with_the_same_output_fails_before_training(tmp_path, capsys):
    """Finding: a second run with the same --output failed only after all the training."""
    recipe, ckpt = write_recipe(tmp_path, steps=10), write_checkpoint(tmp_path)
    out = tmp_path / "shared" / "m"
    assert run_cli(["prune", ckpt, "-r", recipe, "-o", out, "-q"], capsys)[0] == 0
    code, _, err = run_cli(["prune", ckpt, "-r", recipe, "-o", out, "--run-dir", tmp_path / "b", "-q",
                            "training.steps=1000000"], capsys)
    assert code == 2 and "exists" in one_error_line(err)
    assert not (tmp_path / "b").exists()


def wait_for(predicate, proc, seconds=240.0):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert predicate(), "the background run did not get there"


def test_one_run_per_run_dir_and_output_and_kill_9_frees_the_lock(tmp_path, capsys):
    """Finding: two `dpm prune --force` into the same run dir both exited 0 with interleaved logs."""
    recipe, ckpt = write_recipe(tmp_path, steps=40), write_checkpoint(tmp_path)
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "dpm_cli", "prune", str(ckpt), "-r", str(recipe), "-q", "training.steps=100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_for(lambda: (run / "state.pt").exists(), proc)
        start = time.monotonic()
        code, _, err = run_cli(["prune", ckpt, "-r", recipe, "--force", "-q", "training.steps=100000"], capsys)
        assert code == 2 and f"in use by another dpm run (pid {proc.pid})" in one_error_line(err)
        code, _, err = run_cli(["prune", ckpt, "-r", recipe, "--resume", "-q", "training.steps=100000"], capsys)
        assert code == 2 and f"pid {proc.pid}" in one_error_line(err)
        # another run dir, the same output base: refused once it would start writing
        code, _, err = run_cli(["prune", ckpt, "-r", recipe, "--run-dir", tmp_path / "b", "-o", run / "model", "-q",
                                "training.steps=100000"], capsys)
        assert code == 2 and f"pid {proc.pid}" in one_error_line(err)
        assert time.monotonic() - start < 120
        assert proc.poll() is None, "the first run kept going"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (run / ".dpm-lock").read_text().strip() == str(proc.pid), "the lock file outlives its holder"
    # the killed run's lock never blocks --resume (the kernel released it; test_resume's kill -9 test
    # resumes such a run through the CLI)
    lock = RunDir(run)
    lock.check(resume=True, force=False)  # takes the lock
    lock.release()


def test_library_prune_releases_its_locks(tmp_path):
    recipe, ckpt = write_recipe(tmp_path, steps=10), write_checkpoint(tmp_path)
    r = load_recipe(recipe)
    prune(r, model_path=ckpt, recipe_path=recipe)
    prune(r, model_path=ckpt, recipe_path=recipe, force=True)  # same process, same folder: not blocked by itself


def test_a_finished_run_leaves_no_lock_file_beside_its_outputs(tmp_path, capsys):
    """Finding: `dpm prune -o dist/model` left a hidden dist/.model.dpm-lock, which a step publishing
    dist/ (aws s3 sync, an upload of the folder) shipped with the model."""
    recipe, ckpt = write_recipe(tmp_path, steps=10), write_checkpoint(tmp_path)
    assert run_cli(["prune", ckpt, "-r", recipe, "-o", tmp_path / "dist" / "model", "-q"], capsys)[0] == 0
    assert not list((tmp_path / "dist").glob("*lock*")) and not list((tmp_path / "run").glob("*lock*"))
    assert (tmp_path / "dist" / "model.pt").is_file()
    code, _, err = run_cli(["prune", ckpt, "-r", recipe, "-o", tmp_path / "dist" / "model", "-q", "--force"], capsys)
    assert code == 0, err  # and the next run locks the same paths afresh


def test_a_lock_file_removed_by_its_last_holder_is_never_held_twice(tmp_path):
    """The lock-file protocol: B opened the file before A, finishing, removed it and let go; B's lock is
    then on a file no path names, so B must lock the path afresh, or B and a third run C would both run."""
    from dpm_cli.errors import InputError
    from dpm_cli.filelock import RunLock

    path = tmp_path / ".model.dpm-lock"
    a, b, c = (RunLock(path, "output model", "choose another --output") for _ in range(3))
    a.acquire()
    stale = os.open(path, os.O_RDWR)  # B's open, just before A removes the file
    opened = iter([stale])
    original = b._open
    b._open = lambda: next(opened, None) or original()  # B's first open is the stale one
    a.release()
    assert not path.exists()
    b.acquire()  # locks the stale file, sees the path does not name it, and locks the path afresh
    assert path.exists() and b._names(b._fd)
    with pytest.raises(OSError):
        os.fstat(stale)  # B closed the stale file, letting its lock go
    with pytest.raises(InputError, match=f"in use by another dpm run \\(pid {os.getpid()}\\)"):
        c.acquire()
    b.release()
    c.acquire()
    c.release()


@pytest.mark.parametrize("resume", [False, True])
def test_run_dir_that_is_a_file(tmp_path, capsys, resume):
    recipe, ckpt = write_recipe(tmp_path), write_checkpoint(tmp_path)
    code, _, err = run_cli(["prune", ckpt, "-r", recipe, "--run-dir", ckpt, "-q"] + (["--resume"] if resume else []),
                           capsys)
    assert code == 2
    one_error_line(err)


def test_atomic_outputs_get_the_usual_file_mode_not_a_private_one(tmp_path):
    """mkstemp creates 0600 files; an output is meant to be shared, so it gets 0666 less the umask."""
    from dpm_cli.checkpoint import write_atomically

    old = os.umask(0o022)
    try:
        target = tmp_path / "model.pt"
        write_atomically(target, lambda tmp: tmp.write_bytes(b"x"))
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644
