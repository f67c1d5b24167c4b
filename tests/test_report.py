"""dpm report: MAC counts against hand-computed values, unknown ops, comparison, latency, outputs, plots."""
from __future__ import annotations

import builtins
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cli_helpers import exit_code as run_cli
from dpm_cli.errors import ConfigError, DpmError, InputError
from dpm_cli.report import (
    compare,
    count_model,
    measure_latency,
    plot_decay_history,
    plot_widths,
)
from dpm_cli.report.inputs import parse_count, parse_shape




def tiny_cnn(width: int = 8) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


class FunctionalAttention(nn.Module):
    """Self-attention written with a Linear and functional matmuls (q @ k^T, weights @ v)."""

    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1) / math.sqrt(dim // self.heads)).softmax(-1)
        return (weights @ v).transpose(1, 2).reshape(n, length, dim)


class SdpaAttention(nn.Module):
    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, q, q)


class Spectral(nn.Module):
    """A layer with an op the counter has no rule for."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(9, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.fft.rfft(x).abs())


# ---- counts equal hand-computed values -------------------------------------------------------

def test_conv2d_counts():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    count = count_model(conv, torch.randn(1, 3, 32, 32))
    assert count.macs == 8 * 32 * 32 * (3 * 3 * 3)  # out elements x (in channels x kernel)
    assert count.flops == 2 * count.macs
    assert count.params == 8 * 3 * 3 * 3 + 8
    grouped = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2)
    assert count_model(grouped, torch.randn(1, 8, 16, 16)).macs == 16 * 8 * 8 * (4 * 3 * 3)


def test_conv_transpose_counts_from_the_input():
    up = nn.ConvTranspose2d(4, 2, 2, stride=2)
    # each of the 4x8x8 input elements is multiplied into 2 output channels x 2x2 kernel taps
    assert count_model(up, torch.randn(1, 4, 8, 8)).macs == 4 * 8 * 8 * 2 * 2 * 2


def test_linear_counts():
    assert count_model(nn.Linear(16, 10), torch.randn(4, 16)).macs == 4 * 10 * 16
    assert count_model(nn.Linear(16, 10), torch.randn(2, 5, 16)).macs == 2 * 5 * 10 * 16


def test_multihead_attention_counts():
    n, length, dim = 2, 5, 16
    mha = nn.MultiheadAttention(dim, 4, batch_first=True)
    count = count_model(mha, (torch.randn(n, length, dim),) * 3)
    projections = 4 * n * length * dim * dim  # q, k, v and output projections
    products = 2 * n * length * length * dim  # q @ k^T and weights @ v over all heads
    assert count.macs == projections + products
    assert count.params == sum(p.numel() for p in mha.parameters())
    assert [row.name for row in count.layers] == [""]  # out_proj folded into the attention row


def test_cross_attention_with_other_key_sizes():
    mha = nn.MultiheadAttention(16, 4, kdim=8, vdim=12, batch_first=False)
    q, k, v = torch.randn(5, 2, 16), torch.randn(7, 2, 8), torch.randn(7, 2, 12)
    expected = 2 * 5 * 16 * 16 + 2 * 7 * 8 * 16 + 2 * 7 * 12 * 16 + 2 * (2 * 5 * 7 * 16) + 2 * 5 * 16 * 16
    assert count_model(mha, (q, k, v)).macs == expected


def test_functional_matmul_attention_counts_once():
    n, length, dim = 2, 6, 16
    model = nn.Sequential(FunctionalAttention(dim, heads=4))
    count = count_model(model, torch.randn(n, length, dim))
    qkv = n * length * 3 * dim * dim
    products = 2 * n * length * length * dim
    assert count.macs == qkv + products
    assert count.layer("0.qkv").macs == qkv
    assert count.layer("0").macs == products  # the functional matmuls, charged to the module that ran them
    assert count.unknown_ops == []


def test_scaled_dot_product_attention_counts():
    b, h, length, d = 2, 4, 6, 8
    count = count_model(SdpaAttention(), torch.randn(b, h, length, d))
    assert count.macs == 2 * b * h * length * length * d


def test_vit_with_multihead_attention_adds_up():
    models = pytest.importorskip("dpm_cli.models")
    vit = models.vit_tiny()
    count = count_model(vit, torch.randn(1, 3, 32, 32))
    assert count.params == sum(p.numel() for p in vit.parameters())
    assert count.macs == sum(row.macs for row in count.layers)
    assert any(row.type == "MultiheadAttention" and row.macs > 0 for row in count.layers)
    assert count.unknown_ops == []


def test_lstm_counts():
    lstm = nn.LSTM(8, 16, batch_first=True)
    # 2 x 5 tokens, 4 gates, each multiplying the input (8) and the previous hidden state (16)
    count = count_model(lstm, torch.randn(2, 5, 8))
    assert count.macs == 2 * 5 * 4 * 16 * (8 + 16) and count.unknown_ops == []


def test_unknown_op_is_listed_not_silently_zero():
    count = count_model(nn.Sequential(Spectral()), torch.randn(2, 16))
    assert [(u.op, u.layer) for u in count.unknown_ops] == [("aten._fft_r2c", "0")]
    assert count.macs == 2 * 4 * 9  # the Linear is still counted


def test_unknown_op_is_shown_by_the_cli(tmp_path, capsys):
    path = tmp_path / "spectral.pt"
    torch.save(nn.Sequential(Spectral()), path)
    assert run_cli(["report", str(path), "--trust-checkpoint", "--input-shape", "2,16"]) == 0
    out = capsys.readouterr().out
    assert "Not counted" in out and "aten._fft_r2c" in out


def test_rows_add_up_and_shared_parameters_count_once():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    model[2].weight = model[0].weight  # tied weights
    count = count_model(model, torch.randn(1, 8))
    assert count.params == 8 * 8 + 8 + 8
    assert count.params == sum(row.params for row in count.layers)
    assert count.macs == 2 * 8 * 8


def test_meta_pass_counts_like_a_real_pass():
    model = tiny_cnn()
    x = torch.randn(1, 3, 16, 16)
    real, meta = count_model(model, x), count_model(model, x, on_meta=True)
    assert (meta.macs, meta.params, meta.layers) == (real.macs, real.params, real.layers)


class DataDependent(nn.Module):
    """A forward that needs real values: the meta pass fails and the count is rerun for real."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) if x.abs().sum().item() >= 0 else x


def test_meta_pass_falls_back_to_a_real_pass():
    count = count_model(DataDependent(), torch.randn(2, 4), on_meta=True)
    assert count.macs == 2 * 4 * 4


# ---- thop counts the modules; our rules where thop's are missing or wrong ------------------------

def test_thop_counts_the_modules_on_a_copy(monkeypatch):
    from dpm_cli.report.rules import import_thop

    thop = import_thop()
    profiled = []
    real_profile = thop.profile

    def spy(model, *args, **kwargs):
        profiled.append(model)
        return real_profile(model, *args, **kwargs)

    monkeypatch.setattr(thop, "profile", spy)
    model = tiny_cnn()
    count = count_model(model, torch.randn(1, 3, 16, 16))
    assert len(profiled) == 1 and profiled[0] is not model  # a copy: thop's buffers never reach the model
    assert not any(hasattr(m, "total_ops") for m in model.modules())
    assert count.layer("0").macs == 8 * 16 * 16 * 27 and count.layer("5").macs == 8 * 10  # thop's rules


@pytest.mark.parametrize("bias", [True, False])
def test_conv_and_linear_count_no_bias_adds(bias):
    # thop's conv and linear rules, used as they are: bias adds are not MACs
    assert count_model(nn.Conv1d(4, 6, 5, stride=2, bias=bias), torch.randn(2, 4, 40)).macs == 2 * 6 * 18 * (4 * 5)
    conv = nn.Conv1d(4, 6, 3, dilation=2, groups=2, bias=bias)
    assert count_model(conv, torch.randn(2, 4, 40)).macs == 2 * 6 * 36 * (2 * 3)
    assert count_model(nn.Conv2d(3, 8, 3, padding=1, bias=bias), torch.randn(1, 3, 32, 32)).macs == 8 * 32 * 32 * 27
    assert count_model(nn.Conv3d(2, 3, 3, bias=bias), torch.randn(1, 2, 6, 6, 6)).macs == 3 * 4 * 4 * 4 * (2 * 27)
    assert count_model(nn.Linear(16, 10, bias=bias), torch.randn(4, 16)).macs == 4 * 10 * 16


def test_norms_activations_pooling_and_upsampling_cost_no_macs():
    # thop counts these as "ops" (2-4 per element for a norm); here they are not MACs
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.InstanceNorm2d(4, affine=True),
        nn.PReLU(), nn.LeakyReLU(), nn.SiLU(), nn.Softmax(1), nn.Upsample(scale_factor=2, mode="bilinear"),
        nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(4), nn.Linear(4, 3))
    count = count_model(model, torch.randn(2, 3, 8, 8))
    assert count.macs == 2 * 4 * 8 * 8 * 27 + 2 * 3 * 4
    assert count.unknown_ops == []


def test_conv_transpose_with_stride_and_groups_counts_from_the_input():
    up = nn.ConvTranspose1d(4, 6, 3, stride=3, groups=2, padding=1, output_padding=1)
    # 2 x 4 x 9 input elements, each into (6 / 2) output channels x 3 kernel taps
    assert count_model(up, torch.randn(2, 4, 9)).macs == 2 * 4 * 9 * 3 * 3


class PackedLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 16, num_layers=2, bidirectional=True, proj_size=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([5, 3]), batch_first=True)
        return self.lstm(packed)[0].data


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_recurrent_layers_count_gate_products_only():
    # per token, layer and direction: gates x hidden x (layer input + previous output), + the projection
    # (thop's own RNN rules add bias and elementwise gate ops and leave out proj_size)
    lstm_per_token = 2 * (4 * 16 * (8 + 4) + 16 * 4) + 2 * (4 * 16 * (2 * 4 + 4) + 16 * 4)
    lstm = nn.LSTM(8, 16, num_layers=2, bidirectional=True, proj_size=4)
    assert count_model(lstm, torch.randn(5, 2, 8)).macs == 5 * 2 * lstm_per_token
    assert count_model(PackedLSTM(), torch.randn(2, 5, 8)).macs == (5 + 3) * lstm_per_token  # real tokens only
    gru = nn.GRU(8, 12, num_layers=3, bidirectional=True, bias=False)
    gru_per_token = 2 * 3 * 12 * (8 + 12) + 2 * 2 * 3 * 12 * (24 + 12)
    assert count_model(gru, torch.randn(5, 2, 8)).macs == 5 * 2 * gru_per_token


class KeywordCalls(nn.Module):
    """Layers called with keyword arguments, which thop's hooks do not see."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.conv(input=x).flatten(2).transpose(1, 2)  # (n, 36, 16)
        return self.attn(query=tokens, key=tokens, value=tokens, need_weights=False)[0]


def test_keyword_and_unbatched_calls():
    count = count_model(KeywordCalls(), torch.randn(2, 3, 8, 8))
    conv = 2 * 16 * 6 * 6 * 27
    n, length, dim = 2, 36, 16
    assert count.layer("conv").macs == conv
    assert count.layer("attn").macs == 4 * n * length * dim * dim + 2 * n * length * length * dim
    # an unbatched (C, H, W) input: thop alone would read H as the input channels
    assert count_model(nn.Conv2d(3, 4, 3, bias=False), torch.randn(3, 8, 8)).macs == 4 * 6 * 6 * 27


def test_module_shared_by_two_parents_counts_each_call_once():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    model = nn.Sequential(nn.Sequential(conv, nn.ReLU()), nn.Sequential(conv))  # thop hooks `conv` twice
    count = count_model(model, torch.randn(1, 4, 8, 8))
    assert count.macs == 2 * 4 * 8 * 8 * 36
    assert [(row.name, row.macs) for row in count.layers] == [("0.0", 2 * 4 * 8 * 8 * 36)]


def test_weight_norm_model_is_counted():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the old weight_norm is deprecated
        model = nn.Sequential(nn.utils.weight_norm(nn.Linear(8, 8)), nn.Linear(8, 2))
    model(torch.randn(1, 8)).sum().backward()  # leaves a non-leaf `weight` attribute, which deepcopy refuses
    assert count_model(model, torch.randn(2, 8)).macs == 2 * 8 * 8 + 2 * 2 * 8


class FailsHalfway(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        self.attn = nn.MultiheadAttention(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return self.attn(h, h[:, :2], h)[0]  # key and value shapes differ: raises inside a counted module


def test_failing_forward_leaves_model_and_torch_clean():
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    model = FailsHalfway()
    keys = list(model.state_dict())
    with pytest.raises(InputError, match="forward pass failed"):
        count_model(model, torch.randn(3, 4))
    assert list(model.state_dict()) == keys  # thop's buffers were on a copy
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert _get_current_dispatch_mode() is None  # the counting mode left torch's dispatch stack
    assert count_model(nn.Linear(4, 4), torch.randn(3, 4)).macs == 3 * 4 * 4


# Totals of the counter before thop did the module counting (recorded with it), batch 2 at 32x32
REFERENCE_COUNTS = {  # name: (MACs, parameters)
    "resnet20": (81_626_368, 272_474),
    "resnet56": (251_495_680, 855_770),
    "vgg16_bn": (628_500_480, 15_773_130),
    "vgg_small": (40_045_056, 504_746),
    "mobilenetv2": (22_483_968, 210_250),
    "densenet_small": (55_740_048, 46_642),
    "vit_tiny": (15_074_560, 107_978),
    "mlp": (2 * (64 * 128 + 128 * 64 + 64 * 10), 17_226),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_reference_models_keep_their_counts(name):
    models = pytest.importorskip("dpm_cli.models")
    model = models.MODELS[name]()
    shape = (2, 64) if name == "mlp" else (2, 3, 32, 32)
    count = count_model(model, torch.randn(shape))
    assert (count.macs, count.params) == REFERENCE_COUNTS[name]
    assert count.unknown_ops == [] and count.macs == sum(row.macs for row in count.layers)


def test_resnet50_counts_its_published_macs():
    models = pytest.importorskip("dpm_cli.models")
    count = count_model(models.resnet50(), torch.randn(1, 3, 224, 224))
    assert (count.macs, count.params) == (4_089_184_256, 25_557_032)  # torchvision lists 4.09 GMACs ("GFLOPS")


# ---- measuring leaves the model as it was --------------------------------------------------------

def test_model_unchanged_by_measuring():
    model = nn.Sequential(tiny_cnn(), nn.Sequential(nn.Dropout(0.5)))
    model.train()
    model[1].eval()  # mixed training flags must come back as they were
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 3, 16, 16)
    rng = torch.get_rng_state()
    count_model(model, x)
    measure_latency(model, (1, 3, 16, 16), repeats=2, warmup=1, threads=1)
    after = model.state_dict()
    assert list(after) == list(before)  # no total_ops / total_params buffers
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics did not move
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert model.training and model[0].training and not model[1].training and not model[1][0].training
    assert torch.equal(torch.get_rng_state(), rng)


def test_cli_report_leaves_checkpoint_keys(tmp_path):
    model = tiny_cnn()
    path = tmp_path / "m.pt"
    torch.save(model, path)
    assert run_cli(["report", str(path), "--trust-checkpoint", "--input-shape", "1,3,16,16"]) == 0
    assert list(model.state_dict()) == list(torch.load(path, weights_only=False).state_dict())


# ---- comparison and latency --------------------------------------------------------------------

def test_compare_ratios_and_widths():
    x = torch.randn(1, 3, 16, 16)
    a = count_model(tiny_cnn(8), x, label="a")
    b = count_model(tiny_cnn(4), x, label="b")
    cmp = compare(a, b)
    conv_a, conv_b = 8 * 16 * 16 * 27, 4 * 16 * 16 * 27
    assert a.macs == conv_a + 8 * 10 and b.macs == conv_b + 4 * 10
    assert cmp.macs_ratio == pytest.approx(a.macs / b.macs)
    assert cmp.macs_ratio == pytest.approx(2.0)
    params_a, params_b = 224 + 16 + 90, 112 + 8 + 50
    assert (a.params, b.params) == (params_a, params_b)
    assert cmp.params_ratio == pytest.approx(params_a / params_b)
    first = cmp.layers[0]
    assert (first.name, first.width_a, first.width_b) == ("0", 8, 4)


def test_compare_layer_missing_in_one_model():
    x = torch.randn(1, 8)
    a = count_model(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2)), x, label="a")
    b = count_model(nn.Sequential(nn.Linear(8, 2)), x, label="b")
    by_name = {d.name: d for d in compare(a, b).layers}
    assert by_name["1"].width_a == 2 and by_name["1"].width_b is None


class Recorder(nn.Module):
    """Records how and in which order it was called."""

    def __init__(self, name: str, log: list) -> None:
        super().__init__()
        self.name, self.log = name, log
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append((self.name, self.training, torch.is_inference_mode_enabled(), x.shape[0]))
        return self.lin(x)


def test_latency_interleaved_in_eval_and_inference_mode():
    log: list = []
    models = {"a": Recorder("a", log), "b": Recorder("b", log)}
    run = measure_latency(models, (1, 4), batch_sizes=(1, 3), repeats=4, warmup=1, threads=1)
    assert all(not training and inference for _, training, inference, _ in log)
    assert all(m.training for m in models.values())  # flags restored
    timed = [name for name, _, _, batch in log if batch == 1][2:]  # after the warm-up pair
    assert timed == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert {(s.label, s.batch_size) for s in run.stats} == {("a", 1), ("b", 1), ("a", 3), ("b", 3)}
    stats = run.get("a", 3)
    assert len(stats.samples_ms) == 4
    assert stats.p10_ms <= stats.q1_ms <= stats.median_ms <= stats.q3_ms <= stats.p90_ms
    assert run.speedup("a", "b", 1) > 0
    cmp = compare(count_model(models["a"], torch.randn(1, 4), label="a"),
                  count_model(models["b"], torch.randn(1, 4), label="b"), run)
    assert set(cmp.speedups) == {1, 3}


def test_latency_rejects_bad_settings():
    with pytest.raises(ConfigError):
        measure_latency(nn.Linear(4, 4), (1, 4), repeats=0)
    with pytest.raises(ConfigError):
        measure_latency(nn.Linear(4, 4), (1, 4), batch_sizes=(0,))


# ---- CLI outputs ---------------------------------------------------------------------------------

@pytest.fixture()
def two_models(tmp_path: Path) -> tuple[str, str]:
    big, small = tmp_path / "big.pt", tmp_path / "small.pt"
    torch.save(tiny_cnn(8), big)
    torch.save(tiny_cnn(4), small)
    return str(big), str(small)


def test_json_schema_is_stable(two_models, capsys):
    big, small = two_models
    args = ["report", big, "--compare", small, "--trust-checkpoint", "--input-shape", "1,3,16,16",
            "--latency", "--repeats", "2", "--warmup", "0", "--threads", "1", "--json"]
    assert run_cli(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema_version"] == 1 and doc["kind"] == "dpm.report"
    assert set(doc) == {"schema_version", "kind", "units", "input_shape", "models", "comparison", "latency"}
    assert doc["input_shape"] == [1, 3, 16, 16]
    model = doc["models"][0]
    assert set(model) == {"label", "params", "macs", "flops", "layers", "unknown_ops"}
    assert set(model["layers"][0]) == {"name", "type", "width", "params", "macs", "share"}
    assert model["flops"] == 2 * model["macs"]
    cmp = doc["comparison"]
    assert set(cmp) == {"a", "b", "macs_ratio", "params_ratio", "speedup", "layers"}
    assert cmp["macs_ratio"] == pytest.approx(2.0) and set(cmp["speedup"]) == {"1"}
    assert set(cmp["layers"][0]) == {"name", "type", "width_a", "width_b", "params_a", "params_b", "macs_a", "macs_b"}
    latency = doc["latency"]
    assert set(latency) == {"batch_sizes", "repeats", "warmup", "threads", "results"}
    assert set(latency["results"][0]) == {"model", "batch_size", "median_ms", "q1_ms", "q3_ms", "p10_ms", "p90_ms",
                                          "samples"}


def test_markdown_and_tables(two_models, capsys):
    big, small = two_models
    assert run_cli(["report", big, "--compare", small, "--trust-checkpoint", "--input-shape", "1,3,16,16",
                    "--markdown"]) == 0
    md = capsys.readouterr().out
    assert "| Parameters |" in md and "FLOPs (= 2 × MACs)" in md and "8 → 4" in md and "2.00x" in md
    assert run_cli(["report", big, "--trust-checkpoint", "--input-shape", "1,3,16,16"]) == 0
    out = capsys.readouterr().out
    assert "MACs (multiply-accumulates)" in out and "Share of MACs" in out and "Conv2d" in out


def test_state_dict_with_factory(tmp_path, capsys):
    models = pytest.importorskip("dpm_cli.models")
    path = tmp_path / "mlp.pt"
    torch.save(models.mlp().state_dict(), path)
    assert run_cli(["report", str(path), "--factory", "dpm_cli.models:mlp", "--input-shape", "1,64", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["models"][0]["macs"] == 64 * 128 + 128 * 64 + 64 * 10


@pytest.mark.parametrize("args", [
    ["--input-shape", "1,3,abc"],
    ["--input-shape", "1,3,0,16"],
    ["--input-shape", "1,3,16,16", "--json", "--markdown"],
    ["--input-shape", "1,5,16,16"],  # wrong channel count: the forward pass fails
    [],  # no input shape
])
def test_report_bad_input_exits_2(two_models, args, capsys):
    assert run_cli(["report", two_models[0], "--trust-checkpoint", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err


def test_report_unreadable_or_untrusted_model_exits_2(tmp_path, two_models):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert run_cli(["report", str(garbage), "--input-shape", "1,3,16,16"]) == 2
    assert run_cli(["report", str(tmp_path / "missing.pt"), "--input-shape", "1,3,16,16"]) == 2
    assert run_cli(["report", two_models[0], "--input-shape", "1,3,16,16"]) == 2  # pickle without trust


def test_parsers():
    assert parse_shape("1,3,32,32") == (1, 3, 32, 32) == parse_shape("1x3x32x32")
    assert parse_count("125M", "--max-macs") == 125e6 and parse_count("1.5k", "--x") == 1500
    with pytest.raises(InputError):
        parse_count("12Q", "--max-macs")


# ---- plots ---------------------------------------------------------------------------------------

def _write_run(run: Path) -> None:
    run.mkdir()
    norms = [{"step": s, "norms": {"layer1:0": 1.0 - 0.1 * s, "layer1:1": 1.0, "layer2:3": 0.5}} for s in range(8)]
    events = [
        {"step": 1, "kind": "selected", "group": "layer1", "index": 0, "c_rate": None, "c_len": None},
        {"step": 4, "kind": "release", "group": "layer1", "index": 0, "c_rate": 0.2, "c_len": 3.0},
        {"step": 5, "kind": "replacement", "group": "layer2", "index": 3, "c_rate": None, "c_len": None},
    ]
    (run / "norms.jsonl").write_text("".join(json.dumps(n) + "\n" for n in norms))
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_logs_are_read_step_by_step(tmp_path):
    from dpm_cli.report.runlog import read_events, read_norms

    _write_run(tmp_path / "run")
    history = read_norms(tmp_path / "run" / "norms.jsonl")
    assert history.steps == list(range(8)) and set(history.series) == {"layer1:0", "layer1:1", "layer2:3"}
    assert history.at("layer1:0", 4) == pytest.approx(0.6) and history.at("nothing:0", 4) is None
    events = read_events(tmp_path / "run" / "events.jsonl")
    assert [(e.kind, e.key, e.c_rate) for e in events][1] == ("release", "layer1:0", 0.2)
    assert read_events(tmp_path / "no-events.jsonl") == []


def test_plot_decay_history(tmp_path):
    pytest.importorskip("matplotlib")
    _write_run(tmp_path / "run")
    png = plot_decay_history(tmp_path / "run", tmp_path / "plots")
    assert png.name == "decay_history.png" and _is_png(png)


def test_cli_plots_widths_and_history(tmp_path, two_models):
    pytest.importorskip("matplotlib")
    big, small = two_models
    _write_run(tmp_path / "run")
    out = tmp_path / "plots"
    assert run_cli(["report", big, "--compare", small, "--trust-checkpoint", "--input-shape", "1,3,16,16",
                    "--plot", str(out), "--run", str(tmp_path / "run"), "--no-layers"]) == 0
    assert _is_png(out / "widths.png") and _is_png(out / "decay_history.png")
    assert run_cli(["report", "--run", str(tmp_path / "run"), "--plot", str(tmp_path / "only")]) == 0
    assert _is_png(tmp_path / "only" / "decay_history.png")


def test_bad_run_dir_exits_2(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "norms.jsonl").write_text('{"step": 1, "norms": {"a:0": 1.0}}\n{"step": 2,\n')
    assert run_cli(["report", "--run", str(tmp_path / "run"), "--plot", str(tmp_path / "p")]) == 2
    assert run_cli(["report", "--run", str(tmp_path / "nowhere"), "--plot", str(tmp_path / "p")]) == 2
    assert run_cli(["report", "--run", str(tmp_path / "run")]) == 2  # --run without --plot


def test_missing_matplotlib_is_one_clear_error(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    count = count_model(nn.Linear(4, 2), torch.randn(1, 4))
    with pytest.raises(DpmError, match="matplotlib"):
        plot_widths(count, tmp_path)
