"""Every module of dpm_cli imports on its own, first, in a fresh interpreter.

A move of four functions (data/words.py -> training/labels.py) made the report package import training,
which imports the engine, which imports the report package: `import dpm_cli.engine` as the first import
failed (test_hf.py did not collect), while every test that imported another module first passed. Each module is imported in a forked child of one
interpreter that has torch and the other libraries loaded already (none is part of a cycle of ours).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILDREN = textwrap.dedent("""
    import os, pathlib, sys, types
    # test setup only, as conftest.py: transformers imports torchvision, whose CUDA ops cannot load here
    for n in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(n, types.ModuleType(n))
    # the field's libraries, loaded once here and shared by every child (none of them is part of a cycle
    # of ours): each child then imports only dpm_cli's own modules, and the walk takes seconds
    import importlib
    for lib in ("torch", "torch_pruning", "thop", "yaml", "rich.console", "typer", "numpy", "safetensors.torch",
                "transformers", "transformers.modeling_utils"):
        try:
            importlib.import_module(lib)
        except Exception:
            pass  # then a child imports it itself
    # the files, not pkgutil.walk_packages: that imports every package into this parent, and each child
    # would inherit them, cycle or not
    root = pathlib.Path(sys.argv[1])
    names = sorted(".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
                   for p in (root / "dpm_cli").rglob("*.py") if p.name != "__main__.py")  # __main__ runs the CLI
    assert not any(n.startswith("dpm_cli") for n in sys.modules)
    running = 0
    for name in names:
        if running == os.cpu_count():
            os.wait()
            running -= 1
        if os.fork() == 0:
            try:
                __import__(name)
            except BaseException as err:
                print(f"{name}: {type(err).__name__}: {err}", flush=True)
                os._exit(1)
            os._exit(0)
        running += 1
    while running:
        os.wait()
        running -= 1
    print(f"imported {len(names)}", flush=True)
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks a child per module")
def test_every_module_imports_first_on_its_own():
    run = subprocess.run([sys.executable, "-c", CHILDREN, str(ROOT)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = run.stdout.splitlines()
    assert run.returncode == 0 and lines and lines[-1].startswith("imported "), run.stdout[-2000:] + run.stderr[-2000:]
    assert lines[:-1] == []  # one line per module that failed
    assert int(lines[-1].split()[1]) > 60  # the walk found the package
