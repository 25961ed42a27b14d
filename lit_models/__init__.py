"""lit-models: Lightning 2.x modules and DataModules for the classic architectures of deep learning.

The names below import lazily, so ``from lit_models.nets.resnet import ResNet`` never imports Lightning; the
static imports under TYPE_CHECKING show them to editors and type checkers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names as _EXPORTS (a test checks), each ``X as X``: a re-export
    from lit_models.classification import VGG as VGG
    from lit_models.classification import AlexNet as AlexNet
    from lit_models.classification import DenseNet as DenseNet
    from lit_models.classification import GoogLeNet as GoogLeNet
    from lit_models.classification import ImageClassifier as ImageClassifier
    from lit_models.classification import ResNet as ResNet
    from lit_models.datamodules.detection import DetectionDataModule as DetectionDataModule
    from lit_models.datamodules.image_folder import ImageFolderDataModule as ImageFolderDataModule
    from lit_models.datamodules.segmentation import SegmentationDataModule as SegmentationDataModule
    from lit_models.datamodules.sequence import AddingProblemDataModule as AddingProblemDataModule
    from lit_models.datamodules.sequence import ArrayDataModule as ArrayDataModule
    from lit_models.datamodules.sequence import MNIST1DDataModule as MNIST1DDataModule
    from lit_models.datamodules.sequence import TextDataModule as TextDataModule
    from lit_models.detection import RCNN as RCNN
    from lit_models.detection import Detector as Detector
    from lit_models.detection import FasterRCNN as FasterRCNN
    from lit_models.detection import FastRCNN as FastRCNN
    from lit_models.detection import SPPNet as SPPNet
    from lit_models.detection import YOLOv1 as YOLOv1
    from lit_models.inference import load as load
    from lit_models.pictures import TrainingPictures as TrainingPictures
    from lit_models.segmentation import FCN as FCN
    from lit_models.segmentation import Segmenter as Segmenter
    from lit_models.sequence import GRU as GRU
    from lit_models.sequence import LSTM as LSTM
    from lit_models.sequence import RNN as RNN
    from lit_models.sequence import Markov as Markov
    from lit_models.sequence import SequenceModule as SequenceModule

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
    "load": "lit_models.inference",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lit_models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
