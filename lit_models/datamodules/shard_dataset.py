"""One split of prepared shards (``shards.py``) read as LitData's ``StreamingDataset``, its records decoded by the
split's file dataset, so a batch is the one the files would give: same keys, transforms and error carrying."""

from __future__ import annotations

import bisect
import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from litdata import StreamingDataLoader, StreamingDataset
from litdata.streaming.sampler import ChunkedIndex
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as F

from lit_models.datamodules.base import FileDataset
from lit_models.datamodules.files import JPEG_SIGNATURE, SOURCE_LOCATION, DataError, check_jpeg_size

# A record that does not decode was readable when it was written: its chunk file is damaged since.
DAMAGED = "The shards are damaged: prepare them again from the files (lit-models data prepare)."


class ShardDataset(StreamingDataset):
    """The records of one split's shards, streamed in order (shuffled for training), decoded into the sample dicts
    of ``files`` (the split's file dataset, whose ``load`` and transform they go through).

    Order and sharding are LitData's: training shuffles the chunks and the records within each chunk every epoch
    from ``seed_everything``'s seed, and under DDP gives every rank the same number of records; evaluation
    (``drop_last=False``) gives each rank a disjoint part and their union is the split, every record exactly once.
    Its loader is LitData's ``StreamingDataLoader``, whose position Lightning saves in the checkpoint, so a run
    resumed mid-epoch goes on with the records it had not yet seen.

    The loader's workers persist across epochs, each with its own copy of this dataset made when it started: the
    epoch the loader sets in the main process, and whether a restored position is still to be used, reach them
    through a tensor in shared memory (``epoch_state``), so every epoch is shuffled anew even when one is cut short
    (``limit_train_batches``), where LitData's own worker-side count would not move on.
    """

    loader_class = StreamingDataLoader

    def __init__(self, folder: Path, files: FileDataset, kind: str, shuffle: bool) -> None:
        """Open one split.

        Args:
            folder: The split's LitData folder (``index.json`` and its chunks).
            files: The split's file dataset: its ``load`` decodes a sample, its ``skip_corrupt`` applies.
            kind: What the records hold ("classification", "segmentation", "detection").
            shuffle: Shuffle every epoch (the training split).
        """
        # item_shuffle_window=0: a full permutation of each chunk's records, not LitData's default of shuffling
        # 256-record blocks, which would keep the same images together in a batch every epoch; batch_decode=0:
        # each record read alone, as records are visited in that random order (small records are otherwise read
        # 256 at a time, for one of them).
        super().__init__(str(folder), shuffle=shuffle, seed=shuffle_seed(), item_shuffle_window=0, batch_decode=0)
        self.records = RecordFiles(self, files, kind, folder)
        self.epoch_state = torch.zeros(2, dtype=torch.int64).share_memory_()  # [epoch, restored position pending]

    def set_epoch(self, current_epoch: int) -> None:
        """LitData's (a restored position keeps its own epoch), told to the workers too."""
        super().set_epoch(current_epoch)
        self.epoch_state[0] = self.current_epoch
        self.epoch_state[1] = self._state_dict is not None

    def __iter__(self) -> ShardDataset:
        """One epoch's pass, in a worker or the main process: at the epoch the loader set, from the restored
        position only when the loader has one to resume."""
        if not self.epoch_state[1]:
            self._state_dict = None
            self.current_epoch = int(self.epoch_state[0])
        return super().__iter__()

    def __getitem__(self, index: ChunkedIndex | int) -> dict[str, Any]:
        """The decoded sample dict (``FileDataset``'s: with ``path``, ``error``, ``skipped``)."""
        return self.records[index.index if isinstance(index, ChunkedIndex) else index]

    def record(self, position: int) -> dict[str, Any]:
        """The stored record at a position of the split, undecoded."""
        return super().__getitem__(position)


class RecordFiles(FileDataset):
    """A split's record positions as the samples of a file dataset: ``FileDataset`` carries a record that does not
    decode to the main process (or, with ``skip_corrupt``, passes to the next record) as it does a file."""

    def __init__(self, shards: ShardDataset, files: FileDataset, kind: str, folder: Path) -> None:
        chunks = json.loads((folder / "index.json").read_text(encoding="utf-8"))["chunks"]
        self.chunk_ends = [0] * len(chunks)  # the position after each chunk's last record
        for index, chunk in enumerate(chunks):
            self.chunk_ends[index] = (self.chunk_ends[index - 1] if index else 0) + chunk["chunk_size"]
        self.chunk_files = [folder / chunk["filename"] for chunk in chunks]
        super().__init__(range(self.chunk_ends[-1] if chunks else 0), files.skip_corrupt)
        self.shards, self.files, self.kind = shards, files, kind
        self.last: tuple[int, dict[str, Any]] = (-1, {})  # the record read last: its path is asked for after load

    def record(self, position: int) -> dict[str, Any]:
        if self.last[0] != position:
            self.last = (position, self.shards.record(position))
        return self.last[1]

    def where(self, position: int) -> str:
        """The record's place, for messages: its position and its chunk file."""
        chunk = bisect.bisect_right(self.chunk_ends, position)
        return f"record {position} in {self.chunk_files[chunk]}"

    def path(self, sample: int) -> str:
        return read_text(self.record(sample)["path"])

    def load(self, sample: int) -> dict[str, Any]:
        return self.files.load(file_sample(self.kind, self.record(sample), self.where(sample)))


# ------------------------------------------------------------------------------------------------ records


class RecordFile(io.BytesIO):
    """A file of a record held in memory (a mask's PNG), named in messages by its original file and its record."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name

    def __str__(self) -> str:
        return self.name


def read_text(value: bytes | memoryview) -> str:
    """A file name or name of a record."""
    return bytes(value).decode("utf-8")


def decode_record_image(record: dict[str, Any], where: str) -> torch.Tensor:
    """The record's image, decoded fully here into 3 x H x W uint8 RGB, which the file dataset's ``load`` takes in
    place of a file; a damaged record is an error that names it. A JPEG is decoded by libjpeg-turbo through
    torchvision, as JPEG files are; other formats by PIL, since torchvision's PNG decoder (0.29) ends the process on
    some damaged data instead of raising."""
    data = bytes(record["image"])
    if data.startswith(JPEG_SIGNATURE):
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        check_jpeg_size(encoded, f"{read_text(record['path'])} ({where})")
    try:
        if data.startswith(JPEG_SIGNATURE):
            return decode_jpeg(encoded, mode=ImageReadMode.RGB)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return F.pil_to_tensor(image.convert("RGB"))
    except (RuntimeError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = SOURCE_LOCATION.sub("", str(error))
        raise DataError(f"cannot decode image {read_text(record['path'])} ({where}): {reason}. {DAMAGED}") from error


def file_sample(kind: str, record: dict[str, Any], where: str) -> tuple:
    """The sample a file dataset's ``load`` takes, made of a record: the decoded image in place of its file (the
    in-memory form every image DataModule reads), and the label, the mask or the boxes as listing gives them."""
    image = decode_record_image(record, where)
    if kind == "classification":
        return image, int(record["label"])
    name = read_text(record["name"])
    if kind == "segmentation":
        return image, RecordFile(record["mask"], f"{read_text(record['mask_path'])} ({where})"), name
    fields = ("boxes", "labels", "difficult", "iscrowd")
    targets = {field: record[field] for field in fields} | {"size": tuple(int(side) for side in record["size"])}
    return image, targets, name


def shuffle_seed() -> int:
    """The seed of the training order: ``seed_everything``'s (Lightning hands it to every DDP rank as
    PL_GLOBAL_SEED), so every rank draws the same order and each takes its own part; 0 without one."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))
