"""A lit-models checkpoint file as data: read with ``weights_only=True``, its ``lit_models`` entry required."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lit_models.datamodules.files import DataError

# The checkpoint entry that makes a checkpoint self-contained: the module's and the DataModule's registered names
# (lit_models.registry), the data's description, where the weights started, and the version that wrote it.
CHECKPOINT_KEY = "lit_models"


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's contents (tensors on the CPU); errors name the file and what it lacks."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist.")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which, not pickle's internals
        raise DataError(f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {error}).") from None
    if not isinstance(saved, dict) or CHECKPOINT_KEY not in saved:
        raise DataError(
            f"{path} was not written by lit-models (it has no {CHECKPOINT_KEY!r} entry naming its model and data); "
            "train with lit-models, or load the weights into a module with weights=/weights_backbone=."
        )
    return saved
