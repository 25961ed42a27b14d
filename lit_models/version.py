"""The package version, in a module of its own so that any layer can name it without importing the package."""

__version__ = "0.1.0"


def version_line() -> str:
    """What ``lit-models --version`` prints: this package's version and those of torch and Lightning."""
    import pytorch_lightning
    import torch

    return f"lit-models {__version__} (torch {torch.__version__}, pytorch-lightning {pytorch_lightning.__version__})"
