"""A lit-models checkpoint file as data: read with ``weights_only=True``, its ``lit_models`` entry required, and
every part that later code reads checked first (docs/cli.md, "What a checkpoint may build").

The file names its module and DataModule; only lit-models' classes and those registered with
``lit_models.register`` are built from it, and nothing the file names is imported. Lightning's own keys that name
code (``_instantiator``, ``_class_path``) are accepted only where they name what LightningCLI itself writes, and are
never handed on: the classes are built here, from arguments checked against their signatures.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lit_models.datamodules.files import DataError
from lit_models.datamodules.spec import DataSpec
from lit_models.registry import DATAMODULES, MODELS, registered_class
from lit_models.saved_arguments import checked_arguments, is_plain

# The checkpoint entry that makes a checkpoint self-contained: the module's and the DataModule's registered names
# (lit_models.registry), the data's description, where the weights started, and the version that wrote it.
CHECKPOINT_KEY = "lit_models"
# What LightningCLI records beside the arguments of every class it builds: its instantiator and the class's path.
LIGHTNING_INSTANTIATORS = ("pytorch_lightning.cli.instantiate_module", "lightning.pytorch.cli.instantiate_module")
ARGUMENTS = {"model": ("hyper_parameters", MODELS), "data": ("datamodule_hyper_parameters", DATAMODULES)}
# Arguments naming weights to start from: a checkpoint carries its own, so they are neither read nor downloaded.
START_WEIGHTS = ("weights", "weights_backbone")


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's contents (tensors on the CPU), its structure checked; errors name the file and what is
    wrong."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist.")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which, not pickle's internals
        raise DataError(f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {error}).") from None
    if not isinstance(saved, dict) or not isinstance(saved.get(CHECKPOINT_KEY), dict):
        raise DataError(
            f"{path} was not written by lit-models (it has no {CHECKPOINT_KEY!r} entry naming its model and data); "
            "train with lit-models, or load the weights into a module with weights=/weights_backbone=."
        )
    check_contents(saved, path)
    return saved


def check_contents(saved: dict[str, Any], path: Path) -> None:
    """DataError where a part of the checkpoint is not of the kind lit-models writes."""
    entry = saved[CHECKPOINT_KEY]
    if not isinstance(entry.get("model"), str) or not isinstance(entry.get("data") or "", str):
        raise DataError(f"{path}: its {CHECKPOINT_KEY} entry names no model (or data) by name: {entry!r:.200}.")
    if not is_plain(entry):
        raise DataError(f"{path}: its {CHECKPOINT_KEY} entry holds more than names, numbers and text.")
    spec = entry.get("data_spec")
    if spec is not None:
        known = set(DataSpec.__dataclass_fields__)  # later versions' fields are left out, as DataSpec.from_dict does
        checked_arguments(DataSpec, {k: v for k, v in spec.items() if k in known} if isinstance(spec, dict) else spec,
                          f"{path}: data_spec")  # fmt: skip
    names = saved.get("class_names")
    if names is not None and not (isinstance(names, list) and all(type(name) is str for name in names)):
        raise DataError(f"{path}: class_names is not a list of names.")
    state = saved.get("state_dict", {})
    if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) and type(k) is str for k, v in state.items())):
        raise DataError(f"{path}: state_dict is not a mapping of parameter names to tensors.")
    for key, _ in ARGUMENTS.values():
        arguments = saved.get(key) or {}
        if not isinstance(arguments, dict):
            kind = type(arguments).__name__
            raise DataError(f"{path}: {key} is a {kind}, not a mapping of argument names to values.")
        if not is_plain(arguments):
            raise DataError(f"{path}: {key} holds more than names, numbers, text and lists of them.")


def saved_class(saved: dict[str, Any], role: str, path: str | os.PathLike) -> type | None:
    """The registered class the checkpoint names as its ``role`` (``model`` or ``data``; None where it names no
    data), imported only from lit-models' own modules; DataError for any other name."""
    name = saved[CHECKPOINT_KEY].get(role)
    if role == "data" and not name:
        return None
    try:
        return registered_class(name, ARGUMENTS[role][1], f"{path}: the {role}")
    except ValueError as error:
        raise DataError(str(error)) from None


def saved_arguments(saved: dict[str, Any], role: str, cls: type, path: str | os.PathLike) -> dict[str, Any]:
    """The keyword arguments the checkpoint saved for ``cls`` (its ``role``: ``model`` or ``data``), checked
    against ``cls``'s signature and bounds (:mod:`lit_models.saved_arguments`), without LightningCLI's records, and
    with no weights to start from (the checkpoint's own replace them)."""
    key = ARGUMENTS[role][0]
    arguments = dict(saved.get(key) or {})
    instantiator = arguments.pop("_instantiator", None)
    if instantiator is not None and instantiator not in LIGHTNING_INSTANTIATORS:
        raise DataError(f"{path}: {key}['_instantiator'] names {instantiator!r}, not LightningCLI's "
                        f"({LIGHTNING_INSTANTIATORS[0]}): nothing was imported or built.")  # fmt: skip
    class_path = arguments.pop("_class_path", None)
    if class_path is not None:
        try:
            named = registered_class(class_path, ARGUMENTS[role][1], f"{path}: {key}['_class_path']")
        except ValueError as error:
            raise DataError(str(error)) from None
        if named is not cls:
            raise DataError(f"{path}: {key}['_class_path'] names {class_path!r} but the checkpoint's {role} is "
                            f"{cls.__name__}: the file was altered; nothing was built.")  # fmt: skip
    checked = checked_arguments(cls, arguments, f"{path}: {key}")
    return {name: None if name in START_WEIGHTS else value for name, value in checked.items()}
