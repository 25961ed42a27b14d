"""The one list of the classes lit-models provides, by the names users type, and where each lives.

The package's lazy exports (``lit_models.ResNet``), the CLI's short names (``--model ResNet``), the checkpoint
loader and the tests all read these tables. A checkpoint names its module and DataModule; only names listed here
are imported from it, so a file from elsewhere never decides which code runs.
"""

from __future__ import annotations

import importlib

# Architecture modules by family base: name -> the module defining it.
MODELS = {
    "AlexNet": "lit_models.classification",
    "VGG": "lit_models.classification",
    "GoogLeNet": "lit_models.classification",
    "ResNet": "lit_models.classification",
    "DenseNet": "lit_models.classification",
    "YOLOClassifier": "lit_models.classification",
    "FCN": "lit_models.segmentation",
    "RCNN": "lit_models.detection",
    "SPPNet": "lit_models.detection",
    "FastRCNN": "lit_models.detection",
    "FasterRCNN": "lit_models.detection",
    "YOLOv1": "lit_models.detection",
    "Markov": "lit_models.sequence",
    "RNN": "lit_models.sequence",
    "LSTM": "lit_models.sequence",
    "GRU": "lit_models.sequence",
}
FAMILY_BASES = {
    "ImageClassifier": "lit_models.classification",
    "Segmenter": "lit_models.segmentation",
    "Detector": "lit_models.detection",
    "SequenceModule": "lit_models.sequence",
}
DATAMODULES = {
    "ImageFolderDataModule": "lit_models.datamodules.image_folder",
    "SegmentationDataModule": "lit_models.datamodules.segmentation",
    "DetectionDataModule": "lit_models.datamodules.detection",
    "ArrayDataModule": "lit_models.datamodules.array",
    "MNIST1DDataModule": "lit_models.datamodules.mnist1d",
    "AddingProblemDataModule": "lit_models.datamodules.adding",
    "TextDataModule": "lit_models.datamodules.text",
}
# Everything else ``import lit_models`` offers by name.
OTHERS = {
    "load": "lit_models.inference",
    "recipe": "lit_models.cli",
    "DataError": "lit_models.datamodules.files",
    "DataSpec": "lit_models.datamodules.spec",
    "TrainingPictures": "lit_models.pictures",
}
EXPORTS = {**FAMILY_BASES, **MODELS, **DATAMODULES, **OTHERS}


def lookup(name: str) -> object:
    """The object ``lit_models.<name>`` names (imported on first use)."""
    return getattr(importlib.import_module(EXPORTS[name]), name)


def registered_class(path: str, table: dict[str, str], what: str) -> type:
    """The class a checkpoint names (``ResNet``, or a full path such as ``lit_models.classification.ResNet`` as
    older checkpoints write it), if lit-models provides it; ValueError otherwise, without importing anything."""
    name = path.rpartition(".")[2]
    if name not in table:
        raise ValueError(f"{what} {path!r} is not one of lit-models' ({', '.join(sorted(table))}).")
    return getattr(importlib.import_module(table[name]), name)


def import_all() -> None:
    """Import every module and DataModule, so LightningCLI knows their short names (``--model ResNet``)."""
    for module in sorted(set(MODELS.values()) | set(DATAMODULES.values())):
        importlib.import_module(module)
