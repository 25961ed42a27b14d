"""One prediction record per input, made once by its family's ``predict_step``, and the loop that makes them for
``module.predict``.

``predict_step`` of every family returns a list of these records, one per input of the batch, in order. The
writers of ``lit-models predict`` (:mod:`lit_models.writers`), ``module.predict`` and the pictures consume them;
nothing reshapes a prediction a second time. A record reads as a dataclass (``record.classes``) or, for
scripts, by key (``record["classes"]``); :meth:`Prediction.as_json` gives the plain values a JSON file holds.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

if TYPE_CHECKING:
    from lit_models.task import TaskModule


@dataclass
class Prediction:
    """What every record holds.

    Attributes:
        path: The file the input came from ("" for an image in memory, a prompt or an array row).
        name: The name its outputs are written under: the file's path below the input folder without its suffix
            (``street/0001``), a sequence's index, or the input's position.
        index: A sequence's row in its array file (None for other inputs).
    """

    path: str = ""
    name: str = ""
    index: int | None = None

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def keys(self) -> list[str]:
        return [item.name for item in dataclasses.fields(self)]

    def as_json(self) -> dict[str, Any]:
        """Plain numbers and lists: tensors become (rounded) lists."""
        return {key: plain(getattr(self, key)) for key in self.keys()}


def plain(value: Any) -> Any:
    if isinstance(value, Tensor):
        value = value.tolist()
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


@dataclass
class ClassPrediction(Prediction):
    """An image's or a sequence's most likely classes.

    Attributes:
        classes: The top-k class names, most likely first.
        indices: Their class indices.
        probs: Their softmax probabilities.
    """

    classes: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)


@dataclass
class MaskPrediction(Prediction):
    """A segmentation.

    Attributes:
        mask: H x W uint8 class indices at the image's own size (the data's resize undone, padding cropped).
    """

    mask: Tensor | None = None


@dataclass
class BoxPrediction(Prediction):
    """An image's detections, highest score first.

    Attributes:
        boxes: R x 4 xyxy in the pixels of the image as given (the data's resize undone).
        scores: R scores.
        labels: R class indices (1..K; 0 is the background).
        names: R class names.
    """

    boxes: Tensor | None = None
    scores: Tensor | None = None
    labels: Tensor | None = None
    names: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """Each detection as ``{"label", "label_index", "score", "box"}``, as detections.json lists them."""
        detections = [
            {"label": name, "label_index": label, "score": round(score, 5), "box": [round(v, 2) for v in box]}
            for box, score, label, name in zip(
                self.boxes.tolist(), self.scores.tolist(), self.labels.tolist(), self.names, strict=True
            )
        ]
        return {"path": self.path, "name": self.name, "detections": detections}


@dataclass
class TextPrediction(Prediction):
    """A language model's continuation of a prompt.

    Attributes:
        prompt: The prompt as given.
        generated: The text generated after it.
    """

    prompt: str = ""
    generated: str = ""


@dataclass
class ValuesPrediction(Prediction):
    """A regression's outputs.

    Attributes:
        values: One value per target.
        targets: The targets' names, in the same order.
    """

    values: list[float] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- the loop


def preprocessing(module: TaskModule) -> Any:
    """The evaluation transform of the data the module was trained on, from any image (RGBA, grayscale, palette)."""
    if module.data_spec is None:
        raise ValueError(f"{type(module).__name__} has not met its data yet: fit it, or load a checkpoint.")
    transform = module.data_spec.preprocess()
    return lambda image: transform(rgb(image))


def rgb(image: Any) -> Any:
    """A PIL image in RGB; a C x H x W tensor with 3 channels (alpha dropped, grey repeated)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor) and image.dim() == 3 and image.shape[0] != 3:
        return image[:3] if image.shape[0] == 4 else image[:1].expand(3, -1, -1)
    return image


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
            images.append(rgb(item))
        elif isinstance(item, torch.Tensor) and item.dim() == 3:
            images.append(TF.to_pil_image(rgb(item).cpu()))
        else:
            raise TypeError(
                f"predict takes image files, folders, glob patterns, PIL images or C x H x W / N x C x H x W image "
                f"tensors (uint8, or floats in [0, 1]), or a list of them; got {type(item).__name__}."
            )
    if files and images:
        raise TypeError("predict takes files or images in memory, not both in one call.")
    return files, images


@contextmanager
def start_up_lines_hidden():
    """Without Lightning's start-up lines (accelerators found, tips): a prediction is one call, not a run."""
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_prediction(
    module: TaskModule, inputs: Any, batch_size: int | None = None, callbacks: list | None = None
) -> list[Prediction]:
    """Lightning's predict loop over ``inputs``, served by the module's ``prediction_source`` through its evaluation
    preprocessing; the records, one per input (none when a writer callback consumes them)."""
    source = module.prediction_source
    if source is None or module.data_spec is None:
        raise ValueError(
            f"{type(module).__name__} has no data to predict through: use it after fit, or load a checkpoint "
            "with lit_models.load."
        )
    images: list[Image.Image] = []
    if module.data_spec.inputs == "images":
        files, images = pictures(inputs)
        inputs = files or None
    data = source.prediction_data(inputs, batch_size)
    module.use_data(data.spec)  # e.g. sequences of another width than the model reads: said before any work
    keep = not callbacks
    with start_up_lines_hidden():
        trainer = pl.Trainer(
            accelerator="gpu" if module.device.type == "cuda" else "cpu",
            devices=1,
            logger=False,
            callbacks=callbacks or [],
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
        )
        if images:  # in memory: no file can fail to decode, so the DataModule's batch checks are not needed
            loader = DataLoader(data.images_dataset(images), batch_size=batch_size or 8, collate_fn=data.collate_fn)
            found = trainer.predict(module, dataloaders=loader, return_predictions=keep)
        else:
            found = trainer.predict(module, datamodule=data, return_predictions=keep)
    return [record for batch in found or [] for record in batch]


def predict(module: TaskModule, inputs: Any, batch_size: int = 8) -> list[Prediction]:
    """The family's record for each input, through the preprocessing of the data the module was trained on.

    Args:
        module: From :func:`load`, or straight after ``fit``.
        inputs: Images: an image file, a folder (searched at any depth), a glob pattern, a PIL image, a C x H x W
            image tensor (uint8, or floats in [0, 1], as torchvision's ``to_pil_image`` reads it), an N x C x H x W
            batch of them, or a list of any of these. Language models: a prompt, a list of prompts, or text files
            whose lines are prompts. Sequence classifiers and regressors: array files.
        batch_size: Inputs per forward pass.

    Returns:
        One record per input, in order (:mod:`lit_models.predictions`): classification ``ClassPrediction`` (top-5
        ``classes``, ``indices``, ``probs``); segmentation ``MaskPrediction`` (``mask``: H x W class indices at the
        image's own size); detection ``BoxPrediction`` (``boxes`` xyxy in the image's own pixels, ``scores``,
        ``labels``, ``names``); language model ``TextPrediction`` (``prompt``, ``generated``); regression
        ``ValuesPrediction``. Each also reads by key: ``record["classes"]``.
    """
    if module.data_spec is None or module.data_spec.inputs != "images" or not isinstance(inputs, (list, tuple)):
        return run_prediction(module, inputs, batch_size)
    # Files and images in memory may come mixed: each run of one kind is served by its own loader, in order.
    records = []
    for _, group in itertools.groupby(inputs, key=lambda item: isinstance(item, (str, os.PathLike))):
        records += run_prediction(module, list(group), batch_size)
    return records
