"""The one list of the classes lit-models provides, by the names users type, and where each lives.

The package's lazy exports (``lit_models.ResNet``), the CLI's short names (``--model ResNet``), the checkpoint
loader and the tests all read these tables. A checkpoint names its module and DataModule; only names listed here
are imported from it, so a file from elsewhere never decides which code runs; your own classes join them through
``lit_models.register``.
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
    "register": "lit_models.inference",
    "recipe": "lit_models.cli",
    "DataError": "lit_models.datamodules.files",
    "DataSpec": "lit_models.datamodules.spec",
    "TrainingPictures": "lit_models.pictures",
}
EXPORTS = {**FAMILY_BASES, **MODELS, **DATAMODULES, **OTHERS}


def lookup(name: str) -> object:
    """The object ``lit_models.<name>`` names (imported on first use)."""
    return getattr(importlib.import_module(EXPORTS[name]), name)


# Classes of your own that checkpoints may build (``lit_models.register``), by name, apart from lit-models' own.
REGISTERED_MODELS: dict[str, type] = {}
REGISTERED_DATAMODULES: dict[str, type] = {}


def registered_class(path: object, table: dict[str, str], what: str) -> type:
    """The class a checkpoint names (``ResNet``, or a full path such as ``lit_models.classification.ResNet`` as
    older checkpoints write it), if lit-models provides it or it was registered (``lit_models.register``); ValueError
    otherwise, starting with ``what`` (the model, and where it is named), without importing anything but
    lit-models' own module of that class."""
    own = REGISTERED_MODELS if table is MODELS else REGISTERED_DATAMODULES
    module, _, name = path.rpartition(".") if isinstance(path, str) else ("", "", "")
    if name in table and module in ("", "lit_models", table[name]):
        return getattr(importlib.import_module(table[name]), name)
    if name in own and module in ("", own[name].__module__):
        return own[name]
    known = ", ".join(sorted([*table, *own]))
    raise ValueError(
        f"{what} {path!r} is not one of lit-models' ({known}); nothing was imported. A class of your own is built "
        "from a checkpoint once registered: lit_models.register(YourClass) before loading."
    )


def import_all() -> None:
    """Import every module and DataModule, so LightningCLI knows their short names (``--model ResNet``)."""
    for module in sorted(set(MODELS.values()) | set(DATAMODULES.values())):
        importlib.import_module(module)
