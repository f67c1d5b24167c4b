"""An artifact is data, never code: a hostile factory is refused by every entry point before anything runs."""
from __future__ import annotations

import sys
import uuid

import pytest
import torch

import dpm_cli
from artifact_helpers import MLP_KWARGS, MarkerPickle, plain_artifact, pruned_artifact, save, write_marker_module
from cli_helpers import run_cli, write_recipe
from dpm_cli.errors import CheckpointError
from dpm_cli.trust import artifact_builder


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A marker path, a fresh importable module that creates it on import, a pickle that creates it on
    unpickling, a good artifact and a recipe."""
    marker = tmp_path / "MARKER"
    module = f"evilpkg_test_marker_{uuid.uuid4().hex[:8]}"
    write_marker_module(tmp_path, module, marker)
    monkeypatch.syspath_prepend(str(tmp_path))
    payload = save(MarkerPickle(marker), tmp_path / "payload.pkl")
    good = save(plain_artifact(), tmp_path / "good.dpm.pt")
    recipe = write_recipe(tmp_path)
    return dict(tmp=tmp_path, marker=marker, module=module, payload=payload, good=good, recipe=recipe)


def _hostile(env) -> dict[str, dict]:
    marker, payload = str(env["marker"]), str(env["payload"])
    load = {"f": payload, "weights_only": False}
    return {
        "subprocess:run": {"args": ["touch", marker]},
        "os:system": {"command": f"touch {marker}"},
        "builtins:exec": {"source": f"open({marker!r}, 'w')"},
        "builtins:eval": {"source": f"open({marker!r}, 'w')"},
        "torch:load": load,
        "torchvision.models:os.system": {"command": f"touch {marker}"},
        "dpm_cli.models:torch.load": load,
        "dpm_cli.models.mlp:torch.load": load,
        "dpm_cli.models:build_model.__globals__": {},
        f"{env['module']}:build": dict(MLP_KWARGS),
    }


HOSTILE = ["subprocess:run", "os:system", "builtins:exec", "builtins:eval", "torch:load",
           "torchvision.models:os.system", "dpm_cli.models:torch.load", "dpm_cli.models.mlp:torch.load",
           "dpm_cli.models:build_model.__globals__", "MODULE:build"]

ENTRY_POINTS = {
    "report": lambda e, evil: ["report", evil],
    "report --compare": lambda e, evil: ["report", e["good"], "--compare", evil],
    "check": lambda e, evil: ["check", evil, "--max-params", "1G"],
    "check --baseline": lambda e, evil: ["check", e["good"], "--baseline", evil, "--min-params-reduction", "1"],
    "plan": lambda e, evil: ["plan", evil, "-r", e["recipe"]],
    "prune": lambda e, evil: ["prune", evil, "-r", e["recipe"], "--quiet"],
}


def _evil(env, name: str):
    factory = name.replace("MODULE", env["module"])
    path = save(plain_artifact(factory, _hostile(env)[factory]), env["tmp"] / "evil.dpm.pt")
    return factory, path


def _assert_untouched(env, factory: str) -> None:
    assert not env["marker"].exists(), f"{factory}: code ran"
    assert env["module"] not in sys.modules, f"{factory}: the artifact's module was imported"


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_artifact_refused_by_every_cli_entry_point(env, name, entry, capsys):
    factory, evil = _evil(env, name)
    code, out, err = run_cli(ENTRY_POINTS[entry](env, evil), capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert repr(factory) in lines[0] and "--trust-checkpoint" in lines[0]
    _assert_untouched(env, factory)
    assert not (env["tmp"] / "run").exists()  # prune: nothing written


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_artifact_refused_by_dpm_cli_load(env, name):
    factory, evil = _evil(env, name)
    with pytest.raises(CheckpointError, match="--trust-checkpoint") as info:
        dpm_cli.load(evil)
    assert repr(factory) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError):  # naming another factory does not allow this one
        dpm_cli.load(evil, factory="dpm_cli.models:mlp", factory_kwargs=dict(MLP_KWARGS))
    _assert_untouched(env, factory)


def test_the_torch_load_payload_is_real(env):
    """Control: with trust the hostile `torch:load` artifact does run its pickle, so the tests above mean
    something. (It returns no module, so the load still fails afterwards.)"""
    _, evil = _evil(env, "torch:load")
    with pytest.raises(dpm_cli.errors.InputError):
        dpm_cli.load(evil, trust=True)
    assert env["marker"].read_text() == "unpickled"


@pytest.mark.parametrize("kwargs,why", [
    ({**MLP_KWARGS, "weights": "IMAGENET1K_V1"}, "weights="),
    ({**MLP_KWARGS, "pretrained": True}, "pretrained=True"),
    ({**MLP_KWARGS, "checkpoint_path": "x"}, "checkpoint_path="),
    ({**MLP_KWARGS, "extra": {"nested": ["../../payload.pkl"]}}, "a path, URL or hub name"),
    ({**MLP_KWARGS, "name": "hf-hub:org/model"}, "a path, URL or hub name"),
])
def test_allow_listed_factory_with_loading_kwargs_refused(tmp_path, kwargs, why):
    path = save(plain_artifact("dpm_cli.models:mlp", kwargs), tmp_path / "a.dpm.pt")
    with pytest.raises(CheckpointError, match="--trust-checkpoint") as info:
        dpm_cli.load(path)
    assert why in str(info.value)


@pytest.mark.parametrize("kwargs", [{"x": torch.zeros(2)}, {"x": float("nan")}, {"x": 2**40},
                                    {"x": "a" * 5000}])
def test_kwargs_must_be_small_plain_data(tmp_path, kwargs):
    path = save(plain_artifact("dpm_cli.models:mlp", {**MLP_KWARGS, **kwargs}), tmp_path / "a.dpm.pt")
    with pytest.raises(CheckpointError):
        dpm_cli.load(path, trust=True)  # even a trusted artifact holds data, not objects


def test_allow_listed_dpm_builders_load(tmp_path, capsys):
    path = save(pruned_artifact(), tmp_path / "p.dpm.pt")
    model = dpm_cli.load(path)
    assert model.body[1].out_features == 10  # 12 hidden channels, 2 pruned by the recorded stage
    code, out, err = run_cli(["report", path, "--json"], capsys)
    assert code == 0, err
    for factory in ("dpm_cli.models.mlp:mlp", "dpm_cli.models:build_model"):
        kwargs = {"name": "mlp", **MLP_KWARGS} if factory.endswith("build_model") else MLP_KWARGS
        art = plain_artifact(factory, kwargs)
        loaded = dpm_cli.load(save(art, tmp_path / "b.dpm.pt"))
        assert torch.equal(loaded.head.weight, art["state_dict"]["head.weight"])


def _load_as(tmp_path, factory: str, kwargs: dict, model) -> torch.nn.Module:
    art = plain_artifact(factory, kwargs)
    art["state_dict"] = {k: v.clone() for k, v in model.state_dict().items()}
    art["input_shape"] = [1, 3, 32, 32]
    return dpm_cli.load(save(art, tmp_path / "m.dpm.pt"))


def test_torchvision_builder_allowed_and_its_module_attributes_refused(tmp_path):
    tvm = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    model = tvm.squeezenet1_1(num_classes=3)
    for factory in ("torchvision.models:squeezenet1_1", "torchvision.models.squeezenet:squeezenet1_1"):
        loaded = _load_as(tmp_path, factory, {"num_classes": 3}, model)
        assert torch.equal(loaded.classifier[1].weight, model.classifier[1].weight)
    for factory, kwargs in [("torchvision.models:get_weight", {"name": "x"}),  # in the module, not a builder
                            ("torchvision.models:squeezenet1_1", {"num_classes": 3, "weights": "DEFAULT"}),
                            ("torchvision.models.squeezenet:Path", {})]:
        with pytest.raises(CheckpointError, match="--trust-checkpoint"):
            _load_as(tmp_path, factory, kwargs, model)


def test_torchvision_builder_whose_default_downloads_a_backbone_refused():
    pytest.importorskip("torchvision.models")
    factory = "torchvision.models.segmentation:fcn_resnet50"
    with pytest.raises(CheckpointError, match="weights_backbone=.*--trust-checkpoint"):
        artifact_builder(factory, {"num_classes": 3})
    assert artifact_builder(factory, {"num_classes": 3, "weights_backbone": None}).__name__ == "fcn_resnet50"


def test_timm_create_model_allowed_without_pretrained_weights(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    for factory in ("timm:create_model", "timm.create_model"):
        kwargs = {"model_name": "test_resnet", "pretrained": False, "num_classes": 3}
        loaded = _load_as(tmp_path, factory, kwargs, model)
        assert torch.equal(loaded.state_dict()["fc.weight"], model.state_dict()["fc.weight"])
    for kwargs in [{"model_name": "test_resnet", "pretrained": True},
                   {"model_name": "hf-hub:timm/test_resnet"}, {"model_name": "local-dir:x"},
                   {"model_name": "test_resnet", "checkpoint_path": "w"}, {"model_name": "no_such_model"},
                   {"model_name": "test_resnet", "pretrained_cfg_overlay": {"file": "w"}}]:
        with pytest.raises(CheckpointError, match="--trust-checkpoint"):
            _load_as(tmp_path, "timm:create_model", {**kwargs, "num_classes": 3}, model)


def test_transformers_config_builder_is_allow_listed():
    from dpm_cli.models.hf_config import from_config

    config = {"architecture": "BertForSequenceClassification", "config": {"hidden_size": 16, "num_labels": 2}}
    assert artifact_builder("dpm_cli.models.hf_config:from_config", config) is from_config
    with pytest.raises(CheckpointError, match="a path, URL or hub name"):
        artifact_builder("dpm_cli.models.hf_config:from_config",
                         {"architecture": "BertModel", "config": {"vocab": "/etc/vocab.txt"}})
    with pytest.raises(CheckpointError, match="trust_remote_code"):
        artifact_builder("dpm_cli.models.hf_config:from_config",
                         {"architecture": "BertModel", "config": {"trust_remote_code": True}})


def test_the_factory_the_user_named_may_run(env, capsys):
    factory = f"{env['module']}:build"
    path = save(plain_artifact(factory), env["tmp"] / "own.dpm.pt")
    code, _, err = run_cli(["report", path, "--factory", factory], capsys)
    assert code == 0, err
    assert env["marker"].exists()  # the user's module ran: they named it
    model = dpm_cli.load(path, factory=factory)
    assert model.head.out_features == 10


def test_the_recipe_factory_may_run(env, capsys):
    factory = f"{env['module']}:build"
    path = save(plain_artifact(factory), env["tmp"] / "own.dpm.pt")
    env["recipe"].write_text(env["recipe"].read_text().replace("dpm_cli.models:mlp", factory))
    code, _, err = run_cli(["plan", path, "-r", env["recipe"], "--json"], capsys)
    assert code == 0, err


def test_trust_checkpoint_allows_any_factory(env, capsys):
    factory = f"{env['module']}:build"
    path = save(plain_artifact(factory), env["tmp"] / "own.dpm.pt")
    code, _, err = run_cli(["check", path, "--trust-checkpoint", "--max-params", "1G"], capsys)
    assert code == 0, err
    assert dpm_cli.load(path, trust=True).head.out_features == 10


def test_the_named_factory_still_may_not_be_fed_paths_by_the_artifact(env):
    factory = f"{env['module']}:build"
    kwargs = {**MLP_KWARGS, "cache": str(env["payload"])}
    path = save(plain_artifact(factory, kwargs), env["tmp"] / "own.dpm.pt")
    with pytest.raises(CheckpointError, match="a path, URL or hub name"):
        dpm_cli.load(path, factory=factory)
    assert env["module"] not in sys.modules
    # the same kwargs named by the user (their recipe's model.kwargs) are theirs to give
    with pytest.raises(dpm_cli.errors.InputError, match="rejected its arguments"):  # build() takes no 'cache'
        dpm_cli.load(path, factory=factory, factory_kwargs=kwargs)
    assert env["marker"].exists()


@pytest.mark.slow  # importing transformers takes about 10 s of CPU
def test_transformers_model_from_a_plain_config_loads(tmp_path):
    pytest.importorskip("transformers")
    from dpm_cli.models.hf_config import from_config

    kwargs = {"architecture": "BertForSequenceClassification",
              "config": {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 32, "num_labels": 3}}
    torch.manual_seed(0)
    model = from_config(**kwargs)
    art = plain_artifact("dpm_cli.models.hf_config:from_config", kwargs)
    art["state_dict"] = {k: v.clone() for k, v in model.state_dict().items()}
    art["input_shape"] = [1, 5]
    loaded = dpm_cli.load(save(art, tmp_path / "bert.dpm.pt"))
    assert torch.equal(loaded.classifier.weight, model.classifier.weight)
    for architecture in ("AutoModel", "PreTrainedModel", "os"):  # only concrete model classes
        with pytest.raises(dpm_cli.errors.ConfigError):
            from_config(architecture, {})
