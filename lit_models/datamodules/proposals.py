"""Selective-search region proposals for R-CNN, SPPNet and Fast R-CNN, computed once per image and cached.

R-CNN (Girshick et al. 2014), SPPNet and Fast R-CNN classify about 2,000 class-agnostic regions per image that
selective search (Uijlings et al. 2013) proposes. The search is OpenCV's
(``cv2.ximgproc.segmentation.createSelectiveSearchSegmentation``) in either of the paper's two modes, "fast"
and "quality", run on the image resized to 500 px wide as R-CNN's wrapper did, with the boxes scaled back.
At 500 px that takes about 1.3 s (fast) or 4.5 s (quality) per image on one core, so ``ProposalCache``
computes each image's boxes once (in worker processes), stores them beside the dataset as ``<key>.npy``, and
the datasets read them from there.

Boxes everywhere are R x 4 float32 ``xyxy`` in the original image's 0-based pixels with x2/y2 exclusive (a box
covering columns 0..9 is [0, 10]), as VOC-converted and torchvision boxes are, ranked best first.

Run ``python -m lit_models.datamodules.proposal_command ROOT --mode fast --max-proposals 2000 --width 500
--workers 8`` to fill a dataset's cache ahead of training (a Trainer's ``prepare_data`` does the same for the images
it reads).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import shlex
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

from lit_models.datamodules.files import DataError, load_rgb

log = logging.getLogger(__name__)

ProposalMode = Literal["fast", "quality"]
MODES = ("fast", "quality")
SETTINGS_FILE = "settings.json"
DEFAULT_K = 50  # Uijlings et al.'s smallest segmentation threshold

# OpenCV ranks the regions of its hierarchies by ``rand() / RAND_MAX * level`` (the paper's pseudo-random
# ranking) with the C library's global, never-seeded generator, so without help the order of the boxes, and with
# it which max_proposals survive, changes from call to call. Re-seeding that generator before every search makes
# the output a function of the image alone. The lock keeps two threads' searches from sharing one sequence.
_RAND_SEED = 1  # glibc's own default: the first search of a fresh process is unchanged
_RAND_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _c_library() -> Any:
    """The C library whose ``rand`` OpenCV calls (POSIX: the process's global symbols); None where unknown."""
    if os.name != "posix":
        return None
    try:
        library = ctypes.CDLL(None)
        library.srand  # noqa: B018 - fail here, not at the first search, if the symbol is missing
    except (OSError, AttributeError):
        return None
    return library


def _check_settings(mode: str, max_proposals: int, width: int | None, k: int) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be 'fast' or 'quality', got {mode!r}")
    if max_proposals < 1 or (width is not None and width < 1) or k < 1:
        raise ValueError(f"max_proposals, width (or None) and k must be >= 1, got {max_proposals}, {width} and {k}")


def _rgb_pixels(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    pixels = np.asarray(image)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(
            f"image must be a PIL image or an H x W x 3 uint8 RGB array, got {pixels.dtype} {pixels.shape}"
        )
    return pixels


def selective_search(
    image: Image.Image | np.ndarray,
    mode: ProposalMode = "fast",
    max_proposals: int = 2000,
    width: int | None = 500,
    k: int = DEFAULT_K,
) -> np.ndarray:
    """Selective-search region proposals of one image, best ranked first.

    Args:
        image: A PIL image (any mode; converted to RGB) or an H x W x 3 uint8 RGB array.
        mode: "fast" or "quality", OpenCV's ``switchToSelectiveSearchFast`` / ``switchToSelectiveSearchQuality``:
            the two settings of Uijlings et al. 2013 (quality: more colour spaces, segmentation scales and
            similarity strategies): on 128 px shapes scenes about 3x slower with 2-3x the boxes.
        max_proposals: Keep at most this many boxes, the first in OpenCV's ranking.
        width: Resize the image (bilinear, antialiased when shrinking like MATLAB's ``imresize``, aspect kept) to
            this width for the search, as R-CNN's wrapper did with 500 px, and scale the boxes back; None
            searches the image as it is. The resize sets the scale of the segmentation (its k is in pixels).
        k: The graph segmentations' threshold (Felzenszwalb & Huttenlocher's k; OpenCV's ``base_k`` and
            ``inc_k``, from which it steps k up for each further segmentation). Smaller k segments finer and so
            proposes more, smaller boxes. Uijlings et al. start at 50 (fast: k = 50, 100), the default here;
            OpenCV's own default, 150, proposes far fewer.

    Returns:
        R x 4 float32 boxes, xyxy in ``image``'s 0-based pixels, x2/y2 exclusive (OpenCV's (x, y, w, h) becomes
        (x, y, x + w, y + h)), clipped to the image, without exact duplicates (the first occurrence kept, order
        preserved) or boxes under 1 px wide or high; R <= max_proposals, possibly 0.

    The same image always gives the same array (the C library's ``rand``, which OpenCV ranks with, is re-seeded
    before each search; on non-POSIX systems the ranking may differ from call to call). ``cv2.setNumThreads`` is
    left as it is: ``ProposalCache`` runs one single-threaded search per process.
    """
    _check_settings(mode, max_proposals, width, k)
    pixels = _rgb_pixels(image)
    height, image_width = pixels.shape[:2]
    if height == 0 or image_width == 0:
        return np.zeros((0, 4), dtype=np.float32)
    if width is not None and width != image_width:
        size = (width, max(1, round(height * width / image_width)))
        pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))
    searched_height, searched_width = pixels.shape[:2]

    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(np.ascontiguousarray(pixels[:, :, ::-1]))  # OpenCV reads BGR
    if mode == "fast":
        search.switchToSelectiveSearchFast(k, k)
    else:
        search.switchToSelectiveSearchQuality(k, k)
    library = _c_library()
    with _RAND_LOCK:
        if library is not None:
            library.srand(_RAND_SEED)
        rects = search.process()

    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    boxes[:, 0::2] *= image_width / searched_width
    boxes[:, 1::2] *= height / searched_height
    boxes = boxes.astype(np.float32)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, image_width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    _, first = np.unique(boxes, axis=0, return_index=True)
    boxes = boxes[np.sort(first)]
    boxes = boxes[(boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)]
    return np.ascontiguousarray(boxes[:max_proposals])


# ------------------------------------------------------------------------------------------------------- cache


def settings_name(mode: str, max_proposals: int, width: int | None, k: int = DEFAULT_K) -> str:
    """The cache sub-folder of one setting, e.g. ``selective_search-fast-max2000-w500-k50``."""
    return f"selective_search-{mode}-max{max_proposals}-w{width or 'orig'}-k{k}"


def _init_worker() -> None:
    """Each worker process searches one image at a time on one thread: the processes are the parallelism."""
    cv2.setNumThreads(1)


def _search_file(
    path: str, mode: str, max_proposals: int, width: int | None, k: int
) -> tuple[str, np.ndarray | None, str]:
    """(path, boxes, "") or (path, None, message): a decode error travels back as text, raised by the caller."""
    try:
        image = load_rgb(path)
    except DataError as error:
        cause = error.__cause__ or error
        return path, None, f"cannot decode image {path} to compute its region proposals: {cause}. Replace or delete it."
    return path, selective_search(image, mode, max_proposals, width, k), ""


class ProposalCache:
    """Region proposals stored as one ``<key>.npy`` per image in ``folder/<settings_name>/``.

    The key of an image is the first 20 hex digits of the SHA-1 of its path relative to ``root`` (absolute when it
    is not under ``root``), its size in bytes and its modification time in nanoseconds. Checking an image is
    therefore one ``stat``, not a read: hashing the content would read all 19 GB of COCO's 100k+ images on every
    run just to find that nothing changed. Consequences: an image rewritten in place (new size or mtime) gets a new
    key and is recomputed; moving or renaming the whole dataset folder keeps every key (paths are relative to
    ``root``), but copying it without preserving times (``cp -r`` rather than ``cp -a``/``rsync -a``) changes
    every mtime and so recomputes everything. Files of replaced images stay behind unused; deleting the settings
    folder is always safe.

    Every setting (mode, max_proposals, width, k) reads and writes its own sub-folder, which also holds
    ``settings.json`` (the settings and the OpenCV version that computed them). Files are written to a temporary
    name (one per process) and renamed, so an interrupted run never leaves a truncated ``<key>.npy`` and two
    processes filling one cache at once do not corrupt each other's files.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        root: str | os.PathLike,
        mode: ProposalMode = "fast",
        max_proposals: int = 2000,
        width: int | None = 500,
        k: int = DEFAULT_K,
    ) -> None:
        _check_settings(mode, max_proposals, width, k)
        self.root = Path(os.path.abspath(Path(root).expanduser()))
        self.mode = mode
        self.max_proposals = max_proposals
        self.width = width
        self.k = k
        self.settings_name = settings_name(mode, max_proposals, width, k)
        self.directory = Path(os.path.abspath(Path(folder).expanduser())) / self.settings_name

    def __repr__(self) -> str:
        return f"ProposalCache({str(self.directory)!r}, root={str(self.root)!r})"

    def key(self, image_path: str | os.PathLike) -> str:
        """The image's cache key: sha1 of (path relative to root, size, mtime_ns), first 20 hex digits."""
        path = Path(os.path.abspath(image_path))
        try:
            stat = os.stat(path)
        except OSError as error:
            raise DataError(f"cannot read image {path} to find its region proposals: {error}.") from error
        try:
            name = path.relative_to(self.root).as_posix()
        except ValueError:
            name = path.as_posix()
        return hashlib.sha1(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:20]

    def file(self, image_path: str | os.PathLike) -> Path:
        """Where the image's proposals are (or will be) stored."""
        return self.directory / f"{self.key(image_path)}.npy"

    def missing(self, image_paths: Iterable[str | os.PathLike]) -> list[str]:
        """The images (in the given order) whose proposals are not stored yet."""
        return [str(path) for path in image_paths if not self.file(path).is_file()]

    def command(self) -> str:
        """The command line that fills this cache."""
        width = self.width if self.width is not None else "none"
        return (
            f"python -m lit_models.datamodules.proposal_command {shlex.quote(str(self.root))} --proposal-dir "
            f"{shlex.quote(str(self.directory.parent))} --mode {self.mode} --max-proposals {self.max_proposals} "
            f"--width {width} --k {self.k}"
        )

    def load(self, image_path: str | os.PathLike | Image.Image) -> np.ndarray:
        """The image's stored proposals: R x 4 float32 xyxy boxes in its pixels, best first. An image held in
        memory (``lit_models.load(...).predict(picture)``) has no file to key a cache by: it is searched now."""
        if isinstance(image_path, Image.Image):
            return selective_search(image_path, self.mode, self.max_proposals, self.width, self.k)
        file = self.file(image_path)
        if not file.is_file():
            raise DataError(
                f"no region proposals for image {image_path} in {self.directory} (the image is new or changed "
                f"since they were computed). Run prepare_data (a Trainer does it before fitting) or `{self.command()}`."
            )
        try:
            boxes = np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise DataError(
                f"region proposal file {file} (of image {image_path}) is corrupt: {error}. Delete it; it is "
                "recomputed by the next prepare_data."
            ) from error
        if boxes.dtype != np.float32 or boxes.ndim != 2 or boxes.shape[1] != 4:
            raise DataError(
                f"region proposal file {file} (of image {image_path}) holds a {boxes.dtype} {boxes.shape} array, "
                "not R x 4 float32 boxes. Delete it; it is recomputed by the next prepare_data."
            )
        return boxes

    def compute(self, image_paths: Sequence[str | os.PathLike], workers: int = 1) -> int:
        """Compute and store the proposals of the images that have none yet; returns how many were computed.

        With ``workers`` > 1 the searches run in that many spawned processes (one OpenCV thread each), else in
        this process (on one OpenCV thread, restored afterwards). Nothing is written when nothing is missing, so a
        complete cache may be read-only. Progress is logged about every 10% and at the end.

        Raises:
            DataError: an image cannot be decoded (naming it; stores made before stay valid), or the cache
                folder cannot be created or written.
        """
        todo = list(dict.fromkeys(self.missing(image_paths)))
        if not todo:
            return 0
        self._prepare_directory()
        workers = max(1, min(workers, len(todo)))
        log.info(
            "computing %s region proposals of %d image(s) with %d process(es) into %s",
            self.settings_name,
            len(todo),
            workers,
            self.directory,
        )
        tasks = [(path, self.mode, self.max_proposals, self.width, self.k) for path in todo]
        start = time.perf_counter()
        if workers == 1:
            threads = cv2.getNumThreads()
            _init_worker()
            try:
                self._store_all(itertools.starmap(_search_file, tasks), len(todo), start)
            finally:
                cv2.setNumThreads(threads)
        else:
            # spawn, not fork: a forked copy of a process holding torch's or OpenCV's thread pools can deadlock. An
            # executor, not multiprocessing.Pool: a worker that dies is an error here, where Pool would wait forever.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as executor:
                futures = [executor.submit(_search_file, *task) for task in tasks]
                try:
                    self._store_all((future.result() for future in as_completed(futures)), len(todo), start)
                except BrokenProcessPool as error:
                    raise RuntimeError(
                        "a region proposal worker process died: out of memory, or the main script lacks the "
                        "`if __name__ == '__main__':` guard that spawned processes need. Fewer workers (or "
                        f"workers=1) may help. ({error})"
                    ) from error
                finally:
                    for future in futures:
                        future.cancel()
        return len(todo)

    def _store_all(self, results: Iterable[tuple[str, np.ndarray | None, str]], total: int, start: float) -> None:
        next_report = 1
        for done, (path, boxes, error) in enumerate(results, 1):
            if boxes is None:
                raise DataError(error)
            self._write(self.file(path), boxes)
            if done * 10 >= next_report * total or done == total:
                elapsed = time.perf_counter() - start
                log.info(
                    "region proposals: %d/%d images (%.0f%%), %.1f s, %.2f images/s",
                    done,
                    total,
                    100 * done / total,
                    elapsed,
                    done / max(elapsed, 1e-9),
                )
                next_report = done * 10 // total + 1

    def _unwritable(self, error: OSError) -> DataError:
        return DataError(
            f"cannot write region proposals to {self.directory}: {error}. Set data.proposal_dir (or "
            "--proposal-dir) to a writable folder."
        )

    def _write(self, file: Path, boxes: np.ndarray) -> None:
        """Write to a temporary name, then rename: readers see the whole file or none."""
        temporary = file.with_name(f"{file.stem}.{os.getpid()}.tmp{file.suffix}")
        try:
            with open(temporary, "wb") as handle:
                np.save(handle, boxes)
            os.replace(temporary, file)
        except OSError as error:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            raise self._unwritable(error) from error

    def _prepare_directory(self) -> None:
        """Create the folder and write settings.json once; warn when another OpenCV version filled it."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise self._unwritable(error) from error
        settings_file = self.directory / SETTINGS_FILE
        if settings_file.is_file():
            try:
                recorded = json.loads(settings_file.read_text()).get("opencv")
            except (OSError, ValueError, AttributeError):
                recorded = None
            if recorded and recorded != cv2.__version__:
                log.warning(
                    "region proposals in %s were computed with OpenCV %s, this is OpenCV %s: new images' boxes may "
                    "differ slightly from the stored ones. Delete the folder to recompute them all.",
                    self.directory,
                    recorded,
                    cv2.__version__,
                )
            return
        settings = {
            "method": "selective_search",
            "mode": self.mode,
            "max_proposals": self.max_proposals,
            "width": self.width,
            "k": self.k,
            "opencv": cv2.__version__,
            "boxes": "R x 4 float32 xyxy, 0-based pixels of the original image, x2/y2 exclusive, best ranked first",
            "key": "sha1 of '<path relative to root>\\0<size>\\0<mtime_ns>', first 20 hex digits, + '.npy'",
        }
        temporary = settings_file.with_name(f"{SETTINGS_FILE}.{os.getpid()}.tmp")
        try:
            temporary.write_text(json.dumps(settings, indent=1) + "\n")
            os.replace(temporary, settings_file)
        except OSError as error:
            raise self._unwritable(error) from error


# ------------------------------------------------------------------------------------------------------ recall


def proposal_recall(proposals: Sequence[Any], boxes: Sequence[Any], iou_threshold: float = 0.5) -> float:
    """The fraction of ground-truth boxes, over all images, that some proposal of their image overlaps with
    IoU >= ``iou_threshold`` (``torchvision.ops.box_iou``): the recall no detector classifying these proposals
    can exceed.

    Args:
        proposals: Per image, R x 4 xyxy boxes (numpy arrays or tensors; R may be 0).
        boxes: Per image, the N x 4 xyxy ground-truth boxes, in the same pixels (N may be 0).
        iou_threshold: The overlap that counts as found (0.5 as in PASCAL VOC; 0.7 for tighter boxes).

    Returns:
        Found boxes / all boxes, or NaN when there are no ground-truth boxes at all (recall is undefined).
    """
    import torch
    from torchvision.ops import box_iou

    if len(proposals) != len(boxes):
        raise ValueError(f"got proposals of {len(proposals)} images but boxes of {len(boxes)}")
    found = total = 0
    for predicted, truth in zip(proposals, boxes, strict=True):
        truth = torch.as_tensor(np.asarray(truth), dtype=torch.float32).reshape(-1, 4)
        predicted = torch.as_tensor(np.asarray(predicted), dtype=torch.float32).reshape(-1, 4)
        total += len(truth)
        if len(truth) and len(predicted):
            found += int((box_iou(truth, predicted).max(dim=1).values >= iou_threshold).sum())
    return found / total if total else float("nan")


@dataclass(frozen=True)
class ProposalStats:
    """How good one set of proposals is: the recall at IoU 0.5 (VOC) and 0.7, NaN without ground-truth boxes."""

    images: int
    boxes: int
    mean_proposals: float
    recall_50: float
    recall_70: float

    def __str__(self) -> str:
        return (
            f"{self.images} images, {self.boxes} boxes, {self.mean_proposals:.0f} proposals per image, "
            f"recall {self.recall_50:.3f} at IoU 0.5, {self.recall_70:.3f} at IoU 0.7"
        )


def proposal_stats(proposals: Sequence[Any], boxes: Sequence[Any]) -> ProposalStats:
    """Counts and recall at IoU 0.5 and 0.7 (see ``proposal_recall``) of per-image proposals and ground truth."""
    return ProposalStats(
        images=len(proposals),
        boxes=sum(len(np.asarray(truth).reshape(-1, 4)) for truth in boxes),
        mean_proposals=float(np.mean([len(p) for p in proposals])) if len(proposals) else 0.0,
        recall_50=proposal_recall(proposals, boxes, 0.5),
        recall_70=proposal_recall(proposals, boxes, 0.7),
    )
