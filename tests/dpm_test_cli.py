"""`dpm` for subprocesses started by tests (scripts/release.sh): the CLI with conftest.py's torchvision
stubs, so transformers imports beside the CPU torch (see conftest.py). Test setup only."""
import sys
import types

for _name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
    sys.modules.setdefault(_name, types.ModuleType(_name))

from dpm_cli.cli.app import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
