"""One gate: no module but dpm_cli/trust.py imports code by name, unpickles, or reads a checkpoint
without weights_only=True. A new entry point that tried would fail here, not in a user's pipeline."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dpm_cli"
GATE = PACKAGE / "trust.py"
# Dynamic imports of fixed module names (never a name read from a file or recipe), and why.
FIXED_IMPORTS = {
    "report/rules.py": "torch's MAC-free namespaces, a constant list",
    "cli/app.py": "click's exception modules, constants",
    "data/builtin.py": "mlxtend / sklearn availability check, constants",
}
DYNAMIC = {"import_module", "__import__"}
NEVER = {"loads", "load", "exec", "eval", "compile"}  # as pickle.load(s), marshal.load(s) or builtins


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):  # a builtin or a from-import: exec(...), import_module(...)
                yield node, "builtins", func.id
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):  # torch.load(...)
                yield node, func.value.id, func.attr


def test_only_the_gate_imports_by_name_or_unpickles():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if path == GATE:
            continue
        for node, owner, name in _calls(path):
            where = f"{rel}:{node.lineno}"
            if owner == "torch" and name == "load":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                if not safe:
                    problems.append(f"{where}: torch.load without weights_only=True (use dpm_cli.trust)")
            elif name in DYNAMIC and rel not in FIXED_IMPORTS:
                problems.append(f"{where}: {name}() outside dpm_cli/trust.py (use trust.resolve_factory)")
            elif name in NEVER and owner in ("pickle", "marshal", "dill", "builtins") and \
                    (owner != "builtins" or name in ("exec", "eval", "compile")):
                problems.append(f"{where}: {owner}.{name}() runs code from data")
    assert not problems, "\n".join(problems)


def test_a_load_goes_one_way_checkpoint_artifact_trust():
    def imports(name: str) -> set[str]:
        tree = ast.parse((PACKAGE / name).read_text())
        return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}

    assert "checkpoint" not in imports("artifact.py")
    assert not {"checkpoint", "artifact"} & imports("trust.py")
    assert {"artifact", "trust"} <= imports("checkpoint.py")
