"""A model too large for the machine's memory is refused before it is hashed or loaded.

Without the check, a CPU fine-tune of a model a few times the machine's memory loaded for minutes and
was then killed by the kernel (exit 137, no message): what a 7-16 GiB CI runner does with a model of a
few billion parameters. The parameter count comes from the safetensors headers, without loading."""
from __future__ import annotations

import json

import pytest

transformers = pytest.importorskip("transformers")

from cli_helpers import run_cli  # noqa: E402
from hf_helpers import bert_folder, text_file, write_recipe  # noqa: E402

from dpm_cli.errors import InputError  # noqa: E402
from dpm_cli.pipeline import memory  # noqa: E402
from dpm_cli.recipe import load_recipe  # noqa: E402

GiB = 2**30


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return bert_folder(tmp_path_factory.mktemp("mem") / "bert")


def parameters_of(folder) -> int:
    model = transformers.AutoModel.from_pretrained(str(folder))
    return sum(t.numel() for t in model.state_dict().values())


def test_the_parameters_are_counted_from_the_headers_of_one_file_or_of_shards(folder, tmp_path):
    assert memory.stored_parameters(folder) == parameters_of(folder)
    model = transformers.AutoModel.from_pretrained(str(folder))
    model.save_pretrained(str(tmp_path / "sharded"), max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert memory.stored_parameters(tmp_path / "sharded") == parameters_of(folder)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"\xff" * 16)  # no header: unknown, not a guess
    assert memory.stored_parameters(tmp_path / "bad") is None


def test_the_least_a_fine_tune_holds_follows_optimizer_and_objective(folder, tmp_path):
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.txt"))
    n = 1_000_000
    adamw_distill = load_recipe(recipe, ["training.optimizer.name=adamw"])
    assert memory.training_bytes(n, adamw_distill) == 4 * n * 5  # weights, grads, 2 moments, the original
    sgd_ce = load_recipe(recipe, ["objective={kind: cross_entropy}", "training.optimizer.name=sgd",
                                  "training.optimizer.momentum=0"])
    assert memory.training_bytes(n, sgd_ce) == 4 * n * 2


def test_a_model_that_cannot_fit_is_refused_before_anything_runs(folder, tmp_path, capsys, monkeypatch):
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.txt"))
    need = memory.training_bytes(memory.stored_parameters(folder), load_recipe(recipe))
    monkeypatch.setattr(memory, "usable_memory", lambda: (need - 1, need - 1))
    code, _, err = run_cli(["prune", "-r", recipe], capsys)
    assert code == 2 and "Traceback" not in err, err
    assert f"has 0.00B parameters: fine-tuning them on the CPU holds at least {need / GiB:.1f} GiB" in err
    assert "this process may use; use a machine (or a GPU, training.device: cuda) with more memory" in err
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


def test_a_model_that_may_not_fit_is_said_and_the_run_goes_on(folder, tmp_path, capsys, monkeypatch):
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.txt"))
    need = memory.training_bytes(memory.stored_parameters(folder), load_recipe(recipe))
    monkeypatch.setattr(memory, "usable_memory", lambda: (64 * GiB, need - 1))
    code, out, err = run_cli(["prune", "-r", recipe, "--json"], capsys)
    assert code == 0, err
    assert "free now: the run may be stopped for memory" in err
    # a reused result trains nothing, so it needs no memory: not refused
    monkeypatch.setattr(memory, "usable_memory", lambda: (need - 1, need - 1))
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "--reuse"], capsys)
    assert code == 0 and json.loads(out)["reused"] is True, err


def test_this_machine_reports_its_memory():
    total, free = memory.usable_memory()
    assert total is not None and total > 2**28
    assert free is None or 0 < free <= total


def test_a_checkpoint_file_is_not_guessed_from_its_size(tmp_path):
    """A .pt may hold an optimizer's state beside the weights: its size / 4 could refuse a run that fits."""
    path = tmp_path / "model.pt"
    path.write_bytes(b"\0" * 4096)
    assert memory.stored_parameters(path) is None


def test_every_local_process_under_torchrun_is_counted(folder, tmp_path, monkeypatch):
    recipe = load_recipe(write_recipe(tmp_path, folder, text_file(tmp_path / "t.txt")))
    need = memory.training_bytes(memory.stored_parameters(folder), recipe)
    monkeypatch.setattr(memory, "usable_memory", lambda: (2 * need - 1, None))
    assert memory.check_memory(recipe, folder, "cpu") is None  # one process fits
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(InputError, match=f"at least {2 * need / GiB:.1f} GiB in 2 processes"):
        memory.check_memory(recipe, folder, "cpu")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "not a number")
    assert memory.check_memory(recipe, folder, "cpu") is None
    assert memory.check_memory(recipe, folder, "cuda") is None  # host memory is what is checked, on the CPU


def test_a_language_models_logits_are_counted_and_a_batch_too_large_for_them_refused(tmp_path, capsys, monkeypatch):
    """A decoder's logits are one float per vocabulary entry per token: with Gemma's 256,000 entries one
    evaluation batch of the default 256 texts x 128 tokens is 34 GiB per copy, whatever the model's size,
    and the run died at its first evaluation. Counted before anything loads (config.json's vocab_size)."""
    from test_hf_llama import RECIPE, llama_folder

    folder = llama_folder(tmp_path / "llama", tied=False)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, vocab_size=256_000)))  # read, never loaded
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(folder=folder, data=text_file(tmp_path / "t.txt", 24), run=tmp_path / "run",
                                    formats="module"))
    loaded = load_recipe(recipe)  # distilled: batch 8, eval batch 16, 12 tokens
    evaluation = 4 * 16 * 12 * 256_000 * 2  # the model's logits and the original's
    assert memory.logits_bytes(loaded, folder)[0] == evaluation > 4 * 8 * 12 * 256_000 * 3
    bert = bert_folder(tmp_path / "bert")
    (tmp_path / "enc").mkdir()
    encoder = load_recipe(write_recipe(tmp_path / "enc", bert, text_file(tmp_path / "e.txt")))
    assert memory.logits_bytes(encoder, bert) == (0, "")  # an encoder has none
    weights = memory.training_bytes(memory.stored_parameters(folder), loaded)
    monkeypatch.setattr(memory, "usable_memory", lambda: (weights + evaluation - 1, None))
    code, _, err = run_cli(["prune", "-r", recipe], capsys)
    assert code == 2 and "GiB of logits in one evaluation (16 texts x 12 tokens x a 256,000-token vocabulary; " \
                         "data.eval_batch_size)" in err, err
    assert "lower data.batch_size and data.eval_batch_size (or model.seq_len)" in err
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(memory, "usable_memory", lambda: (weights + evaluation, None))
    assert memory.check_memory(loaded, folder, "cpu") is None  # it fits: nothing said


def test_a_masked_lms_logits_over_its_vocabulary_are_counted_too(tmp_path):
    """XLM-R's masked-LM head has 250,002 logits per token; an encoder without such a head has none."""
    bert = bert_folder(tmp_path / "bert")
    recipe = load_recipe(write_recipe(tmp_path, bert, text_file(tmp_path / "t.txt"), task="AutoModelForMaskedLM"))
    config = json.loads((bert / "config.json").read_text())
    (bert / "config.json").write_text(json.dumps(dict(config, vocab_size=250_002)))
    need, why = memory.logits_bytes(recipe, bert)
    assert need == 4 * 16 * 24 * 250_002 * 2 and "250,002-token vocabulary; data.eval_batch_size" in why
