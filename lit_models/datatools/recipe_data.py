"""A recipe's image data as ``show`` and ``stats`` read it: the DataModule built as ``fit`` builds it, and each
split's samples as its own listing gives them (the annotations parsed and checked, no image decoded)."""

from __future__ import annotations

import logging

from lit_models.datamodules.base import FileDataModule
from lit_models.datamodules.files import DataError

SPLITS = ("train", "val", "test")


def recipe_splits(recipe: str, overrides: list[str], splits: tuple[str, ...]) -> tuple[FileDataModule, dict]:
    """The recipe's DataModule and {split: samples} for the ``splits`` it has; a split asked for alone that the
    data lacks is a DataError. Samples are the DataModule's: (image, label) for classification, (image, mask
    file, name) for segmentation, (image, Targets, name) for detection."""
    from lit_models.cli import build_recipe, show_package_logs

    show_package_logs()  # the embedded data's generation, clipped boxes
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # no trainer start-up lines: nothing trains
    data = build_recipe(recipe, *overrides).datamodule
    if not isinstance(data, FileDataModule) or data.spec.task not in ("classification", "segmentation", "detection"):
        raise DataError(f"{type(data).__name__} holds no image files; show and stats read classification, "
                        "segmentation and detection images.")  # fmt: skip
    if data.shards is not None:
        raise DataError(f"{data.root} holds prepared shards; show and stats read the files they were made from: "
                        "give --data.root that folder.")  # fmt: skip
    if getattr(data, "proposal_cache", None) is not None:  # prepare_data would compute them for every image
        raise DataError("show and stats read no region proposals: add --data.proposals null to the command.")
    data.prepare_data()  # the embedded data, generated once
    data.setup("fit")
    if "test" in splits:
        data.list_test()
    found = {split: data.datasets[split].samples for split in splits if split in data.datasets}
    if len(splits) == 1 and not found:
        raise DataError(f"{data.root} has no {splits[0]} split: {data.missing_split(splits[0])}")
    return data, found
