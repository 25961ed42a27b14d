"""Selective-search proposals: box conversion, determinism, recall on shapes scenes, and the on-disk cache."""

from __future__ import annotations

import json
import logging
import os
import shlex
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from lit_models.datamodules import proposals as module
from lit_models.datamodules.files import DataError, load_rgb
from lit_models.datamodules.proposal_command import main
from lit_models.datamodules.proposals import (
    ProposalCache,
    ProposalStats,
    proposal_recall,
    proposal_stats,
    selective_search,
    settings_name,
)
from lit_models.datamodules.sources.shapes import generate_scene


def scene(index: int, size: int = 128) -> tuple[Image.Image, np.ndarray]:
    """A shapes scene and its ground-truth boxes (0-based xyxy, x2/y2 exclusive)."""
    image, _, objects = generate_scene(np.random.default_rng([7, index]), size)
    return image, np.array([obj["box"] for obj in objects], dtype=np.float32)


def assert_in_image(boxes: np.ndarray, width: int, height: int) -> None:
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) > 0
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert (boxes[:, 2] - boxes[:, 0] >= 1).all() and (boxes[:, 3] - boxes[:, 1] >= 1).all()
    assert len(np.unique(boxes, axis=0)) == len(boxes)


class FakeSearch:
    """Stands in for OpenCV's search: records what it is given and returns fixed (x, y, w, h) rects."""

    def __init__(self, rects: list[tuple[int, int, int, int]]) -> None:
        self.rects = np.array(rects, dtype=np.int32).reshape(-1, 4)
        self.base: np.ndarray | None = None
        self.mode = ""
        self.k: tuple[int, int] | None = None

    def __call__(self) -> FakeSearch:
        return self

    def setBaseImage(self, image: np.ndarray) -> None:  # noqa: N802 - OpenCV's names
        self.base = image.copy()

    def switchToSelectiveSearchFast(self, base_k: int, inc_k: int) -> None:  # noqa: N802
        self.mode, self.k = "fast", (base_k, inc_k)

    def switchToSelectiveSearchQuality(self, base_k: int, inc_k: int) -> None:  # noqa: N802
        self.mode, self.k = "quality", (base_k, inc_k)

    def process(self) -> np.ndarray:
        return self.rects


@pytest.fixture
def fake_search(monkeypatch: pytest.MonkeyPatch):
    def install(rects: list[tuple[int, int, int, int]]) -> FakeSearch:
        fake = FakeSearch(rects)
        monkeypatch.setattr(cv2.ximgproc.segmentation, "createSelectiveSearchSegmentation", fake)
        return fake

    return install


# ----------------------------------------------------------------------------------------------- selective_search


def test_rects_become_clipped_deduplicated_xyxy_in_order(fake_search) -> None:
    fake = fake_search(
        [
            (2, 3, 10, 5),  # -> [2, 3, 12, 8]: x2 = x + w, exclusive
            (35, 20, 10, 20),  # -> [35, 20, 45, 40], clipped to the 40 x 30 image
            (2, 3, 10, 5),  # an exact duplicate: dropped
            (0, 0, 40, 30),  # the whole image
            (39, 0, 5, 5),  # clipped to 1 px wide: kept
            (40, 0, 5, 5),  # clipped to 0 px wide: dropped
            (35, 20, 6, 10),  # clips onto the second box: a duplicate after clipping, dropped
            (34, 19, 11, 21),  # clipped, distinct
        ]
    )
    pixels = np.zeros((30, 40, 3), dtype=np.uint8)
    pixels[..., 0] = 255  # pure red in RGB
    boxes = selective_search(pixels, mode="quality", width=None)
    expected = [[2, 3, 12, 8], [35, 20, 40, 30], [0, 0, 40, 30], [39, 0, 40, 5], [34, 19, 40, 30]]
    assert boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes, np.array(expected, dtype=np.float32))
    assert fake.mode == "quality" and fake.k == (50, 50)  # Uijlings et al.'s k, not OpenCV's default 150
    assert fake.base.shape == (30, 40, 3) and fake.base[0, 0].tolist() == [0, 0, 255]  # OpenCV gets BGR
    # max_proposals keeps the first ones, after the duplicates and slivers are gone.
    np.testing.assert_array_equal(selective_search(pixels, "fast", max_proposals=3, width=None), expected[:3])
    assert fake.mode == "fast"
    selective_search(pixels, "fast", width=None, k=5)
    assert fake.k == (5, 5)


def test_width_resizes_the_search_and_scales_boxes_back(fake_search) -> None:
    fake = fake_search([(4, 6, 20, 10), (0, 0, 80, 48)])
    boxes = selective_search(np.zeros((30, 50, 3), dtype=np.uint8), width=80)
    assert fake.base.shape == (48, 80, 3)  # 80 wide, aspect kept: round(30 * 80 / 50)
    # x scales by 50 / 80, y by 30 / 48: the searched image's corners map to the original's.
    np.testing.assert_allclose(boxes, [[2.5, 3.75, 15.0, 10.0], [0, 0, 50, 30]], rtol=1e-6)
    selective_search(np.zeros((30, 50, 3), dtype=np.uint8), width=None)
    assert fake.base.shape == (30, 50, 3)


def test_no_rects_and_bad_arguments(fake_search) -> None:
    fake_search([])
    assert selective_search(np.zeros((8, 8, 3), dtype=np.uint8), width=None).shape == (0, 4)
    with pytest.raises(ValueError, match="mode"):
        selective_search(np.zeros((8, 8, 3), dtype=np.uint8), mode="slow")
    with pytest.raises(ValueError, match="uint8"):
        selective_search(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="max_proposals"):
        selective_search(np.zeros((8, 8, 3), dtype=np.uint8), max_proposals=0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        selective_search(np.zeros((8, 8, 3), dtype=np.uint8), k=0)


def test_both_modes_find_the_shapes_and_are_deterministic() -> None:
    scenes = [scene(index) for index in range(4)]
    fast = [selective_search(image, "fast", width=None) for image, _ in scenes]
    for boxes in fast:
        assert_in_image(boxes, 128, 128)
    assert proposal_recall(fast, [gt for _, gt in scenes], 0.5) >= 0.9
    assert proposal_recall(fast, [gt for _, gt in scenes], 0.7) >= 0.8
    quality = [selective_search(image, "quality", width=None) for image, _ in scenes[:2]]
    for boxes in quality:
        assert_in_image(boxes, 128, 128)
    assert proposal_recall(quality, [gt for _, gt in scenes[:2]], 0.5) >= 0.9
    assert sum(map(len, quality)) > sum(map(len, fast[:2]))  # quality: more strategies, more boxes
    # The same image gives the same ranked boxes, even with another image's search in between (OpenCV ranks
    # with the C library's rand, which each search re-seeds), and a PIL image equals its RGB array.
    first, second = scenes[0][0], scenes[1][0]
    again = [selective_search(second, "fast", width=None), selective_search(np.asarray(first), "fast", width=None)]
    np.testing.assert_array_equal(again[0], fast[1])
    np.testing.assert_array_equal(again[1], fast[0])
    np.testing.assert_array_equal(selective_search(scenes[0][0], "quality", width=None), quality[0])
    # Any PIL mode is converted to RGB.
    assert_in_image(selective_search(first.convert("L"), "fast", width=None), 128, 128)


def test_resized_search_maps_back_into_original_pixels() -> None:
    scenes = [scene(index, size=96) for index in range(2)]
    for image, gt in scenes:
        native = selective_search(image, "fast", width=None)
        doubled = selective_search(image, "fast", width=192)
        assert_in_image(doubled, 96, 96)
        assert not np.array_equal(native, doubled)
        # Boxes in the 192 px search's pixels would reach past 96; scaled back, they still cover the objects.
        assert doubled.max() <= 96 and doubled[:, 2:].max() > 48
        for boxes in (native, doubled):
            assert proposal_recall([boxes], [gt], 0.7) == 1.0


# ---------------------------------------------------------------------------------------------------------- cache


def write_scenes(folder: Path, count: int, size: int = 64, start: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, start + count):
        path = folder / f"{index:06d}.png"  # lossless: the cached boxes equal a search of the array
        scene(index, size)[0].save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "data"
    return root, write_scenes(root / "JPEGImages", 3)


def make_cache(root: Path, folder: Path | None = None, **settings) -> ProposalCache:
    options = {"mode": "fast", "max_proposals": 100, "width": None, **settings}
    return ProposalCache(folder or root / "proposals", root, **options)


def npy_files(cache: ProposalCache) -> dict[str, int]:
    return {file.name: file.stat().st_mtime_ns for file in cache.directory.glob("*.npy")}


def test_compute_stores_each_image_once(dataset, caplog: pytest.LogCaptureFixture) -> None:
    root, paths = dataset
    cache = make_cache(root)
    assert cache.directory == root / "proposals" / "selective_search-fast-max100-worig-k50"
    assert cache.missing(paths) == paths
    with caplog.at_level(logging.INFO, logger=module.__name__):
        assert cache.compute(paths) == 3
    assert "3/3 images (100%)" in caplog.text and "images/s" in caplog.text
    files = npy_files(cache)
    assert sorted(files) == sorted(cache.file(path).name for path in paths) and len(files) == 3
    assert all(len(name) == len("0123456789abcdef0123.npy") for name in files)
    settings = json.loads((cache.directory / "settings.json").read_text())
    assert settings["mode"] == "fast" and settings["max_proposals"] == 100 and settings["width"] is None
    assert settings["k"] == 50
    assert settings["opencv"] == cv2.__version__
    for path in paths:
        np.testing.assert_array_equal(cache.load(path), selective_search(load_rgb(path), "fast", 100, None))
    assert cache.missing(paths) == []
    assert cache.compute(paths + paths) == 0
    assert npy_files(cache) == files  # nothing rewritten
    assert not list(cache.directory.glob("*.tmp*"))


def test_changed_image_is_recomputed_and_a_moved_dataset_is_not(dataset, tmp_path: Path) -> None:
    root, paths = dataset
    cache = make_cache(root, tmp_path / "cache")
    cache.compute(paths)
    before = npy_files(cache)
    stat = os.stat(paths[1])
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert cache.missing(paths) == [paths[1]]
    assert cache.compute(paths) == 1
    after = npy_files(cache)
    assert {name: after[name] for name in before} == before  # the others untouched
    assert set(after) - set(before) == {cache.file(paths[1]).name}
    # Rewritten content (new size) is a new key too.
    scene(50, size=64)[0].save(paths[2])
    assert cache.missing(paths) == [paths[2]]
    # Renaming the dataset folder keeps every key: they are relative to the root.
    moved = tmp_path / "moved"
    root.rename(moved)
    moved_paths = [str(moved / Path(path).relative_to(root)) for path in paths]
    assert make_cache(moved, tmp_path / "cache").missing(moved_paths) == [moved_paths[2]]


def test_each_setting_has_its_own_folder(dataset) -> None:
    root, paths = dataset
    base = make_cache(root)
    others = [
        make_cache(root, mode="quality"),
        make_cache(root, max_proposals=50),
        make_cache(root, width=500),
        make_cache(root, k=10),
    ]
    folders = {base.directory, *(cache.directory for cache in others)}
    assert len(folders) == 5 and all(folder.parent == root / "proposals" for folder in folders)
    assert others[2].directory.name == settings_name("fast", 100, 500) == "selective_search-fast-max100-w500-k50"
    assert others[3].directory.name == "selective_search-fast-max100-worig-k10"
    base.compute(paths[:1])
    assert all(cache.missing(paths[:1]) == paths[:1] for cache in others)
    with pytest.raises(ValueError, match="mode"):
        make_cache(root, mode="slow")


def test_load_errors_name_the_files_and_the_fix(dataset) -> None:
    root, paths = dataset
    cache = make_cache(root)
    with pytest.raises(DataError) as missing:
        cache.load(paths[0])
    message = str(missing.value)
    assert paths[0] in message and str(cache.directory) in message
    assert "prepare_data" in message and "python -m lit_models.datamodules.proposal_command" in message
    cache.compute(paths)
    file = cache.file(paths[0])
    file.write_bytes(file.read_bytes()[:70])  # truncated mid-array
    with pytest.raises(DataError, match="corrupt") as corrupt:
        cache.load(paths[0])
    assert str(file) in str(corrupt.value) and "Delete it" in str(corrupt.value)
    np.save(cache.file(paths[1]), np.zeros((3, 5)))
    with pytest.raises(DataError, match="Delete it"):
        cache.load(paths[1])
    with pytest.raises(DataError, match="cannot read image"):
        cache.load(str(root / "JPEGImages" / "absent.png"))


def test_undecodable_image_is_a_data_error_naming_it(dataset) -> None:
    root, paths = dataset
    broken = root / "JPEGImages" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    cache = make_cache(root)
    with pytest.raises(DataError) as error:
        cache.compute([paths[0], str(broken), paths[1]])
    assert str(broken) in str(error.value) and "cannot decode" in str(error.value)
    assert cache.missing(paths[:1]) == []  # what was computed before stays stored
    assert not list(cache.directory.glob("*.tmp*"))


def test_workers_give_the_same_boxes_and_carry_errors_back(tmp_path: Path) -> None:
    root = tmp_path / "data"
    paths = write_scenes(root, 2, size=128)
    one = make_cache(root, tmp_path / "one", max_proposals=2000)
    two = make_cache(root, tmp_path / "two", max_proposals=2000)
    assert one.compute(paths, workers=1) == 2
    broken = root / "broken.png"
    broken.write_bytes(b"\x89PNG truncated")
    # Two spawned processes. Each search re-seeds rand, so neither the process nor the order changes the boxes.
    with pytest.raises(DataError, match="broken.png"):
        two.compute([*paths, str(broken)], workers=2)
    two.compute(paths, workers=2)
    assert two.missing(paths) == []
    for path in paths:
        np.testing.assert_array_equal(one.load(path), two.load(path))


def test_unwritable_folder_is_a_data_error(dataset, tmp_path: Path) -> None:
    root, paths = dataset
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("")
    cache = make_cache(root, in_the_way / "proposals")  # mkdir fails, even as root
    with pytest.raises(DataError, match="data.proposal_dir") as error:
        cache.compute(paths)
    assert str(cache.directory) in str(error.value) and "writable folder" in str(error.value)
    cache = make_cache(root, tmp_path / "cache")
    cache.directory.mkdir(parents=True)
    cache.file(paths[1]).mkdir()  # the rename onto the second image's file fails
    with pytest.raises(DataError, match="data.proposal_dir"):
        cache.compute(paths)
    assert cache.missing(paths) == paths[1:] and not list(cache.directory.glob("*.tmp*"))


def test_read_only_folder_is_a_data_error_unless_complete(dataset, tmp_path: Path) -> None:
    root, paths = dataset
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("chmod does not stop this user from writing (root)")
        for cache in (make_cache(root, locked / "proposals"), make_cache(root, locked)):
            with pytest.raises(DataError, match="data.proposal_dir") as error:
                cache.compute(paths)
            assert str(cache.directory) in str(error.value)
        # A complete cache needs no write: one in a read-only place is read as it is.
        done = make_cache(root, tmp_path / "done")
        done.compute(paths)
        done.directory.chmod(0o500)
        assert done.compute(paths) == 0 and len(done.load(paths[0])) > 0
        done.directory.chmod(0o700)
    finally:
        locked.chmod(0o700)


def test_command_line_fills_the_cache(dataset, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, paths = dataset
    main([str(root), "--mode", "fast", "--max-proposals", "100", "--width", "none", "--workers", "1"])
    assert "3 of 3 images computed" in capsys.readouterr().out
    assert make_cache(root).missing(paths) == []
    # The command a missing file's error names fills exactly the cache that raised it.
    cache = make_cache(root, tmp_path / "other folder", mode="quality", max_proposals=30, width=80, k=20)
    with pytest.raises(DataError) as error:
        cache.load(paths[0])
    assert cache.command() in str(error.value)
    command = shlex.split(cache.command())
    assert command[:3] == ["python", "-m", "lit_models.datamodules.proposal_command"]
    main([*command[3:], "--workers", "1"])
    assert cache.missing(paths) == [] and len(cache.load(paths[0])) <= 30


# --------------------------------------------------------------------------------------------------------- recall


def test_recall_counts_ground_truth_covered_at_the_threshold() -> None:
    boxes = [np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32), np.array([[0, 0, 4, 4]]), np.zeros((0, 4))]
    found = [
        np.array([[0, 0, 10, 5], [22, 22, 40, 40]], np.float32),  # IoU exactly 0.5 with the first, 0.81 with the second
        np.zeros((0, 4), np.float32),  # the third box is never found
        np.array([[1, 1, 5, 5]], np.float32),  # proposals of an image without objects count for nothing
    ]
    assert proposal_recall(found, boxes, 0.5) == pytest.approx(2 / 3)
    assert proposal_recall(found, boxes, 0.7) == pytest.approx(1 / 3)
    assert proposal_recall(found, boxes, 0.9) == 0.0
    assert proposal_recall([torch.as_tensor(p) for p in found], [torch.as_tensor(b) for b in boxes]) == pytest.approx(
        2 / 3
    )
    stats = proposal_stats(found, boxes)
    assert stats == ProposalStats(images=3, boxes=3, mean_proposals=1.0, recall_50=2 / 3, recall_70=1 / 3)
    assert "recall 0.667 at IoU 0.5" in str(stats)
    with pytest.raises(ValueError, match="2 images"):
        proposal_recall(found[:2], boxes)


def test_recall_without_ground_truth_is_nan() -> None:
    assert np.isnan(proposal_recall([np.array([[0, 0, 5, 5]])], [np.zeros((0, 4))]))
    assert np.isnan(proposal_recall([], []))
    stats = proposal_stats([np.array([[0, 0, 5, 5]], np.float32)], [np.zeros((0, 4))])
    assert stats.boxes == 0 and stats.mean_proposals == 1 and np.isnan(stats.recall_50) and np.isnan(stats.recall_70)
