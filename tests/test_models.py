"""The reference architectures: shapes, gradients, parameter counts, torch-pruning traceability."""
from __future__ import annotations

import importlib
import warnings
from typing import Any

import pytest
import torch
import torch_pruning as tp
from torch import nn

from dpm_cli.errors import ConfigError
from dpm_cli.models import MODELS, build_model, resnet20, resnet50, resnet56, resnet_cifar, vgg16_bn, vit_tiny

NUM_CLASSES = 7  # not the default 10, so a constructor ignoring num_classes is caught
BATCH = 2
INPUTS = {"cifar": (3, 32), "mnist": (1, 28), "digits": (1, 8)}  # (channels, side)
FAST_MODELS = [name for name in MODELS if name != "resnet50"]
CASES = [(name, data) for name in FAST_MODELS for data in INPUTS]


def _build(name: str, channels: int, side: int) -> nn.Module:
    """Build `name` for a (channels, side, side) input; each family is told its input its own way."""
    kwargs: dict[str, Any] = {"num_classes": NUM_CLASSES, "in_channels": channels}
    if name in ("vgg16_bn", "vgg_small"):
        kwargs["input_size"] = side
    elif name == "vit_tiny":
        kwargs["image_size"] = side
    elif name == "mlp":
        kwargs = {"num_classes": NUM_CLASSES, "in_features": channels * side * side}
    torch.manual_seed(0)
    return build_model(name, **kwargs)


def _case(name: str, data: str) -> tuple[nn.Module, torch.Tensor]:
    channels, side = INPUTS[data]
    return _build(name, channels, side), torch.randn(BATCH, channels, side, side)


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_holds_the_documented_names() -> None:
    assert set(MODELS) == {
        "resnet20", "resnet56", "resnet50", "vgg16_bn", "vgg_small",
        "mobilenetv2", "densenet_small", "vit_tiny", "mlp",
    }


@pytest.mark.parametrize("name,data", CASES)
def test_forward_and_backward(name: str, data: str) -> None:
    model, x = _case(name, data)
    model.train()
    logits = model(x)
    assert logits.shape == (BATCH, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.arange(BATCH)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("name,data", CASES)
def test_torch_pruning_traces(name: str, data: str) -> None:
    model, x = _case(name, data)
    with warnings.catch_warnings():
        # vit_tiny's pos_embed is a bare nn.Parameter; torch-pruning warns, then handles it.
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        graph = tp.DependencyGraph().build_dependency(model.eval(), example_inputs=x)
        groups = graph.get_all_groups(ignored_layers=[model.head], root_module_types=(nn.Conv2d, nn.Linear))
        assert list(groups)


# Pruning the graph is the same at every input size except where the flatten width changes, so
# prune each model once at 32x32, plus VGG's 3x3-map flatten at 28x28.
PRUNE_CASES = [(name, "cifar") for name in FAST_MODELS] + [("vgg_small", "mnist")]


@pytest.mark.parametrize("name,data", PRUNE_CASES)
def test_torch_pruning_removes_coupled_channels(name: str, data: str) -> None:
    model, x = _case(name, data)
    before = _param_count(model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        pruner = tp.pruner.MetaPruner(
            model.eval(),
            x,
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=0.5,
            ignored_layers=[model.head],
        )
        pruner.step()
    assert _param_count(model) < before
    assert model(x).shape == (BATCH, NUM_CLASSES)
    assert model.head.out_features == NUM_CLASSES


@pytest.mark.parametrize("name", FAST_MODELS)
def test_seeded_construction_is_deterministic(name: str) -> None:
    first, second = _build(name, 3, 32).state_dict(), _build(name, 3, 32).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.parametrize("factory,depth", [(resnet20, 20), (resnet56, 56)])
def test_cifar_resnet_depth_counts_weighted_layers(factory: Any, depth: int) -> None:
    # Depth counts the stem, the 3x3 convs of the blocks and the fc; 1x1 projections are extra.
    model = factory()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) + len(linears) == depth


def test_resnet56_has_the_published_parameter_count() -> None:
    # 0.85M in He et al. 2016 (option A); the two 1x1 projection shortcuts add about 3k.
    assert 850_000 <= _param_count(resnet56()) <= 860_000


def test_resnet50_has_the_published_parameter_count() -> None:
    assert _param_count(resnet50()) == pytest.approx(25.6e6, rel=0.005)


@pytest.mark.parametrize("data,spatial", [("cifar", 2), ("mnist", 3), ("digits", 2)])
def test_vgg_flattens_a_spatial_map(data: str, spatial: int) -> None:
    channels, side = INPUTS[data]
    model = vgg16_bn(in_channels=channels, input_size=side)
    assert not any(isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) for m in model.modules())
    assert model.fc.in_features == 512 * spatial * spatial


@pytest.mark.parametrize("factory,size_key", [(vgg16_bn, "input_size"), (vit_tiny, "image_size")])
def test_fixed_size_models_reject_other_input_sizes(factory: Any, size_key: str) -> None:
    model = factory(**{size_key: 32})
    with pytest.raises(ConfigError, match="input_size=28|image_size=28"):
        model(torch.randn(1, 3, 28, 28))


def test_mobilenetv2_uses_depthwise_convs() -> None:
    model = build_model("mobilenetv2")
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)


def test_densenet_layers_concatenate_their_growth() -> None:
    model = build_model("densenet_small", growth=12, block_layers=(4, 4))
    # Stem 24 -> +4*12 = 72 -> transition halves to 36 -> +4*12 = 84 channels at the head.
    assert model.head.in_features == 84


def test_unknown_model_name_is_a_config_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as caught:
        build_model("resnet-56")
    message = str(caught.value)
    assert "did you mean 'resnet56'" in message
    assert all(name in message for name in MODELS)
    assert "\n" not in message


def test_unknown_model_name_without_close_match_has_no_suggestion() -> None:
    with pytest.raises(ConfigError, match="known models") as caught:
        build_model("zzz")
    assert "did you mean" not in str(caught.value)


@pytest.mark.parametrize("depth", [21, 2])
def test_resnet_cifar_rejects_depths_that_are_not_6n_plus_2(depth: int) -> None:
    with pytest.raises(ConfigError, match="6n \\+ 2"):
        resnet_cifar(depth)


@pytest.mark.parametrize("name", list(MODELS))
def test_registry_constructors_resolve_as_module_colon_callable(name: str) -> None:
    module_name, attribute = f"dpm_cli.models:{name}".split(":")
    assert getattr(importlib.import_module(module_name), attribute) is MODELS[name]
