"""Architecture families people bring, shrunk to a few seconds each: pruned through the library to
half the MACs with exact compaction, OR refused with a clear DpmError when the pruner is built.
Never a failure after training, never a broken model. `benchmarks/coverage.py` runs the full-size
models and writes docs/COVERAGE.md."""
from __future__ import annotations

import os
import warnings

import pytest
import torch

from dpm_cli.engine import DecayPruner, DPMConfig, RectifyConfig
from dpm_cli.engine.cost import count_macs_params
from dpm_cli.errors import DpmError

tv = pytest.importorskip("torchvision.models")
timm = pytest.importorskip("timm")


def _tv(name: str, **kwargs):
    return lambda: getattr(tv, name)(num_classes=10, **kwargs)


def _small(module: str, cls: str, **kwargs):
    def build():
        import importlib

        return getattr(importlib.import_module(f"torchvision.models.{module}"), cls)(num_classes=10, **kwargs)
    return build


def _convnext():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=10)


def _bottleneck(groups: int, width: int):
    from torchvision.models.resnet import Bottleneck, ResNet

    return lambda: ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10, groups=groups, width_per_group=width)


def _resnet():
    from torchvision.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)


def _regnet():
    from torchvision.models.regnet import BlockParams, RegNet

    return RegNet(BlockParams.from_init_params(depth=4, w_0=16, w_a=8, w_m=2, group_width=8, se_ratio=0.25),
                  stem_width=16, num_classes=10)


FAMILIES = {  # family -> (builder, input side); shrunk so that each case takes seconds
    "resnet (residual)": (_resnet, 32),
    "resnext (grouped conv)": (_bottleneck(4, 8), 32),
    "regnet (grouped conv, SE)": (_regnet, 32),
    "mobilenet_v3 (depthwise, SE)": (_tv("mobilenet_v3_small"), 32),
    "squeezenet (conv classifier)": (_tv("squeezenet1_1"), 64),
    "shufflenet (channel shuffle)": (_tv("shufflenet_v2_x0_5"), 32),
    "densenet (concat)": (_small("densenet", "DenseNet", growth_rate=8, block_config=(2, 2), num_init_features=16), 32),
    "convnext (LayerNorm residual)": (_convnext, 32),
    "vit (nn.MultiheadAttention)": (_small("vision_transformer", "VisionTransformer", image_size=32, patch_size=8,
                                           num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64), 32),
    "swin (windows)": (_small("swin_transformer", "SwinTransformer", patch_size=[4, 4], embed_dim=16, depths=[1, 1],
                              num_heads=[1, 2], window_size=[2, 2]), 32),
    "timm deit (fused qkv)": (lambda: timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32,
                                                        patch_size=8, depth=2, num_classes=10), 32),
}
SLOW = {  # full-size families: minutes on a shared CPU (benchmarks/coverage.py runs them all)
    "vgg (flatten)": (_tv("vgg11_bn"), 32),
    "googlenet (inception concat)": (_tv("googlenet", aux_logits=False, init_weights=True), 64),
    "timm efficientnet (SE, depthwise)": (lambda: timm.create_model("efficientnet_b0", pretrained=False,
                                                                   num_classes=10), 32),
}
FAMILIES.update(SLOW)
FULL = pytest.mark.skipif(not os.environ.get("DPM_COVERAGE_FULL"), reason="full-size model; set DPM_COVERAGE_FULL=1")
CASES = [pytest.param(f, marks=[pytest.mark.slow, FULL]) if f in SLOW else f for f in FAMILIES]


@pytest.mark.parametrize("family", CASES)
def test_family_prunes_exactly_or_is_refused_up_front(family):
    warnings.filterwarnings("ignore")
    builder, side = FAMILIES[family]
    torch.manual_seed(0)
    model = builder()
    x = torch.randn(2, 3, side, side)
    macs_before, _ = count_macs_params(model, x[:1])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    config = DPMConfig(budget=0.5, decay_steps=2, rectify=RectifyConfig(enabled=False))
    try:
        pruner = DecayPruner(model, x[:1], config, optimizer=opt)
    except DpmError as err:  # refused before any training: one clear line, the model untouched
        assert "\n" not in str(err) and str(err)
        model.eval()
        assert model(x).shape == (2, 10)
        return
    model.train()
    for _ in range(pruner.decay_phase_end):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        pruner.step()
    result = pruner.compact()
    macs_after, _ = count_macs_params(model, x[:1])
    assert abs(macs_after / macs_before - 0.5) / 0.5 <= 0.02
    assert result.max_rel_error <= 1e-5
    model.eval()
    assert model(x).shape == (2, 10)
