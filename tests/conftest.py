import os
import sys

import torch

# Tests share 2 cores with other work; fixed threads keep timings and float results stable.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
sys.path.insert(0, os.path.dirname(__file__))  # for engine_helpers
