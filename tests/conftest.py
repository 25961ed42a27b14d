"""Shared fixtures: tiny real image trees under tmp_path, and an isolated cache for embedded data."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_only as fabric_rank_zero_only
from lightning_utilities.core.rank_zero import rank_zero_only as utils_rank_zero_only
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["circle", "square", "stripes"]


def draw(kind: str, rng: np.random.Generator, size: int = 24) -> Image.Image:
    """A noisy drawing of a shape: learnable in a few steps, yet no two images alike."""
    image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    cx, cy = rng.integers(8, size - 8, 2)
    if kind == "circle":
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < 30
    elif kind == "square":
        mask = (abs(xx - cx) < 5) & (abs(yy - cy) < 5)
    else:
        mask = (xx // 3) % 2 == 0
    image[mask] = (200, 180, 160)
    return Image.fromarray(image)


def make_image_tree(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """root/<split>/<class>/<n>.png for each split in counts (images per class)."""
    rng = np.random.default_rng(seed)
    for split, per_class in counts.items():
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(per_class):
                draw(name, rng).save(folder / f"{index:03d}.png")
    return root


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """3 classes; 8 train, 3 val, 3 test images per class (9 val: odd, so DDP padding would show)."""
    return make_image_tree(tmp_path / "shapes", {"train": 8, "val": 3, "test": 3})


@pytest.fixture
def one_thread():
    """Tiny nets run fastest on one thread; several spin and stall when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def seeded_one_thread(one_thread):
    """One thread, and torch's generator at seed 0: tiny nets built with the same random weights in every run."""
    torch.manual_seed(0)


def tiny_quickstart(tree: Path) -> list[str]:
    """The quickstart recipe on a tiny image tree, with a tiny net, for speed."""
    return [
        "--config", str(REPO / "configs" / "quickstart.yaml"),
        "--data.init_args.root", str(tree),
        "--data.init_args.image_size", "16",
        "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "8",
        "--model.init_args.width_mult", "0.125",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip


@pytest.fixture(autouse=True)
def rank_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as rank 0: a DDP Trainer built in-process for another rank (the SLURM overlay test) sets
    Lightning's global rank, and loggers of later tests would then write nothing."""
    for rank_zero_only in (fabric_rank_zero_only, utils_rank_zero_only):
        monkeypatch.setattr(rank_zero_only, "rank", 0, raising=False)


@pytest.fixture(scope="module")
def shapes_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """VOC-layout scenes of 64 px with masks and boxes: 4 train, 3 val, 3 test."""
    from lit_models.datamodules.sources.shapes import export_shapes

    return export_shapes(tmp_path_factory.mktemp("scenes") / "VOC", num_train=4, num_val=3, num_test=3, size=64)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Embedded data goes to one per-session cache, never to the user's ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "lit_models_cache"
    monkeypatch.setenv("LIT_MODELS_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ImageNet-style folder: where a recipe reads the user's images, tests point it here."""
    return make_image_tree(tmp_path_factory.mktemp("cfg") / "t", {"train": 2, "val": 1})


@pytest.fixture(scope="session")
def voc_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny VOC-layout folder: where a recipe reads PASCAL VOC, tests point it here."""
    from lit_models.datamodules.sources.shapes import export_shapes

    return export_shapes(tmp_path_factory.mktemp("cfg") / "voc", num_train=2, num_val=1, size=32)


def stand_ins(recipe_text: str, tree: Path, voc_tree: Path) -> list[str]:
    """Arguments that let a recipe on real data build here: its root pointed at a tiny folder of the same layout,
    no local ImageNet weight file, and no groups of the real data's class names."""
    args = []
    if "root:" in recipe_text:
        voc_layout = "SegmentationDataModule" in recipe_text or "DetectionDataModule" in recipe_text
        args += ["--data.init_args.root", str(voc_tree if voc_layout else tree)]
    if "weights_backbone:" in recipe_text:
        args += ["--model.init_args.weights_backbone", "null"]
    if "similar_classes:" in recipe_text:  # groups of VOC's class names, which the stand-in folder's are not
        args += ["--model.init_args.similar_classes", "null"]
    return args


def needs_own_processes(args: tuple[str, ...]) -> bool:
    """DDP starts its other ranks by running the command line again, so a run of several processes needs its own."""
    text = " ".join(args)
    return "ddp" in text or "--trainer.devices 2" in text


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """The console entry point, in this process where it can run there (a DDP run, or one with its own environment,
    gets a subprocess); fails the test with its output on error."""
    if env is not None or needs_own_processes(args):
        return run_in_subprocess(args, cwd, env, timeout)
    return run_in_this_process(args, cwd)


def run_in_subprocess(args: tuple[str, ...], cwd: Path, env: dict | None, timeout: int) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "lit_models", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"lit-models {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def run_in_this_process(args: tuple[str, ...], cwd: Path) -> subprocess.CompletedProcess:
    """``lit-models ARGS`` as ``lit_models.commands.main`` runs it, its stdout and stderr captured, and everything it
    changes of the process put back: the working folder, the environment (Lightning's seed variable), warning
    filters, and the handlers and filters of the loggers it configures. Importing torch and Lightning again for each
    command is what makes a subprocess slow."""
    from lit_models.commands import main
    from lit_models.quiet import LOG_LINES, MODEL_SUMMARY

    loggers = [logging.getLogger(name) for name in ("lit_models", MODEL_SUMMARY, *LOG_LINES)]
    saved = [(logger, list(logger.handlers), list(logger.filters), logger.level) for logger in loggers]
    environment, folder, argv = dict(os.environ), os.getcwd(), sys.argv
    out, err, status = io.StringIO(), io.StringIO(), 0
    try:
        os.chdir(cwd)
        sys.argv = ["lit-models", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                main(list(args))
            except SystemExit as stop:
                status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            except Exception:
                traceback.print_exc()
                status = 1
    finally:
        os.chdir(folder)
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environment)
        for logger, handlers, filters, level in saved:
            logger.handlers[:], logger.filters[:] = handlers, filters
            logger.setLevel(level)
    result = subprocess.CompletedProcess(["lit-models", *args], status, out.getvalue(), err.getvalue())
    if status != 0:
        raise AssertionError(f"lit-models {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def last_metrics(path: Path) -> dict[str, float]:
    """The last row of a CSVLogger's metrics.csv, its empty cells left out."""
    rows = path.read_text().splitlines()
    return {key: float(value) for key, value in zip(rows[0].split(","), rows[-1].split(","), strict=True) if value}
