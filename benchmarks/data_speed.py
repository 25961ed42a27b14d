"""Training-loader speed on photograph-sized JPEGs: torchvision's ImageFolder (PIL decoding) against
ImageFolderDataModule (torchvision's libjpeg-turbo decoding into uint8 tensors); print a markdown table.

    python benchmarks/data_speed.py                      # 400 images, 2 workers, batch 32, 4 rounds
    python benchmarks/data_speed.py --images 800 --rounds 5 --workers 4

The images are generated, deterministic and photograph-like (a gradient sky, overlapping soft shapes, a texture
with natural images' 1/f spectrum; no pixel noise), 500 x 375 like PASCAL VOC's, JPEG quality 90, in an ImageFolder
tree of four classes under a temporary folder. Every loader applies the same training transform, ImageNet's
(RandomResizedCrop 224 + horizontal flip, then ToDtype(float32) and Normalize, transforms v2), with the same
workers, batch size and persistent workers:

    (a) torchvision.datasets.ImageFolder, PIL decoding (its default loader), in a DataLoader
    (b) ImageFolderDataModule(root, preset="imagenet", image_size=224).train_dataloader(): uint8 batches, which the
        trainer normalises on its device (on_after_batch_transfer; on a GPU a fraction of a millisecond a batch)
    (b') the same, each batch normalised here in the main process, as a trainer on this CPU does
    (c) (b) on a copy of the tree resized beforehand to a shorter side of 256 (less to decode)
    (d) (b) on the tree prepared as LitData shards with a shorter side of 256 (lit-models data prepare)
    (d') (d) normalised in the main process
    --prefetch-factor N: (b) with DataLoader's prefetch_factor N (batches each worker keeps ready; PyTorch's is 2)
    on a machine with CUDA: (b) with decode_device="cuda" (the workers read the files; nvJPEG decodes and the
    transform runs on the GPU, as the DataModule does before a batch reaches the model)

Each loader is built once and warmed up by one pass (workers started), then every round times one full pass of
each, the loaders alternating, so a slower moment of a shared machine falls on all of them. Images/s counts the
images the loader yields (the DataModule drops a last partial training batch). Another loader is one more entry
of ``rows`` in ``main``: a name and a function that builds it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

from lit_models.datamodules.image_folder import ImageFolderDataModule, decode_batch
from lit_models.datamodules.shard_writer import prepare_shards
from lit_models.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD

CLASSES = ("beach", "forest", "city", "room")
SIZE = (500, 375)  # width x height of a typical PASCAL VOC photograph
QUALITY = 90
TEXTURE_STD = 16.0  # grey levels: about 60 KB a file at quality 90, PASCAL VOC's photographs are 50-150 KB
LoaderFactory = Callable[[], Iterable]


def photograph(rng: np.random.Generator) -> Image.Image:
    """A smooth scene: a two-colour gradient sky, 6-16 overlapping soft shapes, and a texture with the 1/f spectrum
    of natural images (structure at every scale, unlike sensor noise) that brings the file to a photograph's size."""
    width, height = SIZE
    top, bottom = rng.integers(0, 256, (2, 3))
    ramp = np.linspace(0, 1, height)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp).repeat(width, axis=1)  # H x W x 3
    picture = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(rng.integers(6, 17)):
        x, y = rng.integers(-50, width), rng.integers(-50, height)
        w, h = rng.integers(30, 250, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x, y, x + w, y + h), fill=colour)
    picture = picture.filter(ImageFilter.GaussianBlur(2))
    frequency = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :])
    frequency[0, 0] = 1.0
    spectrum = (rng.standard_normal(frequency.shape) + 1j * rng.standard_normal(frequency.shape)) / frequency
    texture = np.fft.irfft2(spectrum, s=(height, width))  # H x W
    texture *= TEXTURE_STD / texture.std()
    return Image.fromarray((np.asarray(picture) + texture[..., None]).clip(0, 255).astype(np.uint8))


def make_tree(root: Path, images: int, seed: int = 0) -> Path:
    """root/train/<class>/NNNN.jpg (``images`` in all) and root/val/<class>/ (two each, so train is not split)."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", images), ("val", 2 * len(CLASSES))):
        for index in range(count):
            folder = root / split / CLASSES[index % len(CLASSES)]
            folder.mkdir(parents=True, exist_ok=True)
            photograph(rng).save(folder / f"{index:04d}.jpg", quality=QUALITY)
    return root


def resized_copy(root: Path, target: Path, shorter_side: int = 256) -> Path:
    """A copy of the tree with every image resized (antialiased) to ``shorter_side``, JPEG quality 90."""
    for path in sorted(root.rglob("*.jpg")):
        out = target / path.relative_to(root)
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            scale = shorter_side / min(image.size)
            size = (round(image.width * scale), round(image.height * scale))
            image.convert("RGB").resize(size, Image.Resampling.BILINEAR, reducing_gap=None).save(out, quality=QUALITY)
    return target


def torchvision_loader(root: Path, workers: int, batch_size: int) -> DataLoader:
    """(a): torchvision's ImageFolder and default PIL loader, with the imagenet preset's training transform."""
    transform = v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    dataset = datasets.ImageFolder(str(root / "train"), transform=transform)
    return DataLoader(dataset, batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0)


def datamodule_loader(root: Path, workers: int, batch_size: int) -> DataLoader:
    """(b), (c), (d): ImageFolderDataModule's training loader."""
    data = ImageFolderDataModule(
        root=str(root), preset="imagenet", image_size=224, batch_size=batch_size, num_workers=workers
    )
    data.setup("fit")
    return data.train_dataloader()


class Normalised:
    """(b'), (d'): a loader's batches normalised by ImageFolderDataModule's ``on_after_batch_transfer`` here, in
    the main process, on the CPU (what a trainer without a GPU does after each batch arrives)."""

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader
        self.data = ImageFolderDataModule(preset="imagenet")  # the default mean and std, as (a) and the loaders use

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            yield self.data.on_after_batch_transfer(batch, 0)


def prefetching_loader(root: Path, workers: int, batch_size: int, prefetch_factor: int) -> DataLoader:
    """(b) with another prefetch_factor: the DataModule's dataset, collation and loader settings otherwise."""
    loader = datamodule_loader(root, workers, batch_size)
    return DataLoader(
        loader.dataset,
        batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=loader.collate_fn,
        persistent_workers=True,
        worker_init_fn=loader.worker_init_fn,
        drop_last=loader.drop_last,
        prefetch_factor=prefetch_factor,
    )


class GPUDecoding:
    """(b) with decode_device="cuda": each batch of file bytes decoded by nvJPEG, transformed and normalised on the
    GPU (``image_folder.decode_batch`` and ``on_after_batch_transfer``, what the DataModule does before a batch
    reaches the model), the GPU waited for at the end of each pass."""

    def __init__(self, root: Path, workers: int, batch_size: int) -> None:
        data = ImageFolderDataModule(
            root=str(root), preset="imagenet", image_size=224, batch_size=batch_size, num_workers=workers,
            decode_device="cuda",
        )  # fmt: skip
        data.setup("fit")
        self.data, self.loader, self.transform = data, data.train_dataloader(), data.datasets["train"].transform

    def __iter__(self) -> Iterator[dict[str, Any]]:
        device = torch.device("cuda")
        for batch in self.loader:
            yield self.data.on_after_batch_transfer(decode_batch(batch, self.transform, device), 0)
        torch.cuda.synchronize(device)


def shards_loader(root: Path, shards: Path, workers: int, batch_size: int) -> Iterable:
    """(d): the tree prepared as shards with a shorter side of 256 (``lit-models data prepare``, done here before
    the timing), read by ImageFolderDataModule's training loader."""
    prepare_shards(ImageFolderDataModule(str(root)), shards, shorter_side=256, workers=max(workers, 1))
    return datamodule_loader(shards, workers, batch_size)


def batch_images(batch: Any) -> int:
    """Images in a batch: a dict batch's ``image``, or the first element of an (images, labels) pair."""
    return len(batch["image"] if isinstance(batch, dict) else batch[0])


def one_pass(loader: Iterable) -> tuple[int, float]:
    """(images, seconds) of one full pass."""
    start = time.perf_counter()
    count = sum(batch_images(batch) for batch in loader)
    return count, time.perf_counter() - start


def measure(rows: dict[str, LoaderFactory], rounds: int) -> dict[str, list[float]]:
    """Images/s of each row's loader in every round: each built once and warmed up, then the rows alternate."""
    loaders = {name: build() for name, build in rows.items()}
    for loader in loaders.values():
        one_pass(loader)
    speeds: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(rounds):
        for name, loader in loaders.items():
            count, seconds = one_pass(loader)
            speeds[name].append(count / seconds)
    return speeds


def table(speeds: dict[str, list[float]]) -> str:
    """Markdown: loader, median images/s (min-max over the rounds), ratio of medians to the first row."""
    reference = statistics.median(next(iter(speeds.values())))
    lines = ["| loader | images/s, median (min-max) | ratio to (a) |", "|---|---|---|"]
    for name, values in speeds.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.0f} ({min(values):.0f}-{max(values):.0f}) | {median / reference:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400, help="training images generated")
    parser.add_argument("--rounds", type=int, default=4, help="timed passes of every loader (at least 3)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of every loader")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--prefetch-factor", type=int, nargs="*", default=[], help="rows of (b) with these")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be at least 3: the median of fewer says little on a shared machine")
    with tempfile.TemporaryDirectory() as folder:
        photos = make_tree(Path(folder) / "photos", args.images)
        resized = resized_copy(photos, Path(folder) / "photos_256")
        kilobytes = np.mean([path.stat().st_size for path in photos.rglob("*.jpg")]) / 1024
        settings = (args.workers, args.batch_size)
        shards = photos.parent / "photos_shards"
        rows: dict[str, LoaderFactory] = {
            "(a) torchvision ImageFolder, PIL decoding": lambda: torchvision_loader(photos, *settings),
            "(b) ImageFolderDataModule (uint8 batches)": lambda: datamodule_loader(photos, *settings),
            "(b') (b) normalised in the main process": lambda: Normalised(datamodule_loader(photos, *settings)),
            "(c) ImageFolderDataModule, images resized to shorter side 256": lambda: datamodule_loader(
                resized, *settings
            ),
            "(d) ImageFolderDataModule on prepared shards, shorter side 256": lambda: shards_loader(
                photos, shards, *settings
            ),
            "(d') (d) normalised in the main process": lambda: Normalised(datamodule_loader(shards, *settings)),
        }
        for factor in args.prefetch_factor:
            rows[f"(b) with prefetch_factor {factor}"] = lambda factor=factor: prefetching_loader(
                photos, *settings, factor
            )
        if torch.cuda.is_available():
            rows["(b) with decode_device='cuda' (nvJPEG)"] = lambda: GPUDecoding(photos, *settings)
        speeds = measure(rows, args.rounds)
    print(
        f"{args.images} generated {SIZE[0]}x{SIZE[1]} JPEGs (quality {QUALITY}, {kilobytes:.0f} KB on average), "
        f"RandomResizedCrop 224 + flip, {args.workers} workers, batch {args.batch_size}, {args.rounds} rounds, "
        f"torch {torch.__version__}\n"
    )
    print(table(speeds))


if __name__ == "__main__":
    main()
