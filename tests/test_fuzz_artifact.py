"""Fuzzing the artifact loader: mutated artifacts fail only with dpm's own errors (or load).

Every example is saved with torch.save and loaded with `dpm_cli.load`, the path every entry point takes.
Any exception that is not a `DpmError` fails the test: it would reach the user as a traceback or exit 1.

Profiles: the default is fast (350 examples in all, derandomized, about 20 s). The long one runs 10,000
random examples per test: `DPM_FUZZ_PROFILE=long PYTHONPATH=$PWD python -m pytest tests/test_fuzz_artifact.py -q`;
`DPM_FUZZ_EXAMPLES=2000` sets any other count.
"""
from __future__ import annotations

import copy
import io
import os
import zipfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dpm_cli
from artifact_helpers import pruned_artifact
from dpm_cli.errors import DpmError

PROFILE = os.environ.get("DPM_FUZZ_PROFILE", "fast")
if PROFILE not in ("fast", "long"):
    raise ValueError(f"DPM_FUZZ_PROFILE={PROFILE!r}: use fast or long")
LONG = PROFILE == "long"
EXAMPLES = os.environ.get("DPM_FUZZ_EXAMPLES")  # e.g. 2000: any count, random like the long profile


def fuzz(fast: int):
    count = int(EXAMPLES) if EXAMPLES else 10_000 if LONG else fast
    return settings(max_examples=count, deadline=None, derandomize=not (LONG or EXAMPLES), database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module", autouse=True)
def small_machine():
    """Pretend the machine has 256 MiB, so a mutated width is refused instead of allocated."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("dpm_cli.artifact._memory_bytes", lambda: 256 * 2**20)
        yield


@pytest.fixture(scope="module")
def valid() -> dict:
    return pruned_artifact()


@pytest.fixture(scope="module")
def valid_bytes(valid) -> bytes:
    buf = io.BytesIO()
    torch.save(valid, buf)
    return buf.getvalue()


def load_expecting_dpm_errors(data: bytes, path) -> None:
    path.write_bytes(data)
    try:
        dpm_cli.load(path)
    except DpmError:
        pass


# --- structural mutations ---------------------------------------------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True)
           | st.text(max_size=12))
PLAIN = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
TENSORS = st.builds(lambda shape, dtype: torch.zeros(shape, dtype=dtype),
                    st.lists(st.integers(0, 4), max_size=3),
                    st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool, torch.complex64]))
VALUES = PLAIN | TENSORS | st.tuples(SCALARS, SCALARS)
FIELDS = ["format", "version", "factory", "factory_kwargs", "input_shape", "stages", "metadata", "state_dict"]
FACTORIES = st.sampled_from(["dpm_cli.models:mlp", "dpm_cli.models:resnet20", "dpm_cli.models:vgg_small",
                             "dpm_cli.models:build_model", "dpm_cli.models.mlp:mlp", "dpm_cli.models:MODELS",
                             "dpm_cli.models:mlp.__call__", "builtins:print", "timm.create_model"]) | st.text(max_size=30)


def mutate(data, art: dict) -> None:
    """One random edit of a field, a nested value, a stage entry or a weight."""
    op = data.draw(st.sampled_from(["drop", "set", "kwarg", "shape", "stage", "weight", "factory"]))
    if op == "drop":
        art.pop(data.draw(st.sampled_from(FIELDS)), None)
    elif op == "set":
        art[data.draw(st.sampled_from(FIELDS))] = data.draw(VALUES)
    elif op == "kwarg" and isinstance(art.get("factory_kwargs"), dict):
        key = data.draw(st.sampled_from(["in_features", "hidden", "num_classes", "name", "depth", "width"])
                        | st.text(max_size=8))
        art["factory_kwargs"][key] = data.draw(VALUES | st.lists(st.integers(-4, 2**33), max_size=3))
    elif op == "shape":
        art["input_shape"] = data.draw(st.lists(st.integers(-2, 2**34), max_size=9) | VALUES)
    elif op == "stage" and isinstance(art.get("stages"), list) and art["stages"] and art["stages"][0]:
        step = art["stages"][0][data.draw(st.integers(0, len(art["stages"][0]) - 1))]
        if isinstance(step, list) and step:
            step[data.draw(st.integers(0, len(step) - 1))] = data.draw(
                VALUES | st.sampled_from(["body.1", "body.3", "head", ""]) | st.lists(st.integers(-2, 40), max_size=6))
    elif op == "weight" and isinstance(art.get("state_dict"), dict) and art["state_dict"]:
        key = data.draw(st.sampled_from(sorted(art["state_dict"])) | st.text(max_size=8))
        art["state_dict"][key] = data.draw(TENSORS | VALUES)
    elif op == "factory":
        art["factory"] = data.draw(FACTORIES)


@fuzz(fast=150)
@given(st.data())
def test_structurally_mutated_artifacts(workdir, valid, data):
    art = copy.deepcopy(valid)
    for _ in range(data.draw(st.integers(1, 3))):
        mutate(data, art)
    buf = io.BytesIO()
    try:
        torch.save(art, buf)
    except Exception:  # torch cannot write this value at all: nothing to load
        return
    load_expecting_dpm_errors(buf.getvalue(), workdir / "structural.dpm.pt")


# --- byte-level mutations ---------------------------------------------------------------------------

@fuzz(fast=100)
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.integers(0, 10**6) | st.none())
def test_byte_mutated_files(workdir, valid_bytes, flips, cut):
    data = bytearray(valid_bytes)
    for at, value in flips:
        data[at % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    load_expecting_dpm_errors(bytes(data), workdir / "bytes.dpm.pt")


@fuzz(fast=100)
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
       cut=st.integers(0, 10**6) | st.none())
def test_mutated_pickle_inside_a_valid_zip(workdir, valid_bytes, flips, cut):
    """Byte edits of data.pkl, re-zipped with valid checksums: this reaches torch's weights-only unpickler."""
    source = zipfile.ZipFile(io.BytesIO(valid_bytes))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            content = bytearray(source.read(info))
            if info.filename.endswith("data.pkl"):
                for at, value in flips:
                    content[at % len(content)] = value
                if cut is not None:
                    content = content[: cut % (len(content) + 1)]
            target.writestr(info.filename, bytes(content))
    load_expecting_dpm_errors(out.getvalue(), workdir / "pickle.dpm.pt")
