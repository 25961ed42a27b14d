"""lit-models: Lightning 2.x modules and DataModules for the classic architectures of deep learning.

The names below import lazily, so ``from lit_models.nets.resnet import ResNet`` never imports Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ImageClassifier": "lit_models.classification",
    "AlexNet": "lit_models.classification",
    "VGG": "lit_models.classification",
    "GoogLeNet": "lit_models.classification",
    "ResNet": "lit_models.classification",
    "DenseNet": "lit_models.classification",
    "Segmenter": "lit_models.segmentation",
    "FCN": "lit_models.segmentation",
    "Detector": "lit_models.detection",
    "RCNN": "lit_models.detection",
    "SPPNet": "lit_models.detection",
    "FastRCNN": "lit_models.detection",
    "FasterRCNN": "lit_models.detection",
    "YOLOv1": "lit_models.detection",
    "SequenceModule": "lit_models.sequence",
    "Markov": "lit_models.sequence",
    "RNN": "lit_models.sequence",
    "LSTM": "lit_models.sequence",
    "GRU": "lit_models.sequence",
    "ImageFolderDataModule": "lit_models.datamodules.image_folder",
    "SegmentationDataModule": "lit_models.datamodules.segmentation",
    "DetectionDataModule": "lit_models.datamodules.detection",
    "TextDataModule": "lit_models.datamodules.sequence",
    "ArrayDataModule": "lit_models.datamodules.sequence",
    "MNIST1DDataModule": "lit_models.datamodules.sequence",
    "AddingProblemDataModule": "lit_models.datamodules.sequence",
    "TrainingPictures": "lit_models.pictures",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lit_models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
