"""Small dpm artifacts for the trust and fuzz tests: a valid one, and ways to make hostile ones."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import torch

from dpm_cli.artifact import Provenance, make_artifact
from dpm_cli.models import mlp

MLP_FACTORY = "dpm_cli.models:mlp"
MLP_KWARGS = {"in_features": 64, "hidden": [12, 8], "num_classes": 10}
SHAPE = [1, 1, 8, 8]


def pruned_artifact() -> dict:
    """A digits MLP with one pruning stage (two hidden channels removed), as `dpm prune` would write it."""
    import torch_pruning as tp

    torch.manual_seed(0)
    model = mlp(**MLP_KWARGS)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(SHAPE))
    first = model.body[1]
    graph.get_pruning_group(first, tp.prune_linear_out_channels, [0, 3]).prune()
    history = [list(h) for h in graph.pruning_history()]
    return make_artifact(model, Provenance(MLP_FACTORY, dict(MLP_KWARGS), list(SHAPE), [history]))


def plain_artifact(factory: str = MLP_FACTORY, kwargs: dict[str, Any] | None = None) -> dict:
    """An unpruned digits MLP; factory and kwargs replaceable to make a hostile artifact."""
    torch.manual_seed(0)
    art = make_artifact(mlp(**MLP_KWARGS), Provenance(MLP_FACTORY, dict(MLP_KWARGS), list(SHAPE)))
    art["factory"] = factory
    art["factory_kwargs"] = dict(MLP_KWARGS if kwargs is None else kwargs)
    return art


def save(obj: Any, path: Path) -> Path:
    torch.save(obj, path)
    return path


def write_marker_module(folder: Path, name: str, marker: Path) -> Path:
    """A module that creates `marker` the moment it is imported, and whose `build` also makes an MLP."""
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(f"""\
        from pathlib import Path
        Path({str(marker)!r}).write_text("imported")
        from dpm_cli.models import mlp


        def build(**kwargs):
            return mlp(**kwargs)
        """))
    return path


class MarkerPickle:
    """Unpickling this writes the marker: the payload a `torch:load` artifact would point at."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('unpickled')",))
