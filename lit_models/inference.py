"""Predict from a checkpoint alone, on another machine, without the training config or its data, and predict with
a module just trained.

Every checkpoint lit-models writes carries, beside the weights and the module's arguments, the module's and the
DataModule's registered names and the data's description (``checkpoint["lit_models"]``: :class:`DataSpec`), the
DataModule's arguments (Lightning's ``datamodule_hyper_parameters``) and the class names. :func:`load` rebuilds the
module and, from the DataModule's arguments, a predict-only DataModule (``module.prediction_source``) that serves
new inputs through the same evaluation preprocessing; ``module.predict`` and :func:`predict_files` run them through
a Trainer, as ``lit-models predict CHECKPOINT INPUTS`` does.

A checkpoint is data (docs/cli.md, "What a checkpoint may build"): only lit-models' classes and those of your own
passed to :func:`register` are built from it, from arguments checked against their signatures, within a memory
budget the file's own tensors set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lit_models import registry
from lit_models.build_budget import AllocationBudget, BudgetExceeded
from lit_models.checkpoint_file import read_checkpoint, saved_arguments, saved_class
from lit_models.datamodules.base import SplitDataModule
from lit_models.datamodules.files import DataError
from lit_models.errors import CommandParser
from lit_models.predictions import run_prediction
from lit_models.task import TaskModule

# What building a module may allocate beyond the tensors its checkpoint holds: metric states, buffers, temporaries.
BUILD_ALLOWANCE = 256 * 2**20


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def register(cls: type) -> type:
    """Let checkpoints build ``cls``, a module (a ``TaskModule`` subclass) or DataModule (a ``SplitDataModule``
    subclass) of your own: :func:`load`, ``lit-models predict`` and every command that opens a checkpoint build
    only lit-models' classes and those registered in this process before the checkpoint is opened. A checkpoint
    names its classes by their short name, so that name must be free. Usable as a class decorator; returns ``cls``.

    Raises:
        TypeError: ``cls`` is neither, or another class of the same name is already known.
    """
    if not (isinstance(cls, type) and issubclass(cls, (TaskModule, SplitDataModule))):
        raise TypeError(f"register takes a subclass of lit-models' TaskModule or SplitDataModule, not {cls!r}.")
    name = cls.__name__
    table = registry.REGISTERED_MODELS if issubclass(cls, TaskModule) else registry.REGISTERED_DATAMODULES
    if name in registry.MODELS or name in registry.DATAMODULES or table.get(name, cls) is not cls:
        raise TypeError(f"a class named {name!r} is already known; give {cls.__module__}.{name} another name.")
    table[name] = cls
    return cls


def build_module(checkpoint: str | os.PathLike, saved: dict[str, Any], **overrides: Any) -> TaskModule:
    """The module the checkpoint ``saved`` (read from ``checkpoint``) holds, on the CPU, its weights loaded; its
    class must be registered, its arguments fit its signature and bounds, and building it may allocate no more than
    its file's tensors and :data:`BUILD_ALLOWANCE`. ``overrides``: arguments to change (a test's protocol)."""
    module_class = saved_class(saved, "model", checkpoint)
    arguments = {**saved_arguments(saved, "model", module_class, checkpoint), **overrides}
    names = saved.get("class_names")
    if names is not None and arguments.get("num_classes", len(names)) != len(names):
        raise DataError(f"{checkpoint}: hyper_parameters: num_classes is {arguments['num_classes']} but class_names "
                        f"has {len(names)} names; the file was altered.")  # fmt: skip
    state = saved.get("state_dict", {})
    budget = sum(tensor.numel() * tensor.element_size() for tensor in state.values()) + BUILD_ALLOWANCE
    try:
        with AllocationBudget(budget):
            module = module_class(**arguments)
    except BudgetExceeded as error:
        sizes = ", ".join(f"{key}={value}" for key, value in arguments.items() if type(value) in (int, float))
        raise DataError(f"{checkpoint}: its hyper_parameters make a {module_class.__name__} far larger than the "
                        f"weights the file holds ({error}; {sizes}); nothing was built.") from None  # fmt: skip
    module.on_load_checkpoint(saved)
    try:
        module.load_state_dict(state)
    except RuntimeError as error:  # shapes or names the arguments do not make
        raise DataError(f"{checkpoint}: its weights do not fit the {module_class.__name__} its hyper_parameters "
                        f"describe: {str(error).strip()[:600]}") from None  # fmt: skip
    return module


def build_datamodule(
    checkpoint: str | os.PathLike, saved: dict[str, Any], **overrides: Any
) -> tuple[type | None, dict[str, Any]]:
    """The class of the checkpoint's DataModule and its checked arguments with ``overrides``; (None, {}) where it
    names none."""
    data_class = saved_class(saved, "data", checkpoint)
    if data_class is None:
        return None, {}
    return data_class, {**saved_arguments(saved, "data", data_class, checkpoint), **overrides}


def load(checkpoint: str | os.PathLike, device: str | torch.device | None = None) -> TaskModule:
    """Load any lit-models checkpoint, ready to use: the module in eval mode on ``device`` (default: a GPU where
    there is one, else the CPU), its class names and data description set. The plain-torch network is
    ``module.net``; the evaluation preprocessing of its data is ``module.preprocess``, and :meth:`predict` runs both
    on files, images or tensors.

    Args:
        checkpoint: A ``.ckpt`` file written by lit-models (``best-*.ckpt``, ``last.ckpt``), anywhere. A class of
            your own in it is built once passed to :func:`register`.
        device: Where the module runs.

    Raises:
        DataError: The file is no lit-models checkpoint, or names a class or arguments lit-models does not build.
    """
    saved = read_checkpoint(checkpoint)
    module = build_module(checkpoint, saved)
    data_class, arguments = build_datamodule(checkpoint, saved)
    if data_class is not None:
        module.prediction_source = data_class.from_checkpoint(arguments, module.class_names or [])
        if module.data_spec is None:  # written before checkpoints carried the data's description
            module.data_spec = module.prediction_source.spec
    device = torch.device(device) if device is not None else default_device()
    return module.eval().to(device)


def predict_files(
    checkpoint: str | os.PathLike,
    inputs: str | list[str],
    output: str | os.PathLike,
    overwrite: bool = False,
    draw_score: float | None = None,
    **generation: float | int,
) -> Path:
    """Predict on ``inputs`` with a checkpoint alone; write what the family's writer writes into ``output``
    (a folder, created) and return where it went. ``generation`` overrides a language model's sampling settings
    saved in the checkpoint (``temperature``, ``generate_length``)."""
    module = load(checkpoint)
    if generation:
        module.set_generation(**generation)
    writer_class = module.prediction_writer
    target = Path(output) / writer_class.default_name
    options = {} if draw_score is None else {"draw_score": draw_score}
    writer = writer_class(output=str(target), overwrite=overwrite, **options)
    run_prediction(module, inputs, callbacks=[writer])
    return target


def main(argv: list[str]) -> None:
    """``lit-models predict CHECKPOINT INPUT [INPUT ...] [--output DIR] [--overwrite]``."""
    parser = CommandParser(
        prog="lit-models predict",
        description="Predict with a lit-models checkpoint alone (no config, no training data): the checkpoint "
        "carries the model, its classes and its data's evaluation preprocessing.",
    )
    parser.add_argument("checkpoint", help="a .ckpt file written by lit-models")
    parser.add_argument(
        "inputs",
        nargs="+",
        help="images: files, folders (searched at any depth) or glob patterns; language models: prompts, or text "
        "files whose lines are prompts; sequence classifiers: .npz array files",
    )
    parser.add_argument("--output", default="predictions", help="folder to write into (default: ./predictions)")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier predictions in --output")
    parser.add_argument(
        "--temperature", type=float, help="language models: sampling temperature (0: always the likeliest token)"
    )
    parser.add_argument("--generate_length", type=int, help="language models: tokens generated after each prompt")
    parser.add_argument(
        "--draw_score", type=float, help="detectors: the lowest score drawn on the images (default: the model's, 0.3)"
    )
    args = parser.parse_args(argv)
    if args.temperature is not None and args.temperature < 0:
        parser.error(f"--temperature must be >= 0, got {args.temperature}")
    if args.generate_length is not None and args.generate_length < 1:
        parser.error(f"--generate_length must be >= 1, got {args.generate_length}")
    generation = {name: getattr(args, name) for name in ("temperature", "generate_length")}
    generation = {name: value for name, value in generation.items() if value is not None}
    target = predict_files(args.checkpoint, args.inputs, args.output, args.overwrite, args.draw_score, **generation)
    print(f"predictions of {args.checkpoint} written to {target}")
