"""Predict from a checkpoint alone, on another machine, without the training config or its data.

Every checkpoint lit-models writes carries, beside the weights and the module's arguments, the module's and the
DataModule's class paths (``checkpoint["lit_models"]``), the DataModule's arguments (Lightning's
``datamodule_hyper_parameters``: sizes, normalisation, resize rule) and the class names. :func:`load` rebuilds the
module from them; :func:`prediction_data` the DataModule, serving only the files asked for through the same
evaluation preprocessing; :func:`predict_files` runs both with the family's prediction writer, as
``lit-models predict CHECKPOINT INPUTS`` does.
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.apply_func import move_data_to_device
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from lit_models.datamodules.files import DataError

CHECKPOINT_KEY = "lit_models"


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


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


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load(checkpoint: str | os.PathLike, device: str | torch.device | None = None) -> pl.LightningModule:
    """Load any lit-models checkpoint, ready to use: the module in eval mode on ``device`` (default: a GPU where
    there is one, else the CPU), its class names set. The plain-torch network is ``module.net``; the evaluation
    preprocessing of its data is ``module.preprocess``, and :meth:`predict` runs both on files, images or tensors.

    Args:
        checkpoint: A ``.ckpt`` file written by lit-models (``best-*.ckpt``, ``last.ckpt``), anywhere.
        device: Where the module runs.
    """
    saved = read_checkpoint(checkpoint)
    info = saved[CHECKPOINT_KEY]
    module_class = import_class(info["model"])
    device = torch.device(device) if device is not None else default_device()
    module = module_class.load_from_checkpoint(checkpoint, map_location=device, weights_only=True)
    module.inference_data = (info.get("data"), dict(saved.get("datamodule_hyper_parameters") or {}))
    return module.eval().to(device)


def prediction_data(module: pl.LightningModule, inputs: Any, batch_size: int | None = None) -> pl.LightningDataModule:
    """The DataModule the module was trained with, rebuilt from its saved arguments by its ``for_prediction`` to
    serve only ``inputs`` to ``predict`` (images: files, folders, glob patterns; text: prompts), through the same
    evaluation preprocessing, without the training data."""
    data_path, hparams = getattr(module, "inference_data", (None, {}))
    if data_path is None:
        raise DataError(f"{type(module).__name__} was not loaded by lit_models.load: its data is unknown.")
    data_class = import_class(data_path)
    if not hasattr(data_class, "for_prediction"):
        raise DataError(f"predicting from a checkpoint alone is not available for {data_class.__name__} yet.")
    if batch_size is not None:
        hparams = {**hparams, "batch_size": batch_size, "eval_batch_size": batch_size}
    data = data_class.for_prediction(hparams, inputs, module.class_names or [])
    if inputs is not None:
        module.check_data(data)  # e.g. sequences of another width than the model reads: said before any work
    return data


def pictures(inputs: Any) -> tuple[list[str], list[Image.Image]]:
    """Split what :func:`predict` was given into file inputs (paths, folders, patterns) and images in memory."""
    items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if isinstance(inputs, torch.Tensor) and inputs.dim() == 4:  # N x C x H x W
        items = list(inputs)
    files, images = [], []
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            files.append(str(item))
        elif isinstance(item, Image.Image):
            images.append(item)
        elif isinstance(item, torch.Tensor) and item.dim() == 3:
            images.append(TF.to_pil_image(item.cpu()))
        else:
            raise TypeError(
                f"predict takes image files, folders, glob patterns, PIL images or C x H x W / N x C x H x W image "
                f"tensors (uint8, or floats in [0, 1]), or a list of them; got {type(item).__name__}."
            )
    if files and images:
        raise TypeError("predict takes files or images in memory, not both in one call.")
    return files, images


def predict(module: pl.LightningModule, inputs: Any, batch_size: int = 8) -> list[dict[str, Any]]:
    """The family's result for each input, through the preprocessing of the data the module was trained on.

    Args:
        module: From :func:`load`.
        inputs: Images: an image file, a folder (searched at any depth), a glob pattern, a PIL image, a C x H x W
            image tensor (uint8, or floats in [0, 1], as torchvision's ``to_pil_image`` reads it), an N x C x H x W
            batch of them, or a list of any of these. Language models: a prompt, a list of prompts, or text files
            whose lines are prompts.
        batch_size: Images per forward pass.

    Returns:
        One dict per input, in order: classification ``{"path", "classes", "indices", "probs"}`` (top-5);
        segmentation ``{"path", "name", "mask"}`` (H x W class indices at the image's own size); detection
        ``{"path", "name", "boxes", "scores", "labels", "names"}`` (xyxy boxes in the image's own pixels);
        language model ``{"prompt", "generated"}`` (text).
    """
    if hasattr(import_class(module.inference_data[0]), "images_dataset"):
        files, images = pictures(inputs)
        data = prediction_data(module, files or None, batch_size)
        if images:
            loader = DataLoader(data.images_dataset(images), batch_size, collate_fn=data.collate_fn)
    else:
        data, images = prediction_data(module, inputs, batch_size), None
    if not images:
        data.prepare_data()  # e.g. the region proposals of new images, for R-CNN, SPPNet and Fast R-CNN
        data.setup("predict")
        loader = data.predict_dataloader()
    transfer = getattr(data, "on_before_batch_transfer", lambda batch, index: batch)
    results = []
    with torch.inference_mode():
        for index, batch in enumerate(loader):
            batch = move_data_to_device(transfer(batch, 0), module.device)
            results.extend(module.prediction_results(module.predict_step(batch, index), data))
    return results


def predict_files(
    checkpoint: str | os.PathLike,
    inputs: str | list[str],
    output: str | os.PathLike,
    overwrite: bool = False,
    **generation: float | int,
) -> Path:
    """Predict on ``inputs`` with a checkpoint alone; write what the family's writer writes into ``output``
    (a folder, created) and return where it went. ``generation`` overrides a language model's sampling settings
    saved in the checkpoint (``temperature``, ``generate_length``)."""
    module = load(checkpoint)
    for name, value in generation.items():
        if getattr(module, "task", None) != "language_model":
            raise ValueError(f"{checkpoint} holds a {type(module).__name__}; --{name} is for language models only")
        setattr(module, name, value)
    data = prediction_data(module, inputs)
    writer_class = module.prediction_writer
    target = Path(output) / writer_class.default_name
    writer = writer_class(output=str(target), overwrite=overwrite)
    trainer = pl.Trainer(
        accelerator="gpu" if module.device.type == "cuda" else "cpu",
        devices=1,
        logger=False,
        callbacks=[writer],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.predict(module, datamodule=data, return_predictions=False)
    return target


def main(argv: list[str]) -> None:
    """``lit-models predict CHECKPOINT INPUT [INPUT ...] [--output DIR] [--overwrite]``."""
    parser = argparse.ArgumentParser(
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
    args = parser.parse_args(argv)
    if args.temperature is not None and args.temperature < 0:
        parser.error(f"--temperature must be >= 0, got {args.temperature}")
    if args.generate_length is not None and args.generate_length < 1:
        parser.error(f"--generate_length must be >= 1, got {args.generate_length}")
    generation = {name: getattr(args, name) for name in ("temperature", "generate_length")}
    generation = {name: value for name, value in generation.items() if value is not None}
    target = predict_files(args.checkpoint, args.inputs, args.output, args.overwrite, **generation)
    print(f"predictions of {args.checkpoint} written to {target}")
