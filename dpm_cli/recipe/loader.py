"""Read a recipe: YAML -> line map -> overrides -> validation -> `Recipe`.

Everything is checked before any work starts, and the first problem found is raised as one
`ConfigError` line: `<file>:<line>: <key path>: <what is wrong>; <how to fix it>`. Values set by
an override say `<file> (override '<text>')` instead of a line.

Relative `model.checkpoint`/`data.path` values in a file resolve against the recipe file's folder
(so a recipe and its data can move together); those from overrides resolve against the working
directory, as any command-line path would.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import ConfigError
from ..escaping import printable
from ..hub_ids import hub_id_hint
from ..limits import MAX_RECIPE_BYTES, human_bytes
from .bounded_yaml import BoundedLoader, check_expansion, reader_message
from .overrides import apply_overrides
from .schema import SUPPORTED_VERSIONS, Recipe
from .spec import Problem, Spec, fields_of, show, unknown_key_message


def load_recipe(path: str | Path, overrides: Sequence[str] = (), *, check_files: bool = True,
                model_folder: str | Path | None = None) -> Recipe:
    """Load, override and validate the recipe file at `path`; see the module docstring. `model_folder`: a
    Hugging Face folder the command line names (MODEL), which is model.hf.path when the recipe names no model."""
    name = printable(path)
    file = Path(path)
    if not file.is_file():
        what = "is a folder, not a recipe file" if file.is_dir() else "no such recipe file"
        raise ConfigError(f"{name}: {what}")
    try:
        with file.open("rb") as f:  # read at most one byte past the limit: the file may be huge or growing
            data = f.read(MAX_RECIPE_BYTES + 1)
        _check_size(len(data), name)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{name}: cannot read the recipe file ({printable(err)}); save it as UTF-8 text") from None
    return parse_recipe(text, name, overrides, base_dir=file.parent, check_files=check_files, model_folder=model_folder)


def parse_recipe(
    text: str,
    source: str = "<string>",
    overrides: Sequence[str] = (),
    *,
    base_dir: str | Path | None = None,
    check_files: bool = True,
    model_folder: str | Path | None = None,
) -> Recipe:
    """Like `load_recipe` for text already read; `source` only names it in messages.

    Relative paths resolve against `base_dir` (default: the working directory). `check_files=False`
    skips the existence checks, e.g. to show a recipe whose data lives on another machine.
    """
    source = printable(source)
    _check_size(len(text), source)
    node, data = _parse_yaml(text, source)
    raw = _top_level(node, data, source)
    raw, origins = apply_overrides(raw, overrides)
    raw = _with_model_folder(raw, model_folder)
    ctx = _Context(source, _line_map(node, source), origins, Path(base_dir or "."))
    _check_version(raw, ctx)
    recipe = _build(Recipe, raw, "", ctx)
    _cross_checks(recipe, ctx)
    if check_files:  # last, so that e.g. "data.path is only used with tensors" comes first
        _check_files(ctx)
    return recipe


def _with_model_folder(raw: Any, folder: str | Path | None) -> Any:
    """`raw` with model.hf.path set to `folder` (absolute: it was named relative to where dpm runs) when the
    recipe names no model (no hf.path, factory or checkpoint), so one recipe serves every folder."""
    if folder is None or not isinstance(raw, dict):
        return raw  # not a mapping: validation says so
    model = raw.get("model")
    if model is not None and not isinstance(model, dict):
        return raw
    model = model or {}
    hf = model.get("hf") if isinstance(model.get("hf"), dict) else {}
    if hf.get("path") or model.get("factory") or model.get("checkpoint") or (model.get("hf") not in (None, {}) and not hf):
        return raw
    return {**raw, "model": {**model, "hf": {**hf, "path": str(Path(folder).resolve())}}}


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML (every key, defaults filled in); parses back equal."""
    header = "# dpm recipe, fully resolved: every key present, defaults filled in, paths absolute\n"
    body = yaml.dump(recipe.to_dict(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return header + body


class _Dumper(yaml.SafeDumper):
    """Sections as indented blocks, lists on one line ([1, 3, 32, 32]), as a person writes them."""


_Dumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def default_recipe() -> Recipe:
    """The recipe that `version: 1` alone means."""
    return Recipe()


# --- YAML and line numbers -------------------------------------------------------------------


def _check_size(size: int, source: str) -> None:
    if size > MAX_RECIPE_BYTES:
        raise ConfigError(f"{source}: the recipe is over {human_bytes(MAX_RECIPE_BYTES)}; a recipe is a few KB "
                          "of settings, so this is not one")


def _parse_yaml(text: str, source: str) -> tuple[Node | None, Any]:
    # One parse gives both the node tree (for line numbers) and the plain data.
    loader = None
    try:
        loader = BoundedLoader(text, source)  # the reader checks for control characters here already
        node = loader.get_single_node()
        if node is not None:
            check_expansion(node, source)  # before anything walks the tree
        return node, (loader.construct_document(node) if node is not None else None)
    except yaml.MarkedYAMLError as err:
        raise ConfigError(_yaml_message(err, source)) from None
    except yaml.reader.ReaderError as err:
        raise ConfigError(reader_message(err, text, source)) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: invalid YAML: {printable(' '.join(str(err).split()))}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_message(err: yaml.MarkedYAMLError, source: str) -> str:
    mark = err.problem_mark or err.context_mark
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    problem = str(err.problem or err.context or "cannot parse")
    if problem.startswith("but ") and err.context:  # e.g. "expected a single document..., but found..."
        problem = f"{err.context}, {problem}"
    if isinstance(err, yaml.constructor.ConstructorError):
        fix = "recipes are plain YAML, without tags such as !!python"
    elif "single document" in str(err.context):
        fix = "a recipe is one YAML document; remove the '---' line"
    else:
        fix = "check the indentation, colons, quotes and brackets there"
    return f"{where}: invalid YAML: {printable(' '.join(problem.split()))}; {fix}"


def _top_level(node: Node | None, data: Any, source: str) -> dict:
    if node is None:
        raise ConfigError(f"{source}: the recipe is empty; start it with 'version: 1'")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}:{node.start_mark.line + 1}: the top level must be a mapping of sections "
            f"('version: 1', 'pruning: ...'), got {_kind(data)}"
        )
    return data


def _kind(value: Any) -> str:
    return "a list" if isinstance(value, list) else f"the value {show(value)}"


def _line_map(node: Node | None, source: str) -> dict[str, int]:
    """{key path: 1-based line}, e.g. 'pruning.budget.keep' or 'model.input_shape[2]'."""
    lines: dict[str, int] = {}
    if node is not None:
        _walk(node, "", lines, source)
    return lines


def _walk(node: Node, path: str, lines: dict[str, int], source: str) -> None:
    if isinstance(node, MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else "?"
            sub, line = _join(path, key), key_node.start_mark.line + 1
            # PyYAML silently keeps the last of two equal keys; that hides typos, so refuse.
            if key in seen:
                raise ConfigError(f"{source}:{line}: {sub}: duplicate key (also on line {seen[key]}); keep one")
            seen[key] = lines[sub] = line
            _walk(value_node, sub, lines, source)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            sub = f"{path}[{index}]"
            lines[sub] = item.start_mark.line + 1
            _walk(item, sub, lines, source)


def _join(path: str, key: Any) -> str:
    key = printable(key, 100)  # keys are echoed in messages
    return f"{path}.{key}" if path else key


# --- validation --------------------------------------------------------------------------------


@dataclass
class _Context:
    source: str
    lines: dict[str, int]
    origins: dict[str, str]  # key path -> override text
    base_dir: Path
    files: dict[str, str] = field(default_factory=dict)  # key path -> resolved path to check
    given: dict[str, str] = field(default_factory=dict)  # key path -> the path as written

    def override_of(self, path: str) -> str | None:
        """The override that set `path` or one of its parents, if any (the last one wins)."""
        for cut in range(len(path), 0, -1):
            if (cut == len(path) or path[cut] in ".[") and path[:cut] in self.origins:
                return self.origins[path[:cut]]
        return None

    def where(self, path: str) -> str:
        override = self.override_of(path)
        if override is not None:
            return f"{self.source} (override '{printable(override, 80)}')"
        # A key absent from the file (a default) is reported at its nearest written parent.
        while path:
            if path in self.lines:
                return f"{self.source}:{self.lines[path]}"
            path = path.rsplit(".", 1)[0] if "." in path else ""
        return self.source

    def fail(self, path: str, message: str, at: str | None = None) -> NoReturn:
        raise ConfigError(f"{self.where(at or path)}: {path}: {message}")


def _check_version(raw: dict, ctx: _Context) -> None:
    # Checked before anything else: a newer recipe may use keys this version has never heard of.
    supported = " or ".join(str(v) for v in SUPPORTED_VERSIONS)
    if "version" not in raw:
        raise ConfigError(f"{ctx.source}: version: missing; add 'version: {SUPPORTED_VERSIONS[-1]}' at the top")
    version = raw["version"]
    if isinstance(version, bool) or not isinstance(version, int):
        ctx.fail("version", f"expected an integer, got {show(version)}; write 'version: {SUPPORTED_VERSIONS[-1]}'")
    if version not in SUPPORTED_VERSIONS:
        ctx.fail("version", f"{version} is not supported; this dpm reads version {supported} recipes, "
                 f"so write 'version: {SUPPORTED_VERSIONS[-1]}' and check the keys (or upgrade dpm)")


def _build(cls: type, raw: Any, path: str, ctx: _Context) -> Any:
    if raw is None:  # `model:` with nothing under it means "all defaults"
        raw = {}
    if not isinstance(raw, dict):
        ctx.fail(path, f"expected a section of indented 'key: value' lines, got {show(raw)}")
    known = fields_of(cls)
    for key in raw:
        if key not in known:
            ctx.fail(_join(path, key), unknown_key_message(key, list(known)))
    values = {}
    for name, f in known.items():
        sub = _join(path, name)
        if "section" in f.metadata:
            values[name] = _build(f.metadata["section"], raw.get(name), sub, ctx)
        elif name in raw:
            values[name] = _value(f.metadata["spec"], raw[name], sub, ctx)
    return cls(**values)


def _value(spec: Spec, raw: Any, path: str, ctx: _Context) -> Any:
    try:
        value = spec.convert(raw)
    except Problem as problem:
        ctx.fail(path + problem.subpath, problem.message)
    if spec.kind == "path" and value is not None:
        value = _resolve(value, path, ctx)
    return value


PACKAGE_PREFIX = "package:"


def package_folder(value: str) -> str | None:
    """The folder 'package:NAME/sub/dir' names inside an installed package (e.g. a model shipped with
    pip), found without importing (running) the package; None when no such package is installed."""
    import importlib.util

    name, _, rest = value[len(PACKAGE_PREFIX):].partition("/")
    try:
        spec = importlib.util.find_spec(name) if name.isidentifier() or "." in name else None
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return os.path.abspath(Path(locations[0]) / rest) if locations else None


def _package_path(value: str, path: str, ctx: _Context) -> str:
    resolved = package_folder(value)
    if resolved is None:
        name = value[len(PACKAGE_PREFIX):].partition("/")[0]
        ctx.fail(path, f"{value!r}: no installed package {name!r}; install it or give a folder path")
    ctx.files[path] = resolved
    return resolved


def _resolve(value: str, path: str, ctx: _Context) -> str:
    if value.startswith(PACKAGE_PREFIX):
        return _package_path(value, path, ctx)
    base = Path.cwd() if ctx.override_of(path) is not None else ctx.base_dir
    resolved = os.path.abspath(base / Path(value).expanduser())
    ctx.files[path], ctx.given[path] = resolved, value
    return resolved


def _check_files(ctx: _Context) -> None:
    for path, resolved in ctx.files.items():
        if not Path(resolved).exists():
            base = "the working directory" if ctx.override_of(path) is not None else "the recipe's folder"
            ctx.fail(path, f"no such file '{resolved}' (relative paths resolve against {base}); fix the path"
                     + hub_id_hint(ctx.given.get(path, "")))


TEXT_SOURCES = ("text", "pydoc", "local-docs", "wordnet", "english")  # tokenised by the model's tokenizer


def _cross_checks(recipe: Recipe, ctx: _Context) -> None:
    data, pruning, training = recipe.data, recipe.pruning, recipe.training
    for key, source, needs in (("path", "tensors", "a .pt or .npz file with inputs and labels"),
                               ("path", "text", "a text file, one example per line or JSON lines"),
                               ("factory", "factory", "'package.module:callable' returning (train_loader, val_loader)")):
        value = getattr(data, key)
        if data.source == source and value is None:
            ctx.fail(f"data.{key}", f"required when data.source is '{source}'; set it to {needs}", at="data.source")
        if key == "path" and data.source in ("tensors", "text"):
            if data.source == source and value is not None and Path(value).is_dir():  # hashing it failed
                ctx.fail("data.path", f"'{value}' is a folder; set it to {needs} (the folder's files joined "
                         "into one, e.g. cat *.jsonl > all.jsonl)")
            continue
        if data.source != source and value is not None:
            ctx.fail(f"data.{key}", f"only used when data.source is '{source}' (it is '{data.source}'); "
                     f"remove data.{key} or set data.source: {source}")
    if data.augment.replace_words > 0 and data.source not in TEXT_SOURCES:
        ctx.fail("data.augment.replace_words", f"replaces words of text data, and data.source is "
                 f"'{data.source}'; set it to 0 or use a text source ({', '.join(TEXT_SOURCES)})")
    _hf_checks(recipe, ctx)
    smooth = pruning.mode == "smooth"  # single_step ignores decay_steps and decay_fraction
    if smooth and pruning.decay_steps is not None and pruning.decay_fraction is not None:
        # Usually an override of one on a recipe that writes the other: point at the override.
        key, other = "pruning.decay_fraction", "pruning.decay_steps"
        if ctx.override_of(key) is None and ctx.override_of(other) is not None:
            key, other = other, key
        hint = f" (with an override, also pass {other}=null)" if ctx.override_of(key) is not None else ""
        ctx.fail(key, f"both pruning.decay_steps ({pruning.decay_steps}) and pruning.decay_fraction "
                 f"({pruning.decay_fraction}) are set; keep one of them{hint}")
    if (smooth and pruning.round_interval is not None and pruning.decay_steps is not None
            and pruning.round_interval < pruning.decay_steps):
        ctx.fail("pruning.round_interval", f"{pruning.round_interval} is shorter than pruning.decay_steps "
                 f"({pruning.decay_steps}), so rounds would overlap; set it >= {pruning.decay_steps} or remove it")
    if training.epochs is None and training.steps is None:
        ctx.fail("training", "neither training.epochs nor training.steps is set; set one, e.g. epochs: 3")


def _hf_checks(recipe: Recipe, ctx: _Context) -> None:
    """A Hugging Face folder replaces factory + checkpoint; text data and hf output need a model that tokenises."""
    model, data = recipe.model, recipe.data
    if model.hf.path is not None:
        for key in ("factory", "checkpoint", "input_shape"):
            if getattr(model, key) is not None:
                ctx.fail(f"model.{key}", f"not used with a Hugging Face model (model.hf.path, or a folder given as "
                         f"MODEL: it holds the architecture, the weights and the tokenizer); remove model.{key}")
        return
    if data.source in TEXT_SOURCES:
        ctx.fail("data.source", "text data is tokenised by the model's tokenizer: set model.hf.path to a "
                 "Hugging Face model folder, or give the folder as MODEL (dpm validate/prune FOLDER -r RECIPE)")
    if recipe.output.hf:
        ctx.fail("output.hf", "only for Hugging Face models: set model.hf.path, or remove output.hf")
