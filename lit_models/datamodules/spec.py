"""What a DataModule tells the model about its data, once: :class:`DataSpec`.

Every DataModule exposes ``spec`` right after ``__init__`` (a cheap listing at most, no decoding). The model keeps
it (``TaskModule.data_spec``, taken in ``setup``), every checkpoint carries it (``checkpoint["lit_models"]
["data_spec"]``, primitive values only), and export, summary, the training pictures and prediction read it. Nothing
outside ``lit_models/datamodules`` reads a DataModule's hyperparameters: what they need is here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Task = Literal["classification", "segmentation", "detection", "language_model", "regression"]
Inputs = Literal["images", "features", "tokens"]
# How evaluation images reach the network: "center_crop" (shorter side to image_size x 256/224, then the central
# image_size square: the ImageNet single-crop protocol), "resize" (to image_size x image_size), "keep" (each image
# at its own size; image_size is then a typical input, the training crop).
Resize = Literal["center_crop", "resize", "keep"]


@dataclass(frozen=True)
class DataSpec:
    """The data as the model sees it.

    Attributes:
        task: What is predicted: "classification" (one class per image or sequence), "segmentation" (one per
            pixel), "detection" (boxes), "language_model" (the next token), "regression" (real targets).
        inputs: "images" (N x 3 x H x W), "features" (N x T x input_size floats) or "tokens" (N x T ids).
        class_names: Class names in label order (detection and segmentation: background first); a language
            model's vocabulary; a regression's target names. ``num_classes`` is their number.
        image_size: Images: the side of the square the network sees (see ``resize``); None where images keep
            their size and no typical side is known.
        resize: Images: the evaluation resize rule (``Resize``).
        mean: Images: per-channel normalisation mean (pixels in [0, 1]).
        std: Images: per-channel normalisation standard deviation.
        input_size: Features per step of ``features`` inputs.
        seq_len: Steps per sequence, where every sequence has the same number (a typical length otherwise).
        proposals: Detection: the region-proposal method whose boxes come with every batch ("fast", "quality"), or
            None where the data serves none.
        level: Tokens: "char" (the vocabulary holds characters) or "word" (words, "<eos>" ending a line).
        resize_size: Images, "center_crop": the shorter side before the central crop; None: image_size x 256/224
            (torchvision's ResNet-50 V2 weights: 232 for 224).
    """

    task: Task
    inputs: Inputs
    class_names: tuple[str, ...]
    image_size: int | None = None
    resize: Resize = "resize"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: int | None = None
    seq_len: int | None = None
    proposals: str | None = None
    level: Literal["char", "word"] | None = None
    resize_size: int | None = None

    def __post_init__(self) -> None:
        # Lists from YAML or a checkpoint become tuples, so specs compare and hash by value.
        object.__setattr__(self, "class_names", tuple(str(name) for name in self.class_names))
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """Primitive values only (lists, not tuples), so a checkpoint holding it loads with weights_only=True."""
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> DataSpec:
        """The spec saved by :meth:`to_dict`; keys this version does not know are left out."""
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in saved.items() if key in known})

    def decode(self, ids: list[int]) -> str:
        """The text of token ids: characters joined, or words joined by spaces with "<eos>" as a line break."""
        tokens = [self.class_names[i] for i in ids]
        if self.level != "word":
            return "".join(tokens)
        lines: list[list[str]] = [[]]
        for token in tokens:
            if token == "<eos>":
                lines.append([])
            else:
                lines[-1].append(token)
        return "\n".join(" ".join(line) for line in lines)

    def example_input(self, batch: int = 2, steps: int = 16) -> Any:
        """A random input of the shape the network takes (images, features or token ids), for export and summary;
        ``steps``: sequence length where the data has none of its own."""
        import torch

        if self.inputs == "images":
            side = self.image_size or 224
            return torch.randn(batch, 3, side, side)
        steps = self.seq_len or steps
        if self.inputs == "tokens":
            return torch.randint(0, max(1, self.num_classes), (batch, steps))
        return torch.randn(batch, steps, self.input_size or 1)

    def preprocess(self) -> Callable[[Any], Any]:
        """The evaluation transform of image inputs: a PIL image, or a C x H x W uint8 tensor, to the network's
        normalised 3 x H x W float input, by ``resize``, ``image_size``, ``mean`` and ``std``."""
        if self.inputs != "images":
            raise ValueError(f"data of {self.inputs} has no image preprocessing")
        from lit_models.datamodules.transforms import evaluation_transform

        return evaluation_transform(self.resize, self.image_size, self.mean, self.std, self.resize_size)
