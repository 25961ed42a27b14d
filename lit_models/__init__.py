"""lit-models: Lightning 2.x modules and DataModules for the classic architectures of deep learning.

The names below import lazily (the one list is :mod:`lit_models.registry`), so ``from lit_models.nets.resnet import
ResNet`` never imports Lightning.
"""

from __future__ import annotations

from typing import Any

from lit_models import registry
from lit_models.version import __version__ as __version__

__all__ = sorted(registry.EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in registry.EXPORTS:
        raise AttributeError(f"module 'lit_models' has no attribute {name!r}")
    return registry.lookup(name)


def __dir__() -> list[str]:
    return [*__all__, "__version__"]
