"""What reading a checkpoint as data costs: ``lit_models.load`` (the classes and arguments checked, the module built
within a memory budget) against Lightning's ``load_from_checkpoint(weights_only=True)`` and the DataModule rebuilt
from the same file (what ``load`` did before, and which imports what the file names), in alternating rounds.

    python benchmarks/checkpoint_load.py [--rounds 5]

Prints a markdown table: median seconds per load of each, and their ratio, for untrained nets of three sizes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_image_tree  # noqa: E402

import lit_models  # noqa: E402
from lit_models import VGG, ImageFolderDataModule, ResNet  # noqa: E402

NETS = {  # name -> module
    "ResNet-18 x0.25, 32 px": lambda: ResNet(num_classes=3, depth=18, small_input=True, width_mult=0.25),
    "ResNet-50": lambda: ResNet(num_classes=3, depth=50),
    "VGG-16": lambda: VGG(num_classes=3, depth=16),
}


def write_checkpoint(model: ResNet | VGG, data: ImageFolderDataModule, path: Path) -> None:
    """The checkpoint ``fit`` would write for ``model`` on ``data`` (weights untrained)."""
    model.use_data(data.spec)
    model.prediction_source = data
    saved = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "datamodule_hyper_parameters": dict(data.hparams),
        "pytorch-lightning_version": pl.__version__,
    }
    model.on_save_checkpoint(saved)
    torch.save(saved, path)


def lightning_load(path: Path) -> object:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    module = type_of(saved).load_from_checkpoint(path, map_location="cpu", weights_only=True)
    module.prediction_source = ImageFolderDataModule.from_checkpoint(
        saved["datamodule_hyper_parameters"], saved["class_names"]
    )
    return module


def type_of(saved: dict) -> type:
    return {"ResNet": ResNet, "VGG": VGG}[saved["lit_models"]["model"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaders = {"lit_models.load": lambda path: lit_models.load(path, device="cpu"), "Lightning": lightning_load}
    print("| net | checkpoint MiB | lit_models.load s | load_from_checkpoint s | ratio |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        root = make_image_tree(Path(folder) / "images", {"train": 1})
        data = ImageFolderDataModule(str(root), image_size=32, num_workers=0)
        for name, make in NETS.items():
            path = Path(folder) / "model.ckpt"
            write_checkpoint(make(), data, path)
            times: dict[str, list[float]] = {key: [] for key in loaders}
            for _ in range(args.rounds):  # alternating, so a load on the machine falls on both alike
                for key, load in loaders.items():
                    started = time.perf_counter()
                    load(path)
                    times[key].append(time.perf_counter() - started)
            ours, theirs = (statistics.median(times[key]) for key in loaders)
            size = path.stat().st_size / 2**20
            print(f"| {name} | {size:.0f} | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f} |")


if __name__ == "__main__":
    main()
