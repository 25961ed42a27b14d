"""``lit_models.YOLOv1``: the single-shot grid detector on the Detector loop."""

from __future__ import annotations

import inspect
from typing import Any

from lit_models.datamodules.spec import DataSpec
from lit_models.detection.base import Detector
from lit_models.nets.yolo import YOLOv1ClassifierNet, YOLOv1Net
from lit_models.stages import InitError, ParameterMapping, SourceModel


class YOLOv1(Detector):
    """YOLO v1 (Redmon et al. 2016): one network maps the image to an S x S grid of B boxes and C class scores.

    Defaults are the paper's (448 x 448 input, S = 7, B = 2, its 24-layer network with a 4096-wide fully connected
    layer, lambda_coord = 5, lambda_noobj = 0.5). The input size is fixed: on the command line a DetectionDataModule
    without an ``image_size`` of its own takes the model's; from Python set ``data.image_size`` to the same. See
    :mod:`lit_models.nets.yolo` for the loss, the decoding and the deviations.
    """

    def build_net(self, num_classes: int, **net_args: Any) -> YOLOv1Net:
        """``net_args``: :class:`lit_models.nets.yolo.YOLOv1Net`'s arguments."""
        return YOLOv1Net(num_classes, **net_args)

    @classmethod
    def data_arguments(cls, model_args: dict[str, Any], data_args: dict[str, Any]) -> dict[str, Any]:
        """The data resizes to the model's input side when it sets no size of its own (the CLI's default)."""
        found = super().data_arguments(model_args, data_args)
        if "image_size" not in data_args:
            return found
        if data_args["image_size"] is None:
            return {**found, "image_size": model_args["image_size"]}
        check_input_size(model_args["image_size"], data_args["image_size"])
        return found

    def check_data(self, spec: DataSpec) -> None:
        super().check_data(spec)
        check_input_size(self.net.image_size, spec.image_size)

    def init_mapping(self, source: SourceModel) -> ParameterMapping:
        """From YOLO's pre-training classifier (a ``YOLOClassifier`` checkpoint, paper §2.2): its backbone (the first
        20 convolutions) carries over, its average pool and fully connected layer are left out, and the detector's
        4 convolutions (``net.head``) and 2 fully connected layers (``net.fc``) start from their own
        initialisation. From a ``YOLOv1`` checkpoint: every parameter, as it is.

        Raises:
            InitError: Another model, or a classifier built with another backbone than this detector's.
        """
        if source.model == "YOLOv1":
            return super().init_mapping(source)
        if source.model != "YOLOClassifier":
            raise InitError(
                f"YOLOv1 initialises from a YOLOClassifier checkpoint (its pre-training, paper §2.2) or from a YOLOv1 "
                f"checkpoint; {source.describe()} is neither."
            )
        defaults = inspect.signature(YOLOv1ClassifierNet).parameters
        differ = [
            f"{name} {theirs!r} (this detector: {mine!r})"
            for name in BACKBONE_ARGUMENTS
            if (theirs := source.hparams.get(name, defaults[name].default))
            != (mine := self.hparams.get(name, defaults[name].default))
        ]
        if differ:
            raise InitError(
                f"{source.describe()} has another backbone than this detector: {', '.join(differ)}. Give the "
                f"classifier and the detector the same {', '.join(BACKBONE_ARGUMENTS)}."
            )
        return ParameterMapping(sources={"net.classifier.": None}, new=("net.head.", "net.fc."))


# The arguments that shape the backbone a YOLOClassifier hands its detector.
BACKBONE_ARGUMENTS = ("backbone", "width_mult", "batch_norm", "backbone_stride")


def check_input_size(model_size: int, data_size: int | None) -> None:
    if data_size != model_size:
        given = "null (each image keeps its size)" if data_size is None else data_size
        raise ValueError(
            f"data.image_size is {given} but model.image_size is {model_size}: YOLO v1's grid and fully connected "
            f"head take one input size. Set --data.image_size {model_size}, or both to another size."
        )
