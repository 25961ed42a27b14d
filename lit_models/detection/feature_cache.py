"""The disk cache of region features that R-CNN's hard-negative mining reads (R-CNN §2.3: "features are extracted
... and cached on disk"; the released code's ``rcnn_cache_pool5_features``).

One file per training image, ``<folder>/<index>.pt`` (its place in the training list), written once by
``torch.save`` through a temporary file (a run killed mid-write leaves no partial file): the fc7 features of its
ground-truth boxes then of its proposals (N x D, float16: half the disk, each value rounded by at most 0.05 %;
float32 where a value passes float16's range), each row's label (the box's class, 0 for a proposal),
whether it is a positive (a ground-truth box not marked difficult), and each row's highest IoU with the boxes of
each class (N x K). Each file records the fingerprint of the weights and feature settings that computed it and a
digest of what it was computed from (the image tensor, its proposals and boxes): a file is reused only when both
match, so a resumed run skips what is done, and other weights, another image or other proposals recompute it.
``manifest.json`` says, for people, which weights and run wrote the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lit_models.detection.svm_mining import Block

log = logging.getLogger(__name__)

VERSION = 1  # of the file layout; another version is recomputed
FILE = re.compile(r"\d{6,}\.pt")
ROW_BITS = 21  # a row's key: image index << ROW_BITS | row (2 million rows per image)


def tensor_bytes(tensor: Tensor) -> memoryview:
    return memoryview(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


def fingerprint(modules: Iterable[nn.Module], settings: Mapping[str, Any]) -> str:
    """A hash of the modules' parameters and buffers and of the settings that shape the features."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor_bytes(tensor))
    return digest.hexdigest()


def item_digest(item: Mapping[str, Any]) -> str:
    """A hash of what one image's features are computed from: its name, image tensor, proposals and boxes."""
    target = item["target"]
    digest = hashlib.sha256(str(item["name"]).encode())
    for tensor in (item["image"], item["proposals"], target["boxes"], target["labels"], target["difficult"]):
        digest.update(tensor_bytes(tensor))
    return digest.hexdigest()


@dataclass(frozen=True)
class FillReport:
    computed: int
    reused: int
    seconds: float


class FeatureCache:
    """The per-image feature files in ``folder`` (module docstring) computed by weights of this ``fingerprint``."""

    def __init__(self, folder: str | os.PathLike, fingerprint: str) -> None:
        self.folder = Path(folder)
        self.fingerprint = fingerprint

    def file(self, index: int) -> Path:
        return self.folder / f"{index:06d}.pt"

    def read(self, index: int) -> dict[str, Any]:
        path = self.file(index)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no cached features of training image {index}. Under DDP every process must see the same "
                "model.svm_cache_dir: across machines, set it to a shared folder."
            )
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)

    def holds(self, index: int, digest: str) -> bool:
        """Whether image ``index``'s file exists and was computed by these weights from this input."""
        try:
            entry = self.read(index)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError):  # missing, or not a whole file
            return False
        return (entry.get("version"), entry.get("fingerprint"), entry.get("digest")) == (
            VERSION, self.fingerprint, digest
        )  # fmt: skip

    def fill(
        self,
        indices: list[int],
        load: Callable[[int], Mapping[str, Any]],
        compute: Callable[[Mapping[str, Any]], dict[str, Tensor]],
    ) -> FillReport:
        """Compute the files of these images that are missing or stale.

        Args:
            indices: The images, by their place in the training list.
            load: An image's dataset item (``image``, ``proposals``, ``target``, ``name``).
            compute: An item -> its entry: ``features`` N x D, ``labels`` N, ``positive`` N, ``overlaps`` N x K.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        start, computed = time.perf_counter(), 0
        for done, index in enumerate(indices, 1):
            item = load(index)
            digest = item_digest(item)
            if self.holds(index, digest):
                continue
            entry = compute(item)
            features = entry["features"]
            half = features.abs().max() < torch.finfo(torch.float16).max if len(features) else True
            entry = {**entry, "features": features.half() if half else features,
                     "norm_sum": float(features.norm(dim=1).sum())}  # fmt: skip
            temporary = self.file(index).with_suffix(".tmp")
            torch.save({**entry, "version": VERSION, "fingerprint": self.fingerprint, "digest": digest}, temporary)
            os.replace(temporary, self.file(index))
            computed += 1
            if done % max(1, len(indices) // 10) == 0:
                log.info("SVM feature cache: %d of %d images (%d computed)", done, len(indices), computed)
        return FillReport(computed, len(indices) - computed, time.perf_counter() - start)

    def finish(self, indices: list[int], about: Mapping[str, Any]) -> None:
        """Remove the files of images no longer cached; write ``manifest.json`` (one process: rank 0)."""
        kept = {self.file(index).name for index in indices}
        for path in self.folder.iterdir():
            if FILE.fullmatch(path.name) and path.name not in kept:
                path.unlink()
        manifest = {"fingerprint": self.fingerprint, "images": len(indices), **about}
        (self.folder / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")

    def feature_scale(self, indices: list[int], target_norm: float) -> float:
        """The factor that brings the cached features' mean L2 norm to ``target_norm``."""
        norms, rows = 0.0, 0
        for index in indices:
            entry = self.read(index)
            norms, rows = norms + entry["norm_sum"], rows + len(entry["labels"])
        return target_norm * rows / norms if norms > 0 else 1.0

    def positives(self, indices: list[int], classes: list[int], scale: float) -> list[Tensor]:
        """Per class, the scaled features of its positives (its ground-truth boxes not marked difficult)."""
        found: list[list[Tensor]] = [[] for _ in classes]
        for index in indices:
            entry = self.read(index)
            for rows, label in zip(found, classes, strict=True):
                rows.append(entry["features"][entry["positive"] & (entry["labels"] == label)].float() * scale)
        return [torch.cat(rows) for rows in found]

    def images(self, indices: list[int], classes: list[int], scale: float, neg_iou: float) -> Iterator[Block]:
        """Each image's scaled features in order, with whether each row is a negative of each class (IoU under
        ``neg_iou`` with all its boxes) and the rows' keys."""
        for index in indices:
            entry = self.read(index)
            keys = (index << ROW_BITS) + torch.arange(len(entry["labels"]), dtype=torch.int64)
            yield entry["features"].float() * scale, entry["overlaps"][:, classes] < neg_iou, keys
