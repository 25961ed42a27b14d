"""Predict from a checkpoint alone, on another machine, without the training config or its data, and predict with
a module just trained.

Every checkpoint lit-models writes carries, beside the weights and the module's arguments, the module's and the
DataModule's registered names and the data's description (``checkpoint["lit_models"]``: :class:`DataSpec`), the
DataModule's arguments (Lightning's ``datamodule_hyper_parameters``) and the class names. :func:`load` rebuilds the
module and, from the DataModule's arguments, a predict-only DataModule (``module.prediction_source``) that serves
new inputs through the same evaluation preprocessing; ``module.predict`` and :func:`predict_files` run them through
a Trainer, as ``lit-models predict CHECKPOINT INPUTS`` does.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lit_models.checkpoint_file import CHECKPOINT_KEY, read_checkpoint
from lit_models.datamodules.files import DataError
from lit_models.errors import CommandParser
from lit_models.predictions import run_prediction
from lit_models.registry import DATAMODULES, MODELS, registered_class
from lit_models.task import TaskModule


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load(checkpoint: str | os.PathLike, device: str | torch.device | None = None) -> TaskModule:
    """Load any lit-models checkpoint, ready to use: the module in eval mode on ``device`` (default: a GPU where
    there is one, else the CPU), its class names and data description set. The plain-torch network is
    ``module.net``; the evaluation preprocessing of its data is ``module.preprocess``, and :meth:`predict` runs both
    on files, images or tensors.

    Args:
        checkpoint: A ``.ckpt`` file written by lit-models (``best-*.ckpt``, ``last.ckpt``), anywhere.
        device: Where the module runs.
    """
    saved = read_checkpoint(checkpoint)
    info = saved[CHECKPOINT_KEY]
    try:
        module_class = registered_class(info["model"], MODELS, f"{checkpoint} holds the model")
        data_class = registered_class(info["data"], DATAMODULES, f"{checkpoint} holds the data") if info.get(
            "data") else None  # fmt: skip
    except ValueError as error:
        raise DataError(str(error)) from None
    device = torch.device(device) if device is not None else default_device()
    module = module_class.load_from_checkpoint(checkpoint, map_location=device, weights_only=True)
    if data_class is not None:
        hparams = dict(saved.get("datamodule_hyper_parameters") or {})
        module.prediction_source = data_class.from_checkpoint(hparams, module.class_names or [])
        if module.data_spec is None:  # written before checkpoints carried the data's description
            module.data_spec = module.prediction_source.spec
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
