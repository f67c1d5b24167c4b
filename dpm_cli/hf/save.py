"""Save a compact transformers model as a standard Hugging Face folder that `from_pretrained` loads.

After compaction the modules are smaller than the config says (`intermediate_size: 1536` with 768
columns left), and `from_pretrained` then either fails or, with `ignore_mismatched_sizes`, silently
re-initialises the layers. So the config is rewritten from the modules' real shapes first; a shape
the config cannot express (a different FFN width or head count per layer) is refused with one line,
and the dpm artifact (`dpm_cli.hf.artifact`: rebuilt from the plain config and the pruning history)
and the torch.export program remain the way to ship such a model.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..batch import output_fields, seeded_call
from ..engine.kv_cache import set_cache
from ..engine.outputs import relative_error
from .. import owned
from ..checkpoint import out_of_space, share_tree
from ..pooling import st_modules
from ..errors import InputError
from .dtypes import as_stored, stored_state, write_config_dtype
from .load import captured_warnings, import_transformers
from .expressible import shape_mismatch, width_key_governs, width_key_spills
from .head_config import HFFormatError, head_counts, head_updates, size_free  # noqa: F401  (head_counts: re-exported)
from .prunable import (FFN_WIDTH_KEYS, config_scopes, config_value, expert_layers, ffn_layer_of, ffn_layers,  # noqa: F401
                       ffn_roots, ffn_width_key, head_layouts,
                       head_modules, is_convnet, set_config_value, width_keys)

# Files of a source folder that describe more than the transformers model (sentence-transformers'
# pooling and module list); copied so that e.g. SentenceTransformer(folder) loads the result too.
# Copied from the source folder: what pruning leaves valid. sentence-transformers' files and its module
# folders (pooling, normalize, a Dense projection of the hidden width dpm keeps), and the image or audio
# processor's settings, without which AutoImageProcessor/AutoFeatureExtractor cannot load the folder.
EXTRA_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
               "preprocessor_config.json", "processor_config.json",
               # the source's licence files: the pruned model is a derivative, published under its terms
               "LICENSE", "LICENSE.txt", "LICENSE.md", "NOTICE", "NOTICE.txt", "NOTICE.md")
EXTRA_DIRS = ("1_Pooling", "2_Normalize")


def standard_config_updates(model: nn.Module) -> dict[str, Any]:
    """Config values that make the config describe the compact modules, or HFFormatError."""
    config, updates = model.config, {}
    layers = ffn_layers(model)
    keys = width_keys(model, layers)
    for key in dict.fromkeys(k for k in keys.values() if k is not None):
        widths = [w for layer, w in layers.items() if keys[layer] == key]
        if len(set(widths)) > 1:
            raise HFFormatError(
                f"the FFN widths differ per layer ({widths}) but {type(config).__name__} holds one {key}; "
                "prune with pruning.ranking: layer for equal widths, or ship the dpm artifact (.dpm.pt) or .pt2 program")
        if widths[0] != config_value(config, key):
            updates[key] = widths[0]
    updates.update(head_updates(model, dict(updates)))
    # Whatever the keys say, the architecture built from the new config must have the compact shapes
    # (BLOOM's FFN is 4 x hidden_size whatever its config holds): else saving would write a folder
    # that from_pretrained refuses or, worse, re-initialises.
    mismatch = shape_mismatch(model, updates)
    if mismatch:
        raise HFFormatError(f"{type(config).__name__} cannot describe the compact model ({mismatch}); "
                            "ship the dpm artifact (.dpm.pt) or .pt2 program instead")
    return updates


def format_problem(model: nn.Module, ranking: str, head_ratio: float | None) -> str | None:
    """Why pruning `model` this way would give shapes its config cannot record (so output.hf would fail
    after training), or None. Checked before training, from the recipe alone."""
    config, name = model.config, type(model.config).__name__
    fix = "or set output.hf: false (BASE.dpm.pt and BASE.pt2 hold any shape)"
    if is_convnet(model):
        return (f"{name} cannot record pruned convolution channels (it sets widths per stage, not per layer), "
                "so the pruned model cannot be saved as a Hugging Face folder: set output.hf: false "
                "(BASE.dpm.pt and BASE.pt2 hold any shape)")
    layers = ffn_layers(model)
    keys = width_keys(model, layers)
    if ranking != "layer" and any(keys.values()):
        return (f"{name} holds one FFN width for all layers, but pruning.ranking {ranking} prunes each layer "
                f"differently: set pruning.ranking: layer for a Hugging Face folder, {fix}")
    problem = _width_key_problem(model, layers, keys)
    if problem:
        return f"{problem}, so a pruned FFN cannot be saved as a Hugging Face folder: set output.hf: false " \
               "(BASE.dpm.pt and BASE.pt2 hold any shape)"
    problem = _per_layer_problem(model, keys, head_ratio)
    if problem:
        return f"{problem}, so the pruned model cannot be saved as a Hugging Face folder: set pruning.head_ratio: 0 " \
               f"where heads are what it sets per layer, {fix}"
    if head_ratio == 0 or not head_modules(model):
        return None
    across = next((f"{attn}.{child}" for attn, lay in head_layouts(model)[0].items() for norm in lay.rms_norms
                   for child, sub in model.get_submodule(attn).named_children() if sub is norm), None)
    if across:
        return (f"{name} cannot record pruned attention heads: {across} normalises across all heads, and when heads "
                f"leave dpm rescales its eps, which the config's one rms_norm_eps cannot hold: set "
                f"pruning.head_ratio: 0 to keep the heads, {fix}")
    # a composite's parts are asked once the example inputs show which lose heads (`pruned_head_problem`)
    if not config_scopes(model) and not size_free(model):
        return (f"{name} cannot record pruned attention heads (with other head counts its model sizes "
                f"the heads, a norm or the output projection from hidden_size, not the counts, and transformers 5 "
                f"has no pruned_heads): set pruning.head_ratio: 0 to keep the heads, {fix}")
    if head_ratio is None and ranking != "layer":
        return (f"{name} holds one head count for all layers, but heads compete in a {ranking} ranking: set "
                f"pruning.ranking: layer or pruning.head_ratio (e.g. 0.25: the same heads removed from every "
                f"layer), {fix}")
    return None


def unpruned_ffn_problem(model: nn.Module, groups: list) -> str | None:
    """Why a folder cannot hold the widths these groups leave, or None: an FFN without a group (named in
    pruning.ignore, or an expert no token of the example reaches, so torch-pruning never saw it) keeps
    its width while another FFN whose width the same config key sets is pruned. Asked once the groups
    are known, before training."""
    layers = ffn_layers(model)
    names = {id(m): n for n, m in model.named_modules()}
    roots = {names.get(id(g.root)) for g in groups}  # the FFN input projections (or experts) pruned
    pruned = {ffn_layer_of(n) for n in roots & set(ffn_roots(model))} | (roots & set(expert_layers(model)))
    keys = width_keys(model, layers)
    governed = {keys[layer] for layer in pruned if layer in keys}
    kept = next((layer for layer in layers if layer not in pruned and keys[layer] in governed), None)
    if kept is None:
        return None
    return (f"the FFN of {kept} is not pruned (pruning.ignore names it, or the example input never runs it), but "
            f"{type(model.config).__name__}.{keys[kept]} also sets the width of the FFNs that are, so the pruned model "
            "cannot be saved as a Hugging Face folder: prune every FFN, or set output.hf: false (BASE.dpm.pt and "
            "BASE.pt2 hold any shape)")


def _width_key_problem(model: nn.Module, layers: dict[str, int], keys: dict[str, str | None]) -> str | None:
    name = type(model.config).__name__
    missing = [layer for layer, key in keys.items() if key is None]
    if missing:
        return (f"{name} has no config key for the FFN width of {missing[0]} (dpm knows "
                f"{', '.join(FFN_WIDTH_KEYS)}; BLOOM-style configs fix it at 4 x hidden_size)")
    for key in dict.fromkeys(keys.values()):
        governed = {layer: w for layer, w in layers.items() if keys[layer] == key}
        if width_key_governs(model, key, governed) is False:
            return f"{name}.{key} does not set the width of every FFN dpm prunes"
        spill = width_key_spills(model, key, governed)
        if spill:
            return f"{name}.{key} also sizes layers dpm keeps ({spill.split(':')[0]})"
    return None


def _per_layer_problem(model: nn.Module, keys: dict[str, str | None], head_ratio: float | None) -> str | None:
    """A config with per-layer overrides (transformers' `per_layer_config`, e.g. EmbeddingGemma 2) that
    would have to change: dpm rewrites the global keys only."""
    overrides = model.config.to_dict().get("per_layer_config") or {}
    changed = {k for k in keys.values() if k} | ({"num_attention_heads", "num_key_value_heads", "head_dim"}
                                                 if head_ratio != 0 and head_modules(model) else set())
    hit = sorted({k for layer in overrides.values() if isinstance(layer, dict) for k in layer} & changed)
    if hit:
        return f"{type(model.config).__name__} sets {hit[0]} per layer (per_layer_config), which dpm does not rewrite"
    return None


PROVENANCE_FILE = "dpm_provenance.json"  # what produced the folder, for `dpm check --built-from FOLDER`


def save_hf(model: nn.Module, tokenizer: Any, folder: str | Path, example_inputs: Any = None, *,
            force: bool = False, source: str | Path | None = None, provenance: dict | None = None,
            card: str | None = None) -> Path:
    """Write `model` (config rewritten to its real shapes) and `tokenizer` to `folder` with save_pretrained.

    With `example_inputs`, the folder is loaded back with `from_pretrained` before it is moved into
    place, and must load without warnings and give exactly the same outputs. `source` is the folder
    the model came from; its sentence-transformers files are copied along. Atomic: nothing is left
    at `folder` on failure. `provenance` (dpm_cli.provenance.record) is written beside the weights, where
    transformers and sentence-transformers ignore it; `card`, the model card, as README.md."""
    folder = Path(folder)
    if folder.exists() and not force:
        raise InputError(f"{folder} exists: choose another output or pass --force to overwrite it")
    updates = standard_config_updates(model)
    for key, value in updates.items():
        set_config_value(model.config, key, value)  # the compact model's config now says what it is
    if getattr(model.config, "auto_map", None) and getattr(import_transformers(), type(model).__name__, None) is type(model):
        # the folder's own code never ran (hf.custom_code): the pruned model is transformers' class, and
        # the written folder holds no code for an auto_map to point at. A model built from such code (in
        # Python, trust_remote_code=True) keeps it: its folder needs that code beside it.
        del model.config.auto_map
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        cached = getattr(model, "_dpm_use_cache", None) or []  # set aside by load_hf; saved as it was
        set_cache(model.config, cached, True)
        try:
            model.save_pretrained(str(tmp), safe_serialization=True, state_dict=stored_state(model))
        finally:
            set_cache(model.config, cached, False)
        write_config_dtype(model, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        _copy_extras(Path(source) if source else None, tmp)
        if provenance is not None:
            (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True), encoding="utf-8")
        if card is not None:  # the model card (hf/card.py), never the source's, which describes another model
            (tmp / "README.md").write_text(card, encoding="utf-8")
        if example_inputs is not None:
            verify_folder(model, tmp, example_inputs)
        share_tree(tmp)
        if folder.exists():
            shutil.rmtree(folder)  # only a folder dpm wrote: OutputPlan.check refuses any other
        tmp.rename(folder)
        owned.record([folder / "config.json"])  # marks the folder as dpm's, for a later --force
    except Exception as err:
        raise out_of_space(err, folder, folder.parent) or err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _copy_extras(source: Path | None, target: Path) -> None:
    if source is None or not source.is_dir():
        return
    for name in EXTRA_FILES:
        if _copyable(source / name, source) and (source / name).is_file():
            shutil.copy2(source / name, target / name)
    for name in EXTRA_DIRS + _module_dirs(source):
        if _copyable(source / name, source) and (source / name).is_dir():
            shutil.copytree(source / name, target / name, dirs_exist_ok=True,
                            ignore=lambda folder, names: [n for n in names
                                                          if not _copyable(Path(folder) / n, source)])


def _copyable(path: Path, source: Path) -> bool:
    """Not a link, or a link into the folder itself or into the Hugging Face cache's store of the folder's
    repository: a snapshot (`hub/models--org--name/snapshots/REV`, what snapshot_download returns) is
    links to `../../blobs/SHA`, and leaving them out wrote a sentence-transformers folder without
    modules.json and with an empty 1_Pooling. A link anywhere else is left behind: a folder from elsewhere
    must not make dpm copy what it points to (a key file) into a folder meant to be published."""
    if not path.is_symlink():
        return True
    target, root = path.resolve(), source.resolve()
    stores = [root]
    if root.parent.name == "snapshots":
        stores.append(root.parent.parent / "blobs")
    return path.exists() and any(target.is_relative_to(store) for store in stores)


def _module_dirs(source: Path) -> tuple[str, ...]:
    """The sub-folders sentence-transformers' modules.json names (e.g. 2_Dense), plain names only."""
    paths = [m.get("path") for m in st_modules(source)]
    plain = [p for p in paths if isinstance(p, str) and p not in ("", ".", "..")]
    return tuple(p for p in plain if "/" not in p and "\\" not in p)  # inside the folder, nowhere else


@torch.no_grad()
def _difference(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Largest difference relative to the reference's largest magnitude, or absolute where that is below 1:
    float32 rounding of a small output (a random head's single score, 0.05) is 1e-7, relatively 2e-6,
    while a weight or shape the folder gets wrong moves the outputs by their own size."""
    return relative_error(reference, other) * min(1.0, float(reference.abs().max()) if reference.numel() else 1.0)


def verify_folder(model: nn.Module, folder: Path, example_inputs: Any, tolerance: float = 1e-6) -> None:
    """Load `folder` as `type(model)` and check that every output field equals the model's (the same
    weights give the same function; kernels may round differently in the last bits)."""
    task = getattr(model, "_dpm_task", None)  # loaded by load_hf: reloaded as it was loaded
    loader = getattr(import_transformers(), task) if task else type(model)
    with captured_warnings() as warned:
        try:
            # loaded in the folder's own dtype, then to float32, as load_hf loaded the source: buffers the
            # model builds rather than loads (Gemma's embed_scale) are then rounded the same way
            reloaded = loader.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False).float()
        except Exception as err:  # e.g. a size mismatch: a folder dpm must not hand over
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise HFFormatError(f"the saved folder does not load as {type(model).__name__} ({first})") from err
    warned = [w for w in warned if w not in getattr(model, "_dpm_load_warnings", ())]
    if warned:
        raise HFFormatError(f"the saved folder loads with a warning: {warned[0].splitlines()[0][:200]}")
    # compared as dpm ran it, without the key/value cache: FSMT's decoder computes otherwise with it
    set_cache(reloaded.config, getattr(model, "_dpm_use_cache", None) or [], False)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with as_stored(model):  # the weights as the folder holds them (bfloat16 stays bfloat16)
            expected = output_fields(seeded_call(model, example_inputs))
        got = output_fields(seeded_call(reloaded.to(device).eval(), example_inputs))
    finally:
        model.train(was_training)
    for name, value in expected.items():
        other = got.get(name)
        error = _difference(value.float(), other.float()) if other is not None else float("inf")
        if error > tolerance:
            raise HFFormatError(f"the saved folder does not reproduce {name} of the compact model "
                                f"(relative difference {error:.1e}, allowed {tolerance:g})")
