"""What every DataModule shares (``SplitDataModule``: split loaders, ``spec``, the rebuild for prediction) and what
every file-backed one adds (``FileDataModule``: decode errors carried to the main process, ``check``)."""

from __future__ import annotations

import inspect
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset, IterableDataset

from lit_models.datamodules.files import DataError, list_predict_images, listing_problems, report
from lit_models.datamodules.loaders import split_batch_size, split_loader
from lit_models.datamodules.sources import shapes
from lit_models.datamodules.sources.export import COMPLETE_MARKER
from lit_models.datamodules.spec import DataSpec, Resize, Task

if TYPE_CHECKING:  # shards.py's datasets are file datasets, built on this module
    from lit_models.datamodules.shards import Shards

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


class SplitDataModule(pl.LightningDataModule, ABC):
    """Loaders over ``self.datasets[split]``, the description of the data (``spec``) and its rebuild for prediction.

    Subclasses save the hyperparameters ``batch_size``, ``eval_batch_size`` and ``num_workers``, set
    ``self.collate_fn`` where their samples need one, fill ``self.datasets`` ("train", "val", optionally "test" and
    "predict") in ``setup``, describe their data in ``spec`` and say in ``prediction_arguments`` which constructor
    arguments serve prediction inputs alone.
    """

    predict_only = False  # built by for_prediction: serves its prediction inputs alone, prepares no training data
    drop_last_train = False  # drop a last partial training batch (where it would hold too few samples)

    def __init__(self) -> None:
        super().__init__()
        self.datasets: dict[str, Dataset] = {}
        self.collate_fn: Callable[[list], Any] | None = None

    @property
    @abstractmethod
    def spec(self) -> DataSpec:
        """The data as the model sees it (``spec.py``): known after ``__init__``, without decoding a sample."""

    # ------------------------------------------------------------------------------------------------ loaders

    def missing_split(self, split: str) -> str:
        """Why a split is absent, and what to do, for the error that asks for it."""
        return "it is not part of this data." if self.datasets else "call setup() first (a Trainer does this itself)."

    def split_dataset(self, split: str, batch_size: int) -> Dataset:
        """The dataset a split's loader reads (text cuts its token streams for ``batch_size`` here)."""
        if split not in self.datasets:
            raise DataError(f"this data has no {split} split: {self.missing_split(split)}")
        return self.datasets[split]

    def loader(self, split: str, train: bool) -> DataLoader:
        """A split's DataLoader (``loaders.split_loader``): shuffled in training, every sample once in evaluation."""
        batch_size = split_batch_size(self.hparams, train)
        dataset = self.split_dataset(split, batch_size)
        # Text's token streams yield whole batches; prepared shards (a streaming dataset with its own loader) samples.
        whole_batches = isinstance(dataset, IterableDataset) and not hasattr(dataset, "loader_class")
        return split_loader(
            dataset,
            train=train,
            batch_size=None if whole_batches else batch_size,
            num_workers=self.hparams.num_workers,
            trainer=self.trainer,
            collate_fn=self.collate_fn,
            drop_last=self.drop_last_train and train and len(dataset) > batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        """The predict split, else test, else val."""
        split = next((split for split in ("predict", "test", "val") if split in self.datasets), "predict")
        return self.loader(split, train=False)

    # ------------------------------------------------------------------------------------------ prediction

    @classmethod
    def for_prediction(cls, hparams: dict[str, Any], inputs: Any, class_names: list[str]) -> SplitDataModule:
        """This DataModule with a training run's saved arguments, serving only ``inputs`` to ``predict`` through the
        same evaluation preprocessing, with the model's class names; no training data is listed or read, so it
        need not exist here.

        Args:
            hparams: The training DataModule's arguments (a checkpoint's ``datamodule_hyper_parameters``).
            inputs: What to predict on, as ``prediction_arguments`` takes it; None serves nothing (images held in
                memory then go through ``images_dataset``).
            class_names: The class names (a language model's vocabulary) the model was trained with.
        """
        names = list(class_names)
        args = {**hparams, **cls.prediction_arguments(inputs), "class_names": names, "num_workers": 0}
        accepted = inspect.signature(cls).parameters
        data = cls(**{name: value for name, value in args.items() if name in accepted})
        data.predict_only = True
        data.use_class_names(names)  # where the constructor takes none, or reads them from the data
        return data

    @classmethod
    @abstractmethod
    def prediction_arguments(cls, inputs: Any) -> dict[str, Any]:
        """The constructor arguments that serve ``inputs`` alone and leave out every path of the training data."""

    def use_class_names(self, class_names: list[str]) -> None:
        """Take the model's class names in place of those of the data (which a prediction does not read)."""
        self.class_names, self.num_classes = class_names, len(class_names)

    @classmethod
    def from_checkpoint(cls, hparams: dict[str, Any], class_names: list[str]) -> SplitDataModule:
        """A predict-only DataModule from a checkpoint's ``datamodule_hyper_parameters`` and class names, without the
        training data: its ``spec`` and evaluation preprocessing are the training run's, and ``prediction_data``
        serves inputs. Arguments as ``for_prediction``'s."""
        return cls.for_prediction(hparams, None, class_names)

    def prediction_data(self, inputs: Any, batch_size: int | None = None) -> SplitDataModule:
        """A DataModule of this kind, with this one's evaluation preprocessing and class names, that serves only
        ``inputs`` to ``predict``: right after ``fit``, or on one from ``from_checkpoint``.

        Args:
            inputs: What to predict on, as ``for_prediction`` takes it.
            batch_size: Inputs per batch (default: this DataModule's evaluation batch size).
        """
        hparams = dict(self.hparams)
        if batch_size is not None:
            hparams.update(batch_size=batch_size, eval_batch_size=batch_size)
        return self.for_prediction(hparams, inputs, list(self.class_names))


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


class FileDataModule(SplitDataModule):
    """Image files listed by ``setup``, decoded in the loaders' workers, their errors raised in the main process.

    Subclasses set ``self.root`` (named in the error for a missing split) and ``self.collate_fn``, take the
    hyperparameters ``mean`` and ``std`` and fill ``self.datasets`` ("train", "val", optionally "test", and
    "predict") in ``setup``.
    """

    root: Path
    shards: Shards | None = None  # the prepared shards that root holds (shards.py), read in place of files
    # A last partial training batch can hold a single image, which BatchNorm cannot normalise; it is dropped (a
    # different few images each epoch) unless the split is smaller than one batch.
    drop_last_train = True

    def __init__(self) -> None:
        super().__init__()
        self._reported_skips: set[str] = set()

    @classmethod
    def prediction_arguments(cls, inputs: Any) -> dict[str, Any]:
        """``inputs``: image files, folders (any depth) or glob patterns, as ``predict_dir``. No data root and none
        of the training machine's folders: nothing of the training data is listed."""
        paths = ("root", "annotations", "images", "cache_dir", "proposal_dir")
        return {**dict.fromkeys(paths), "predict_dir": inputs}

    def image_spec(self, task: Task, image_size: int | None, resize: Resize, proposals: str | None = None) -> DataSpec:
        """The spec of images normalised by the ``mean`` and ``std`` hyperparameters."""
        hp = self.hparams
        return DataSpec(task, "images", self.class_names, image_size, resize, hp.mean, hp.std, proposals=proposals)

    def split_off_validation(self, samples: list) -> tuple[list, list]:
        """Hold out val_fraction of the training images (at least one), seeded, identically on every rank."""
        if len(samples) < 2:
            report(DataError(f"{self.root} has {len(samples)} training image(s); a validation split needs 2 or more."))
            return samples, []
        count = max(1, round(len(samples) * self.hparams.val_fraction))
        held_out = set(np.random.default_rng(self.hparams.split_seed).choice(len(samples), count, replace=False))
        return [s for i, s in enumerate(samples) if i not in held_out], [samples[i] for i in sorted(held_out)]

    def split_location(self, split: str) -> Path:
        """Where a split would be on disk (named when it is missing)."""
        return self.root / split

    def missing_split(self, split: str) -> str:
        return self.shards.missing(split) if self.shards else f"{self.split_location(split)} does not exist."

    def list_test(self) -> None:
        """Fill ``datasets["test"]`` where the data has a test split that ``setup`` leaves unread (VOC, COCO)."""

    def check(self) -> list[str]:
        """Every problem of this data, each naming its file or folder (none: the files will not stop a run), found
        before a long run rather than one at a time by its batches: the structural problems ``setup`` meets (an
        empty class folder, class folders that differ between splits, a listed file that is missing, an unparsable
        annotation), where ``fit`` stops at the first, then every sample of every split (train, val, and test where
        there is one) decoded as a run decodes it. A problem that leaves nothing to list (no data root, no training
        split) raises ``DataError`` as it does for ``fit``. ``lit-models check RECIPE`` runs this."""
        self.datasets = {}  # listed afresh: a listing done before would hide its problems
        with listing_problems() as problems:
            self.prepare_data()
            self.setup("fit")
            self.list_test()
        for split in ("train", "val", "test"):
            if split in self.datasets:
                for batch in self.loader(split, train=False):
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
        if name is None:
            return None
        try:
            return self.list_split(name, annotated)
        except DataError as error:  # the whole list is unreadable (an unparsable COCO file)
            report(error)
            return []

    def split_name(self, role: str) -> str | None:
        return (getattr(self.hparams, "splits", None) or {}).get(role, role)

    def setup(self, stage: str) -> None:
        if stage == "predict" and self.hparams.predict_dir:  # only the images asked for: no split is read
            self.datasets["predict"] = self.dataset(self.predict_samples([]))
            return
        if "train" in self.datasets:
            return
        if self.shards is not None:
            self.datasets = self.shards.datasets(lambda split: self.dataset([], train=split == "train"))
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
        if "test" not in self.datasets and not self.shards and (test := self.listed("test")) is not None:
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
