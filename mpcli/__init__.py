"""mpcli: a command-line launcher for model-parallel training of PyTorch models."""

__version__ = "0.1.0"
