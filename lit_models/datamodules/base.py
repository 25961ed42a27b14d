"""What every file-backed DataModule shares: decode errors carried to the main process, DDP-exact evaluation."""

from __future__ import annotations

import inspect
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from lit_models.datamodules.files import DataError, list_predict_images
from lit_models.datamodules.loaders import split_batch_size, split_loader
from lit_models.datamodules.sources import shapes
from lit_models.datamodules.sources.export import COMPLETE_MARKER

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """Where embedded data is exported: $LIT_MODELS_CACHE, else ~/.cache/lit_models."""
    return Path(os.environ.get("LIT_MODELS_CACHE") or Path.home() / ".cache" / "lit_models")


def check_fractions(val_fraction: float, scale_range: tuple[float, float] = (1.0, 1.0)) -> None:
    """The DataModules' shared numeric arguments, checked in __init__ so a bad config fails before any work."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if min(scale_range) <= 0 or scale_range[0] > scale_range[1]:
        raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")


class FileDataset(Dataset, ABC):
    """Samples decoded on access by ``load(sample)`` into dicts that also carry ``path``, ``error``, ``skipped``.

    A file that fails to decode never raises inside a DataLoader worker (where the message would be buried in
    a worker traceback): ``load`` raises ``DataError``, the sample carries the message, and
    ``FileDataModule.on_before_batch_transfer`` raises it in the main process. With ``skip_corrupt`` the next
    readable sample takes its place, so the dataset length, and with it every DDP rank's number of batches,
    stays the same.
    """

    def __init__(self, samples: list, skip_corrupt: bool = False) -> None:
        self.samples = samples
        self.skip_corrupt = skip_corrupt

    def __len__(self) -> int:
        return len(self.samples)

    def path(self, sample: Any) -> str:
        """The file a sample is named by in messages and predictions ("" for an image given in memory)."""
        return str(sample[0]) if isinstance(sample[0], (str, os.PathLike)) else ""

    @abstractmethod
    def load(self, sample: Any) -> dict[str, Any]:
        """Decode one sample into a dict of tensors; raise DataError (naming the file) when it cannot."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        attempts = len(self.samples) if self.skip_corrupt else 1
        failures: list[str] = []  # the messages of unreadable samples passed over, each naming its file
        for offset in range(attempts):
            sample = self.samples[(index + offset) % len(self.samples)]
            try:
                item = self.load(sample)
            except DataError as error:
                failures.append(str(error))
                continue
            return {**item, "path": self.path(sample), "error": "", "skipped": failures}
        return {"path": self.path(self.samples[index]), "error": failures[0], "skipped": []}


def collate_metadata(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The batch keys every file DataModule produces: paths, decode errors and skipped files."""
    return {
        "path": [s["path"] for s in samples],
        "errors": [s["error"] for s in samples if s["error"]],
        "skipped": [message for s in samples for message in s["skipped"]],
    }


class FileDataModule(pl.LightningDataModule):
    """Loaders over ``self.datasets[split]`` and the main-process error check; subclasses fill the datasets.

    Subclasses save the hyperparameters ``batch_size``, ``eval_batch_size`` and ``num_workers``, set
    ``self.root`` (named in the error for a missing split) and ``self.collate_fn``, and fill ``self.datasets``
    ("train", "val", optionally "test", and "predict") in ``setup``.
    """

    root: Path
    collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]]
    predict_only = False  # built by for_prediction: serves predict_dir alone, exports no embedded data

    def __init__(self) -> None:
        super().__init__()
        self.datasets: dict[str, Dataset] = {}
        self._reported_skips: set[str] = set()

    @classmethod
    def for_prediction(cls, hparams: dict[str, Any], inputs: Any, class_names: list[str]) -> FileDataModule:
        """This DataModule with a training run's saved arguments, serving only ``inputs`` (image files, folders,
        glob patterns) to ``predict`` through the same evaluation preprocessing; no training data is listed or
        read, so it need not exist here. ``inputs`` None serves nothing (for ``images_dataset``)."""
        accepted = inspect.signature(cls).parameters
        args = {name: value for name, value in hparams.items() if name in accepted}
        # No data root (nothing of the training data is listed), and none of the training machine's folders.
        paths = ("root", "annotations", "images", "cache_dir", "proposal_dir")
        args.update({name: None for name in paths if name in accepted})
        data = cls(**{**args, "predict_dir": inputs, "num_workers": 0})
        data.class_names, data.num_classes = list(class_names), len(class_names)  # the checkpoint's, not root's
        data.predict_only = True
        return data

    def split_off_validation(self, samples: list) -> tuple[list, list]:
        """Hold out val_fraction of the training images (at least one), seeded, identically on every rank."""
        if len(samples) < 2:
            raise DataError(f"{self.root} has {len(samples)} training image(s); a validation split needs 2 or more.")
        count = max(1, round(len(samples) * self.hparams.val_fraction))
        held_out = set(np.random.default_rng(self.hparams.split_seed).choice(len(samples), count, replace=False))
        return [s for i, s in enumerate(samples) if i not in held_out], [samples[i] for i in sorted(held_out)]

    def split_location(self, split: str) -> Path:
        """Where a split would be on disk (named when it is missing)."""
        return self.root / split

    def missing_split(self, split: str) -> str:
        """Why a split is absent, for messages: where it was looked for."""
        return f"{self.split_location(split)} does not exist."

    def loader(self, split: str, train: bool) -> DataLoader:
        hp = self.hparams
        batch_size = split_batch_size(hp, train)
        if split not in self.datasets:
            raise DataError(f"this data has no {split} split: {self.missing_split(split)}")
        dataset = self.datasets[split]
        return split_loader(
            dataset,
            train=train,
            batch_size=batch_size,
            num_workers=hp.num_workers,
            trainer=self.trainer,
            collate_fn=self.collate_fn,
            # A last partial training batch can hold a single image, which BatchNorm cannot normalise; it is
            # dropped (a different few images each epoch) unless the split is smaller than one batch.
            drop_last=train and len(dataset) > batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.loader("predict", train=False)

    def list_test(self) -> None:
        """Fill ``datasets["test"]`` where the data has a test split that ``setup`` leaves unread (VOC, COCO)."""

    def check(self) -> list[str]:
        """Decode every sample of every split (train, val, and test where there is one) as a run would, before a
        long run rather than at its first bad batch; return every problem found, each naming its file (none: the
        files will not stop a run). Problems ``setup`` finds (a missing folder, a class not in the list) raise
        ``DataError`` as they do for ``fit``. ``lit-models check RECIPE`` runs this from the command line."""
        self.prepare_data()
        self.setup("fit")
        self.list_test()
        problems: list[str] = []
        for split in ("train", "val", "test"):
            if split not in self.datasets:
                continue
            batch_size = split_batch_size(self.hparams, train=False)
            loader = split_loader(
                self.datasets[split],
                train=False,
                batch_size=batch_size,
                num_workers=self.hparams.num_workers,
                collate_fn=self.collate_fn,
            )
            for batch in loader:
                problems += [f"{split}: {message}" for message in batch["errors"] + batch["skipped"]]
        return list(dict.fromkeys(problems))  # with skip_corrupt, a file can be passed over for two samples

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Main process: raise decode errors with their message, log skipped files once each."""
        if batch["errors"]:
            # The way out that skipping offers is named here, where it was not taken, not where the file failed.
            skip = "Or set data.skip_corrupt=true to pass over unreadable samples (each one is logged)."
            raise DataError(f"{batch['errors'][0]} {skip}")
        for message in batch["skipped"]:
            if message not in self._reported_skips:
                self._reported_skips.add(message)
                log.warning("skipped (data.skip_corrupt=true): %s", message)
        return batch


class AnnotatedImagesDataModule(FileDataModule, ABC):
    """Split handling for images with annotations (masks, boxes): train/val[/test] lists and predict images.

    Samples are ``(image file, annotation or None, name)``. Subclasses implement ``list_split(split, annotated)``
    (the split's samples, or None when the data has no such split; ``annotated=False`` lists images only) and
    ``dataset(samples, train)``, and set ``embedded`` (the generated shapes under ``root``, which ``prepare_data``
    generates) in ``__init__``.
    """

    embedded: bool = False

    def prepare_data(self) -> None:
        if self.embedded and not self.predict_only:
            shapes.export_shapes(self.root, shapes.DEFAULT_TRAIN, shapes.DEFAULT_VAL, shapes.DEFAULT_TEST)

    @abstractmethod
    def list_split(self, split: str, annotated: bool = True) -> list | None:
        """The split's samples, or None when the data has no such split."""

    @abstractmethod
    def dataset(self, samples: list, train: bool = False) -> FileDataset:
        """A dataset of these samples with the training or the evaluation transform."""

    def listed(self, role: str, annotated: bool = True) -> list | None:
        """The samples of the list a role reads: a ``splits`` hyperparameter may rename it (VOC 2007's
        {"train": "trainval"}) or map it to None (no such list: val is then held out of train)."""
        name = self.split_name(role)
        return None if name is None else self.list_split(name, annotated)

    def split_name(self, role: str) -> str | None:
        return (getattr(self.hparams, "splits", None) or {}).get(role, role)

    def setup(self, stage: str) -> None:
        if stage == "predict" and self.hparams.predict_dir:  # only the images asked for: no split is read
            self.datasets["predict"] = self.dataset(self.predict_samples([]))
            return
        if "train" in self.datasets:
            return
        if self.embedded and not (self.root / COMPLETE_MARKER).exists():
            raise DataError(
                f"the embedded shapes are not generated in {self.root} yet: call prepare_data() before setup() "
                "(a Trainer does this itself)."
            )
        train = self.listed("train")
        if train is None:
            missing = self.missing_split(self.split_name("train") or "train")
            raise DataError(f"{self.root} has no training split: {missing}")
        val = self.listed("val")
        if val is None:
            train, val = self.split_off_validation(train)
        self.datasets = {"train": self.dataset(train, train=True), "val": self.dataset(val)}
        self.datasets["predict"] = self.dataset(self.predict_samples(val))

    def list_test(self) -> None:
        # Read only when testing: VOC's and COCO's test lists name images whose annotations are not published.
        if "test" not in self.datasets and (test := self.listed("test")) is not None:
            self.datasets["test"] = self.dataset(test)

    def test_dataloader(self) -> DataLoader:
        self.list_test()
        return super().test_dataloader()

    def images_dataset(self, images: list) -> FileDataset:
        """A predict dataset of PIL images held in memory, named by their position, with the evaluation
        transform."""
        return self.dataset([(image, None, str(index)) for index, image in enumerate(images)])

    def predict_samples(self, val: list) -> list:
        """Images of predict_dir, else of the test split (annotations not needed), else of val."""
        folder = self.hparams.predict_dir
        if not folder:
            listed = self.listed("test", annotated=False) or val
            return [(image, None, name) for image, _, name in listed]
        folder, files = list_predict_images(folder)
        return [(f, None, str(Path(f).relative_to(folder).with_suffix(""))) for f in files]
