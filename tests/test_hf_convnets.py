"""Convolutional networks from Hugging Face folders (ResNet, ConvNeXt, RegNet, MobileNet, EfficientNet):
their channels are pruned as a plain module's, a folder is refused before training (their configs set
widths per stage, not per layer), and the example input is shaped from the image processor's
preprocessor_config.json, since their configs have no image size.

Measured before this file existed: `dpm prune` on a ResNet folder refused with "dpm does not recognise
the feed-forward layers of ResNetForImageClassification", and `dpm report` asked for --input-shape."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from cli_helpers import run_cli  # noqa: E402
from hf_helpers import cut_half  # noqa: E402

from dpm_cli.hf import derived_example, load_hf, protected_modules  # noqa: E402
from dpm_cli.hf.save import format_problem  # noqa: E402

T = transformers
CONVNETS = {
    "resnet": (T.ResNetForImageClassification, T.ResNetConfig,
               dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=3)),
    "resnet_bottleneck": (T.ResNetModel, T.ResNetConfig, dict(embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1])),
    "convnext": (T.ConvNextForImageClassification, T.ConvNextConfig,
                 dict(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3, image_size=32)),
}
PROCESSOR = {"crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 36}}


def folder(tmp_path, family, processor=PROCESSOR):
    cls, config, kwargs = CONVNETS[family]
    torch.manual_seed(0)
    path = tmp_path / family
    cls(config(**kwargs)).eval().save_pretrained(str(path))
    if processor is not None:
        (path / "preprocessor_config.json").write_text(json.dumps(processor))
    return path


def first_output(out):
    return out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state


@pytest.mark.parametrize("family", sorted(CONVNETS))
def test_convnet_channels_are_pruned_exactly_and_a_folder_is_refused_before_training(tmp_path, family):
    model = load_hf(folder(tmp_path, family)).model
    x = derived_example(model)
    assert x["pixel_values"].shape == (1, 3, 32, 32)  # the processor's crop, not its resize
    assert protected_modules(model) == []
    problem = format_problem(model, "layer", None)
    assert "cannot record pruned convolution channels" in problem and "output.hf: false" in problem
    with torch.no_grad():
        before = first_output(model(**x)).shape
    pruner = cut_half(model, x)
    assert pruner.groups
    result = pruner.compact()
    assert result.max_rel_error <= 1e-5 and result.params_after < result.params_before
    with torch.no_grad():
        assert first_output(model(**x)).shape == before  # the classes (or the returned features) are kept


@pytest.mark.parametrize("processor, shape", [
    ({"size": {"height": 40, "width": 48}}, (1, 3, 40, 48)),
    ({"size": {"shortest_edge": 24}}, (1, 3, 24, 24)),
    ({"size": 28}, (1, 3, 28, 28)),
    (None, None),  # nothing says: the CLI then asks for --input-shape
])
def test_the_image_size_comes_from_the_processor_settings(tmp_path, processor, shape):
    model = load_hf(folder(tmp_path, "resnet", processor)).model
    x = derived_example(model)
    assert (x["pixel_values"].shape if x else None) == shape


@pytest.mark.parametrize("text, phrase", [
    (json.dumps({"size": {"height": 10 ** 9, "width": 10 ** 9}}), "input"),  # huge: not allocated
    (json.dumps({"size": "__import__('os').system('touch pwned')"}), "not a positive integer"),  # code as text
    (json.dumps({"crop_size": {"height": -3, "width": 32}}), "not a positive integer"),
    (json.dumps({"size": True}), "not a positive integer"),
    (json.dumps({"size": [32, 32, 3]}), "not a positive integer"),
    ('{"size": {"height": 3', "--input-shape"),  # truncated: no size, so the one line asks for one
    (json.dumps([1, 2, 3]), "--input-shape"),  # not a mapping
])
def test_a_hostile_processor_file_is_one_line_and_nothing_runs_or_is_written(tmp_path, capsys, monkeypatch, text, phrase):
    path = folder(tmp_path, "resnet", processor=None)
    (path / "preprocessor_config.json").write_text(text)
    before = sorted(p.name for p in path.iterdir())
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code, _, err = run_cli(["report", str(path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err and phrase in err
    assert sorted(p.name for p in path.iterdir()) == before and not (tmp_path / "pwned").exists()


def test_dpm_prune_and_report_on_a_resnet_folder(tmp_path, capsys):
    """Through the CLI: `dpm report` counts at the processor's size with no options; `dpm prune` with
    output.hf true is refused in one line before training, and with output.hf false writes an artifact
    that replays the compact model."""
    import dpm_cli

    path = folder(tmp_path, "resnet")
    code, out, err = run_cli(["report", str(path), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["input_shape"] == [1, 3, 32, 32]
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "images.npz", inputs=rng.standard_normal((48, 3, 32, 32)).astype("float32"),
             labels=rng.integers(0, 3, 48))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""\
version: 1
model: {{hf: {{path: {path}, task: AutoModelForImageClassification}}}}
data: {{source: tensors, path: images.npz, batch_size: 8}}
objective: {{kind: cross_entropy}}
pruning: {{budget: {{kind: macs, keep: 0.6}}, decay_steps: 2}}
training: {{steps: 6, log_every: 3, optimizer: {{name: adamw, lr: 1.0e-3, weight_decay: 0.0}}}}
output: {{dir: {tmp_path / 'run'}, hf: true}}
""")
    code, _, err = run_cli(["prune", "--recipe", recipe, "-q"], capsys)
    assert code == 2 and "cannot record pruned convolution channels" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    code, out, err = run_cli(["prune", "--recipe", recipe, "--json", "-q", "output.hf=false"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["equivalence_error"] <= 1e-5 and summary["macs_after"] <= 0.6 * summary["macs_before"]
    rebuilt = dpm_cli.load(tmp_path / "run" / "model.dpm.pt").eval()
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    x = {"pixel_values": torch.randn(2, 3, 32, 32)}
    with torch.no_grad():
        assert torch.allclose(rebuilt(**x).logits, compact(**x).logits, atol=1e-5)


def test_a_feature_map_is_distilled_per_position_and_pooled_for_the_embedding(tmp_path, capsys):
    """A convolutional network loaded with AutoModel returns a feature map (batch, channels, height,
    width): distilling its hidden states or embedding crashed before training ("The size of tensor a (4)
    must match the size of tensor b (16)"), since they were read as (batch, tokens, width). Positions are
    its tokens, and the embedding is the global average pool."""
    from dpm_cli.training.objective import embedding_of, hidden_of

    feature_map = torch.randn(2, 16, 4, 4)
    assert hidden_of({"last_hidden_state": feature_map}).shape == (2, 16, 16)
    assert torch.allclose(embedding_of({"last_hidden_state": feature_map}, None), feature_map.mean(dim=(2, 3)))
    path = folder(tmp_path, "resnet_bottleneck")
    np.savez(tmp_path / "images.npz", inputs=np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype("float32"))
    (tmp_path / "r.yaml").write_text(f"""\
version: 1
model: {{hf: {{path: {path}, task: AutoModel}}}}
data: {{source: tensors, path: images.npz, batch_size: 8}}
objective: {{kind: distill, targets: [embedding, hidden]}}
pruning: {{budget: {{kind: macs, keep: 0.8}}, decay_steps: 2}}
training: {{steps: 6, log_every: 3, optimizer: {{name: adamw, lr: 1.0e-3, weight_decay: 0.0}}}}
output: {{dir: {tmp_path / 'run'}, hf: false, formats: [artifact]}}
""")
    code, out, err = run_cli(["prune", "--recipe", tmp_path / "r.yaml", "--json", "-q"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["equivalence_error"] <= 1e-5 and summary["macs_after"] <= 0.8 * summary["macs_before"]
