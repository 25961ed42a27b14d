"""Preparing shards (``shards.py``): the splits of an image DataModule, as its own listing gives them, written once
into LitData's format, each sample read first as a run reads it so that only readable data is written."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from litdata.streaming.writer import BinaryWriter
from PIL import Image

from lit_models.datamodules.base import FileDataModule, FileDataset
from lit_models.datamodules.files import DataError
from lit_models.datamodules.output_folder import building, check_output
from lit_models.datamodules.segmentation import load_mask
from lit_models.datamodules.shards import DESCRIPTION, FORMAT, FORMAT_VERSION, KINDS, SPLITS
from lit_models.version import __version__

log = logging.getLogger(__name__)

# FFCV's default quality for the images it re-encodes; an image that is not resized keeps its own bytes.
JPEG_QUALITY = 90
# LitData's usual chunk size: a few hundred photographs per file, read sequentially.
CHUNK_BYTES = "64MB"
# The training records are written in a seeded random order, so that every chunk mixes the classes (a listing is
# sorted by class) and a shuffle of chunks and of records within them gives well-mixed batches.
ORDER_SEED = 0


def prepare_shards(
    data: FileDataModule,
    output: str | os.PathLike,
    shorter_side: int | None = None,
    workers: int = 1,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``data``'s splits (train, val, and test where there is one) as prepared shards in ``output``; return
    the description written there (``shards.DESCRIPTION``).

    Every sample is first read as an evaluation run reads it (``load``: decoded, mask values and sizes checked), so
    a file a run would stop at stops the preparation, all of them listed at once, and nothing is written. The
    folder is built beside ``output`` and renamed into place when complete: an interrupted preparation never
    leaves shards that a DataModule would read.

    Args:
        data: An image DataModule (``ImageFolderDataModule``, ``SegmentationDataModule``, ``DetectionDataModule``)
            on files; a held-out validation split is written as the val split it is.
        output: The folder to write: absent, empty, or replaced with ``overwrite``.
        shorter_side: Shrink every image whose shorter side is longer to this many pixels (masks and boxes with
            it), re-encoded (JPEG at quality :data:`JPEG_QUALITY`, other formats as PNG); None keeps every image.
        workers: Processes that read and encode the images.
        overwrite: Replace a non-empty ``output``.
    """
    kind = data.spec.task
    if kind not in KINDS or not isinstance(data, FileDataModule):
        raise DataError(f"prepare writes image files (classification, segmentation, detection); "
                        f"{type(data).__name__}'s {kind} data is read whole by the DataModule itself.")  # fmt: skip
    if data.shards is not None:
        raise DataError(f"{data.root} holds prepared shards already; prepare reads the files they were made from.")
    if getattr(data, "proposal_cache", None) is not None:
        raise DataError("region proposals are computed from the image files and read with them: prepare the data "
                        "with --data.proposals null, and train the R-CNN family on the files.")  # fmt: skip
    if shorter_side is not None and shorter_side < 1:
        raise ValueError(f"shorter_side must be a positive number of pixels, got {shorter_side}")
    output = Path(output).expanduser().resolve()
    check_output(output, Path(data.root).resolve(), overwrite)  # before any work
    data.prepare_data()
    data.setup("fit")
    try:
        data.list_test()
    except DataError as error:  # VOC's and COCO's test lists name images whose annotations are not published
        log.warning("test split left out: %s", error)
    splits = {split: data.datasets[split].samples for split in SPLITS if split in data.datasets}
    splits["train"] = [splits["train"][i] for i in np.random.default_rng(ORDER_SEED).permutation(len(splits["train"]))]
    counts, problems = {}, []
    context = multiprocessing.get_context()
    with building(output, data.root, overwrite) as partial:
        with context.Pool(workers, initializer=use_reader, initargs=(data.datasets["val"], shorter_side)) as pool:
            for split, samples in splits.items():
                start = time.perf_counter()
                counts[split], failed = write_split(partial / split, samples, pool)
                problems += [f"{split}: {message}" for message in failed]
                log.info("%s: %d records in %.0f s", split, counts[split], time.perf_counter() - start)
        if problems:
            raise DataError(f"{len(problems)} sample(s) cannot be read, so nothing was written (lit-models check "
                            "lists the same problems):\n  " + "\n  ".join(problems))  # fmt: skip
        description = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "kind": kind,
            "class_names": list(data.class_names),
            "splits": counts,
            "source": {"datamodule": type(data).__name__, "root": str(Path(data.root).resolve())},
            "shorter_side": shorter_side,
            "jpeg_quality": JPEG_QUALITY,
            "lit_models_version": __version__,
        }
        (partial / DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return description


def write_split(folder: Path, samples: list, pool: Any) -> tuple[int, list[str]]:
    """Encode the samples in the pool's processes and write them in order; (records written, problems)."""
    writer = BinaryWriter(str(folder), chunk_bytes=CHUNK_BYTES)
    count, problems = 0, []
    for result in pool.imap(encode, samples, chunksize=16):
        if isinstance(result, str):
            problems.append(result)
            continue
        writer.add_item(count, result)
        count += 1
    writer.done()
    writer.merge()
    return count, problems


# ------------------------------------------------------------------------------ in the encoding processes

_reader: FileDataset | None = None  # the DataModule's evaluation dataset: its load() reads a sample as a run does
_shorter_side: int | None = None


def use_reader(reader: FileDataset, shorter_side: int | None) -> None:
    """Pool initializer: what every sample of this preparation is read and shrunk with."""
    global _reader, _shorter_side
    _reader, _shorter_side = reader, shorter_side


def encode(sample: tuple) -> dict[str, Any] | str:
    """A sample's record (``shards.py``), or the message of the problem that keeps it out."""
    assert _reader is not None
    try:
        _reader.load(sample)
        image_file = os.path.abspath(sample[0])
        data = Path(image_file).read_bytes()
    except (DataError, OSError) as error:
        return str(error)
    record: dict[str, Any] = {"image": data, "path": text(image_file)}
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        scale = _shorter_side / min(width, height) if _shorter_side and min(width, height) > _shorter_side else 1
        size = (round(width * scale), round(height * scale))
        if scale < 1:  # the image decoded in load() above: this one does too
            shrunk = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
            record["image"] = encoded(shrunk, "JPEG" if image.format == "JPEG" else "PNG")
    _, annotation, *name = sample
    if isinstance(annotation, int):  # classification: the label
        return {**record, "label": annotation}
    record["name"] = text(name[0])
    if isinstance(annotation, dict):  # detection: the boxes in the stored image's pixels
        boxes = annotation["boxes"] * np.array([size[0] / width, size[1] / height] * 2, dtype=np.float32)
        fields = {field: annotation[field] for field in ("labels", "difficult", "iscrowd")}
        return {**record, "boxes": boxes.astype(np.float32), **fields, "size": np.array(size[::-1], dtype=np.int64)}
    mask_file = Path(annotation).read_bytes()  # segmentation: the mask, shrunk with the image (nearest class)
    if scale < 1:
        classes = Image.fromarray(load_mask(annotation, _reader.num_classes))  # uint8: mode L
        mask_file = encoded(classes.resize(size, Image.Resampling.NEAREST), "PNG")
    return {**record, "mask": mask_file, "mask_path": text(str(annotation))}


def text(value: str) -> bytes:
    """A file name or name as a record stores it (``shards.py``)."""
    return value.encode("utf-8")


def encoded(image: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **({"quality": JPEG_QUALITY} if format == "JPEG" else {}))
    return buffer.getvalue()
