"""Import every command module so that each registers itself on `app`."""
from . import prune_cmd  # noqa: F401  (dpm prune, dpm plan, dpm validate)
from . import report_cmd  # noqa: F401  (dpm report, dpm check)
from . import train_cmd  # noqa: F401  (dpm train)
