"""Layer-wise distillation (objective.targets: [layers]): every transformer block's output is matched
to the original model's, through hooks that live for one forward pass only."""
from __future__ import annotations

import io
import json

import pytest
import torch

from dpm_cli.errors import ConfigError
from dpm_cli.hf.inputs import token_example
from dpm_cli.hf.load import load_hf
from dpm_cli.models import mlp
from dpm_cli.training.objective import Objective
from dpm_cli.training.taps import find_blocks, tap_blocks
from cli_helpers import run_cli  # noqa: E402
from hf_helpers import bert_folder, text_file, write_recipe


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return bert_folder(tmp_path_factory.mktemp("bert"))


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_layers_distance_is_zero_on_the_teacher_and_sees_a_change_inside_one_block(bert):
    loaded = load_hf(bert)
    model, inputs = loaded.model, token_example(loaded.tokenizer, 24)
    objective = Objective("distill", teacher=model, labeled=False, targets=("layers",), loss="cosine")
    assert [type(b).__name__ for b in find_blocks(model)] == ["BertLayer", "BertLayer"]
    with torch.no_grad():
        assert float(objective(objective.forward(model, inputs), None, inputs)) == pytest.approx(0.0, abs=1e-6)
        norm = model.encoder.layer[0].output.LayerNorm  # block 0 now outputs the same vector for every token
        norm.weight.zero_()
        norm.bias.fill_(1.0)
        changed = float(objective(objective.forward(model, inputs), None, inputs))
        hidden_only = Objective("distill", teacher=objective.teacher, labeled=False, targets=("hidden",))
        last = float(hidden_only(model(**inputs), None, inputs))
    assert changed > 0.1 and changed > last  # the last hidden states alone see less of the damage
    assert _hooks(model) == 0 and _hooks(objective.teacher) == 0


def test_taps_are_removed_after_a_failing_forward_and_the_model_pickles(bert):
    loaded = load_hf(bert)
    model, inputs = loaded.model, token_example(loaded.tokenizer, 16)
    with pytest.raises(RuntimeError, match="interrupted"):
        with tap_blocks(model) as layers:
            model(**inputs)
            raise RuntimeError("interrupted")
    assert _hooks(model) == 0 and [tuple(t.shape) for t in layers] == [(1, 16, 32)] * 2
    torch.save(model, io.BytesIO())  # the compact model.pt is a pickle: no local hook may remain


def test_layers_without_blocks_is_refused_before_training():
    with pytest.raises(ConfigError, match="no list of transformer blocks"):
        Objective("distill", teacher=mlp(in_features=8, hidden=[4], num_classes=3), labeled=False,
                  targets=("layers",))


def test_plain_outputs_with_the_layers_target_are_refused_with_the_fix(bert):
    loaded = load_hf(bert)
    inputs = token_example(loaded.tokenizer, 16)
    objective = Objective("distill", teacher=loaded.model, labeled=False, targets=("layers",))
    with pytest.raises(ConfigError, match="Objective.forward"):
        objective(loaded.model(**inputs), None, inputs)


def test_cli_prunes_with_layer_distillation_and_writes_a_loadable_model(tmp_path, bert, capsys):
    recipe = write_recipe(tmp_path, bert, text_file(tmp_path / "t.txt"),
                          objective="{kind: distill, targets: [layers, embedding], loss: both}")
    code, out, err = run_cli(["prune", "-r", recipe, "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["metric"] == "cosine" and 0.5 < summary["after"] <= 1.0
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    assert _hooks(compact) == 0
