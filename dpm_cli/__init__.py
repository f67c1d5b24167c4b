"""dpm: the Decay Pruning Method for PyTorch models, as a library and a CLI."""
__version__ = "0.1.0"
