import os
import sys

import types

# torchvision from PyPI is a CUDA build: beside the CPU torch its compiled ops cannot register and
# `import torchvision` fails. Its models (and timm's, which import it) need none of those ops, so the
# two registration modules are stubbed out before the first import. Test setup only, never the package.
for _name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
    sys.modules.setdefault(_name, types.ModuleType(_name))

import torch  # noqa: E402

# Tests share 2 cores with other work; fixed threads keep timings and float results stable.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
sys.path.insert(0, os.path.dirname(__file__))  # for engine_helpers
