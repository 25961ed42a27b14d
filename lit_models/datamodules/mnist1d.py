"""MNIST-1D (Greydanus 2020), generated locally by ``prepare_data`` and read as sequence arrays."""

from __future__ import annotations

from pathlib import Path

from lit_models.datamodules.array import InMemorySequenceDataModule
from lit_models.datamodules.base import check_fractions, default_cache_dir
from lit_models.datamodules.files import DataError
from lit_models.datamodules.sequence_files import read_sequences
from lit_models.datamodules.sources import mnist1d
from lit_models.datamodules.sources.export import COMPLETE_MARKER


class MNIST1DDataModule(InMemorySequenceDataModule):
    """MNIST-1D (Greydanus 2020): 10 classes of length-40 1-D digits, 4,000 train and 1,000 test, generated locally.

    ``prepare_data`` generates the sequences once with the ``mnist1d`` package (its ``make_dataset``, never
    the downloading ``get_dataset``) into ``root`` as an NPZ that ``setup`` reads like ``ArrayDataModule``.
    Validation is the last ``val_fraction`` of the training sequences (shuffled by the generator), so test stays
    the paper's 1,000. Reference test accuracy: logistic 32 %, MLP 68 %, CNN 94 %, GRU 91 %, human 96 %.
    """

    task = "classification"
    input_size = 1
    seq_len = mnist1d.LENGTH

    def __init__(
        self,
        root: str | None = None,
        num_samples: int = 5000,
        train_split: float = 0.8,
        val_fraction: float = 0.1,
        batch_size: int = 100,
        seed: int = 42,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        """Configure the data.

        Args:
            root: Folder for the generated NPZ (default: $LIT_MODELS_CACHE/mnist1d or ~/.cache/lit_models/mnist1d).
            num_samples: Sequences generated in all (500 per class by default).
            train_split: Share of them for training; the rest is the test split.
            val_fraction: Share of the training sequences (the last ones) held out for validation.
            batch_size: Training batch size per device.
            seed: The generator's seed (42 is the paper's dataset).
            eval_batch_size: Validation/test/predict batch size per device (default: batch_size).
            num_workers: DataLoader worker processes per device.
        """
        super().__init__()
        self.save_hyperparameters()
        check_fractions(val_fraction)
        if not 0 < train_split < 1:
            raise ValueError(f"train_split must be in (0, 1), got {train_split}")
        base = Path(root).expanduser() if root else default_cache_dir() / "mnist1d"
        self.root = mnist1d.export_folder(base, num_samples, train_split, seed)
        self.class_names = list(mnist1d.CLASS_NAMES)
        self.num_classes = len(self.class_names)

    @property
    def file(self) -> Path:
        return self.root / mnist1d.FILE_NAME

    def prepare_data(self) -> None:
        hp = self.hparams
        mnist1d.export_mnist1d(self.root, hp.num_samples, hp.train_split, hp.seed)

    def setup(self, stage: str) -> None:
        if self.datasets:
            return
        if not (self.root / COMPLETE_MARKER).exists():
            raise DataError(
                f"MNIST-1D is not generated in {self.root} yet: call prepare_data() before setup() "
                "(a Trainer does this itself)."
            )
        train = read_sequences(self.file, "classification")
        test = read_sequences(self.file, "classification", test=True)
        self.fill_datasets(train, test, self.hparams.val_fraction, seed=None)
