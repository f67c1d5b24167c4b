"""Import every command module so that each registers itself on `app`."""
from . import report_cmd  # noqa: F401  (dpm report, dpm check)
