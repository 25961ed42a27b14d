"""Training speed on the GPU it finds: our Lightning training step against a raw PyTorch loop, bf16-mixed with
channels_last against fp32, and the data path feeding it; print a markdown table against the targets.

    python benchmarks/gpu.py                          # ResNet-50, 224 px, batch 64, on the GPU (none: says so, exit 0)
    python benchmarks/gpu.py --batch_size 128 --rounds 5
    python benchmarks/gpu.py --device cpu --tiny      # the same code on the CPU with a tiny ResNet: a check, < 1 min

Runs, each for ``--steps`` timed training steps after ``--warmup`` untimed ones (cuDNN's autotuning, the first
allocations), one after another in each of ``--rounds`` rounds, and the median over the rounds reported:

- raw: a plain PyTorch loop (forward, cross-entropy, backward, SGD step) on synthetic batches already on the device;
- lightning: ``lit_models.ResNet`` (the same net and SGD settings) under ``Trainer.fit`` on the same batches;
- lightning fp32: the same in float32, without channels_last;
- lightning + ImageFolder: the same as lightning, fed by ``ImageFolderDataModule``'s train loader (the imagenet
  preset: decode, random resized crop, flip, normalise; ``--workers`` processes) on JPEGs generated into a
  temporary folder;
- loader alone: that train loader iterated without training: what the data path can deliver.

Every run but "lightning fp32" is in bf16-mixed precision with channels_last. Targets:
lightning >= 0.97 x raw (what Lightning's loop costs), lightning >= 1.5 x lightning fp32 (what bf16 and channels_last
buy), lightning + ImageFolder >= 0.97 x lightning (the loader keeps up).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from lit_models import ImageFolderDataModule, ResNet

FULL = {"depth": 50, "width_mult": 1.0, "image_size": 224, "batch_size": 64, "steps": 30, "warmup": 10, "images": 1024,
        "workers": 8}  # fmt: skip
TINY = {"depth": 18, "width_mult": 0.125, "image_size": 32, "batch_size": 8, "steps": 3, "warmup": 1, "images": 32,
        "workers": 1}  # fmt: skip
PRECISION = "bf16-mixed"  # with channels_last: the fast setting on GPUs since Ampere
CLASSES = 10
SGD = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}
TARGETS = {"lightning / raw": 0.97, "lightning / lightning fp32": 1.5, "lightning + ImageFolder / lightning": 0.97}


def synthetic_batches(count: int, batch_size: int, side: int, device: torch.device) -> list[tuple]:
    """``count`` batches of random images and labels, made on the device once: no data path in the timing."""
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(batch_size, 3, side, side, generator=generator).to(device),
            torch.randint(0, CLASSES, (batch_size,), generator=generator).to(device),
        )
        for _ in range(count)
    ]


def write_jpegs(root: Path, count: int, side: int) -> Path:
    """``count`` JPEGs of a filled ellipse on a colour gradient, of about ``side`` * 8 / 7 px (the preset's random
    resized crop then takes its ``side``), under root/train/<class>/."""
    rng = np.random.default_rng(0)
    size = side * 8 // 7
    for index in range(count):
        label = index % CLASSES
        folder = root / "train" / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        ramp = np.linspace(0, 1, size)[None, :, None]
        start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        pixels = (start + (end - start) * ramp) * np.ones((size, size, 1))
        image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
        x, y = rng.integers(0, size // 2, 2)
        ImageDraw.Draw(image).ellipse((x, y, x + size // 2, y + size // 2), fill=tuple(rng.integers(0, 256, 3)))
        image.save(folder / f"{index:05d}.jpg", quality=90)
    return root


class Batches(torch.utils.data.Dataset):
    """Pre-made batches served as they are (``DataLoader(batch_size=None)``): the raw loop's data for Lightning."""

    def __init__(self, batches: list[tuple]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple:
        return self.batches[index]


class StepTimer(pl.Callback):
    """Seconds from the first timed step's start to the last step's end (the device synchronised at both)."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device, self.start, self.seconds = warmup, device, 0.0, 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.warmup:
            synchronize(self.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.start


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_module(size: dict, channels_last: bool) -> ResNet:
    torch.manual_seed(0)
    module = ResNet(
        num_classes=CLASSES,
        depth=size["depth"],
        width_mult=size["width_mult"],
        optimizer=lambda params: torch.optim.SGD(params, **SGD),
    )
    return module.to(memory_format=torch.channels_last) if channels_last else module


def raw_loop(size: dict, batches: list[tuple], device: torch.device) -> float:
    """Seconds of ``size["steps"]`` steps of a plain loop, after the warm-up steps."""
    net = build_module(size, channels_last=True).net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), **SGD)
    net.train()
    for step in range(size["warmup"] + size["steps"]):
        if step == size["warmup"]:
            synchronize(device)
            start = time.perf_counter()
        images, labels = batches[step % len(batches)]
        with torch.autocast(device.type, dtype=torch.bfloat16):  # what bf16-mixed does in Lightning
            loss = F.cross_entropy(net(images.contiguous(memory_format=torch.channels_last)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return time.perf_counter() - start


def lightning_fit(size: dict, device: torch.device, precision: str, channels_last: bool, train_data) -> float:
    """Seconds of ``size["steps"]`` steps of ``Trainer.fit`` after the warm-up steps, on ``train_data`` (a
    DataLoader of batches or a DataModule)."""
    module = build_module(size, channels_last)
    timer = StepTimer(size["warmup"], device)
    trainer = pl.Trainer(
        accelerator=device.type, devices=1, precision=precision, max_steps=size["warmup"] + size["steps"],
        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[timer],
    )  # fmt: skip
    if isinstance(train_data, pl.LightningDataModule):
        trainer.fit(module, datamodule=train_data)
    else:
        trainer.fit(module, train_dataloaders=train_data)
    return timer.seconds


def loader_alone(size: dict, data: ImageFolderDataModule) -> float:
    """Seconds to draw ``size["steps"]`` batches from the train loader after the warm-up ones (workers started)."""
    data.setup("fit")
    loader = data.train_dataloader()
    batches = (batch for _ in iter(int, 1) for batch in loader)  # epoch after epoch, as training draws them
    for step in range(size["warmup"] + size["steps"]):
        if step == size["warmup"]:
            start = time.perf_counter()
        next(batches)
    return time.perf_counter() - start


def measure(size: dict, device: torch.device, rounds: int, folder: Path) -> dict:
    """Seconds per run and round, the runs alternating within each round."""
    batches = synthetic_batches(min(size["warmup"] + size["steps"], 8), size["batch_size"], size["image_size"], device)
    synthetic = torch.utils.data.DataLoader(Batches(batches), batch_size=None, shuffle=False)
    root = write_jpegs(folder, size["images"], size["image_size"])

    def image_folder() -> ImageFolderDataModule:
        return ImageFolderDataModule(
            str(root), preset="imagenet", image_size=size["image_size"], batch_size=size["batch_size"],
            num_workers=size["workers"],
        )  # fmt: skip

    runs: dict[str, Callable[[], float]] = {
        "raw": lambda: raw_loop(size, batches, device),
        "lightning": lambda: lightning_fit(size, device, PRECISION, True, synthetic),
        "lightning fp32": lambda: lightning_fit(size, device, "32-true", False, synthetic),
        "lightning + ImageFolder": lambda: lightning_fit(size, device, PRECISION, True, image_folder()),
        "loader alone": lambda: loader_alone(size, image_folder()),
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            seconds[name].append(run())
    return seconds


def report(seconds: dict, size: dict, device_name: str) -> str:
    """The markdown table: each run's steps/s and images/s (median over rounds), then each target's ratio."""
    steps = {name: size["steps"] / statistics.median(values) for name, values in seconds.items()}
    lines = [
        f"ResNet-{size['depth']} (width x{size['width_mult']}), {size['image_size']} px, batch {size['batch_size']}, "
        f"{PRECISION} + channels_last unless named; {device_name}; median of {len(next(iter(seconds.values())))} "
        f"rounds of {size['steps']} steps after {size['warmup']} warm-up steps",
        "",
        "| run | steps/s | images/s |",
        "|---|---:|---:|",
        *(f"| {name} | {rate:.2f} | {rate * size['batch_size']:,.0f} |" for name, rate in steps.items()),
        "",
        "| ratio | measured | target | |",
        "|---|---:|---:|---|",
    ]
    for ratio, target in TARGETS.items():
        numerator, denominator = ratio.split(" / ")
        value = steps[numerator] / steps[denominator]
        lines.append(f"| {ratio} | {value:.2f}x | >= {target}x | {'met' if value >= target else 'missed'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="auto: the GPU, if any")
    parser.add_argument("--tiny", action="store_true", help="a tiny ResNet-18 at 32 px, a few steps: a quick check")
    parser.add_argument("--batch_size", type=int, help="images per step (default 64; tiny: 8)")
    parser.add_argument("--steps", type=int, help="timed steps per run (default 30; tiny: 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every run, alternating (default 3)")
    parser.add_argument("--workers", type=int, help="the ImageFolder loader's worker processes (default 8; tiny: 1)")
    args = parser.parse_args(argv)
    if args.device in ("auto", "cuda") and not torch.cuda.is_available():
        print("no GPU found (torch.cuda.is_available() is False): nothing measured. On the CPU: --device cpu --tiny")
        return 0
    device = torch.device("cuda" if args.device in ("auto", "cuda") else "cpu")
    size = {**(TINY if args.tiny else FULL)}
    given = {"batch_size": args.batch_size, "steps": args.steps, "workers": args.workers}
    size.update({key: value for key, value in given.items() if value is not None})
    if device.type == "cpu":  # threads of one process wait for each other on cores the loader's workers share
        torch.set_num_threads(1)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels (in warm-up)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    with tempfile.TemporaryDirectory() as folder:
        seconds = measure(size, device, args.rounds, Path(folder))
    print(report(seconds, size, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
