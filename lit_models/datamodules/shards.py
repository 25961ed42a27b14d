"""Prepared shards: a data set written once into LitData's optimized format (``lit-models data prepare``), read by
the image DataModules through the same decoding and transforms as the files it was made from.

A prepared folder holds one LitData folder per split (``train/``, ``val/``, ``test/`` where there is one: chunk
files and LitData's ``index.json``) and :data:`DESCRIPTION`, which says what the records are. A DataModule whose
``root`` holds that file reads the shards; the file is data, checked here, and never names code to run. This module
imports no LitData: only reading a split (``shard_dataset.py``) and preparing one (``shard_writer.py``) do.

Each record holds the encoded image bytes as they were in the file (JPEG stays JPEG; re-encoded only where prepare
shrank the image), the original file name (``path``), and by kind: ``label``; ``mask`` (PNG bytes) and
``mask_path``; ``boxes``, ``labels``, ``difficult``, ``iscrowd`` and ``size``. ``name`` is the sample's name
(segmentation's and detection's outputs are written under it). File names and names are stored as UTF-8 bytes:
LitData (0.2.76) stores a string that ends in an image extension as the image file it names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_models.datamodules.files import DataError

DESCRIPTION = "lit_models_shards.json"
FORMAT = "lit-models shards"
FORMAT_VERSION = 1
KINDS = {"classification": "ImageFolderDataModule", "segmentation": "SegmentationDataModule",
         "detection": "DetectionDataModule"}  # fmt: skip
SPLITS = ("train", "val", "test")
PREPARE_AGAIN = "Prepare the shards again from the files (lit-models data prepare)."


@dataclass(frozen=True)
class Shards:
    """A prepared folder as its description file states it: what a DataModule needs before reading a record."""

    root: Path
    kind: str
    class_names: list[str]
    splits: dict[str, int]  # records per split

    def datasets(self, decoder: Callable[[str], Any]) -> dict[str, Any]:
        """A streaming dataset per prepared split, each decoding its records with ``decoder(split)`` (the file
        dataset of that split, with its transform: ``load`` is what a file sample goes through), plus "predict":
        the test split, else val, with the evaluation transform."""
        from lit_models.datamodules.shard_dataset import ShardDataset

        datasets = {
            split: ShardDataset(self.root / split, decoder(split), self.kind, shuffle=split == "train")
            for split in self.splits
        }
        source = "test" if "test" in self.splits else "val"
        datasets["predict"] = ShardDataset(self.root / source, decoder("predict"), self.kind, shuffle=False)
        return datasets

    def missing(self, split: str) -> str:
        """Why a split is absent (for the error that asks for it)."""
        return f"{self.root} was prepared with the splits {', '.join(self.splits)} only."


def read_shards(root: Path, kind: str, class_names: list[str] | None = None) -> Shards | None:
    """The prepared shards at ``root``, or None when ``root`` holds no :data:`DESCRIPTION` (a folder of files).

    Args:
        root: The DataModule's data root.
        kind: The task of the DataModule that reads it ("classification", "segmentation", "detection").
        class_names: Class names the DataModule was given, which must be those the shards were prepared with.
    """
    path = root / DESCRIPTION
    if not path.is_file():
        return None
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read {path}: {error}. {PREPARE_AGAIN}") from error
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise DataError(f"{path} is not a description of prepared shards (its format is not {FORMAT!r}).")
    if description.get("version") != FORMAT_VERSION:
        raise DataError(
            f"{path} describes shards of format version {description.get('version')}; this lit-models reads "
            f"version {FORMAT_VERSION}. {PREPARE_AGAIN}"
        )
    found, names, splits = description.get("kind"), description.get("class_names"), description.get("splits")
    if found != kind:
        reader = KINDS.get(str(found), "another DataModule")
        raise DataError(f"{root} holds {found} shards, not {kind} data: read them with {reader}.")
    if not (isinstance(names, list) and all(isinstance(name, str) for name in names) and isinstance(splits, dict)):
        raise DataError(f"{path} has no list of class names or no splits. {PREPARE_AGAIN}")
    if class_names and list(class_names) != names:
        raise DataError(
            f"data.class_names {list(class_names)} differ from the class names {root} was prepared with {names}: "
            "leave data.class_names out (the shards carry their names) or prepare the shards again with them."
        )
    splits = {split: int(count) for split, count in splits.items() if split in SPLITS}
    for split in splits:
        if not (root / split / "index.json").is_file():
            raise DataError(f"{root / split} holds no LitData index.json: the shards are incomplete. {PREPARE_AGAIN}")
    if "train" not in splits or "val" not in splits:
        raise DataError(f"{path} lists no train or val split. {PREPARE_AGAIN}")
    return Shards(root, kind, names, splits)
