"""What the resumable training loader costs: the embedded MNIST digits (4,000 images of 28 px, where the per-sample
work is smallest, so any overhead shows most) through ImageFolderDataModule's training loader (a ResumableLoader:
its sampler pairs each index with a seed and each sample's augmentation draws from it) against the same dataset in
a plain shuffled DataLoader, as the package built it before; print a markdown table.

    python benchmarks/resumable_loader.py                 # 0 and 2 workers, batch 64, 4 rounds
    python benchmarks/resumable_loader.py --rounds 6 --workers 0 4

Each loader is built once and warmed up by one pass, then every round times one full pass of each, the loaders
alternating, so a slower moment of a shared machine falls on both.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader

from lit_models import ImageFolderDataModule
from lit_models.preemption import worker_init_fn


def one_pass(loader: DataLoader) -> tuple[int, float]:
    start, images = time.perf_counter(), 0
    for batch in loader:
        images += len(batch["label"])
    return images, time.perf_counter() - start


def loaders(workers: int, batch_size: int) -> dict[str, DataLoader]:
    data = ImageFolderDataModule(batch_size=batch_size, num_workers=workers)
    data.prepare_data()
    data.setup("fit")
    plain = DataLoader(data.datasets["train"], batch_size=batch_size, shuffle=True, num_workers=workers,
                       collate_fn=data.collate_fn, persistent_workers=workers > 0, worker_init_fn=worker_init_fn,
                       drop_last=True)  # fmt: skip
    return {"plain DataLoader (shuffle=True)": plain, "ResumableLoader (seeded samples)": data.train_dataloader()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| workers | loader | images/s (median) | ratio to plain |")
    print("|---|---|---|---|")
    for workers in args.workers:
        built = loaders(workers, args.batch_size)
        for loader in built.values():
            one_pass(loader)  # warm-up: workers started, files in the page cache
        rates: dict[str, list[float]] = {name: [] for name in built}
        for _ in range(args.rounds):
            for name, loader in built.items():
                images, seconds = one_pass(loader)
                rates[name].append(images / seconds)
        plain = statistics.median(next(iter(rates.values())))
        for name, measured in rates.items():
            rate = statistics.median(measured)
            print(f"| {workers} | {name} | {rate:,.0f} | {rate / plain:.2f} |")


if __name__ == "__main__":
    main()
