"""Scale jittering against fixed training scales (VGG, Simonyan & Zisserman 2015, §3.1 and Table 3) on the embedded
digits; print a markdown table.

    python benchmarks/augmentation.py                          # seeds 0 1 2, 5 epochs
    python benchmarks/augmentation.py --seeds 0 --epochs 2 --keep RUNS

Every run is the CIFAR ResNet-20 recipe on the embedded MNIST digits with the `vgg` preset at one training scale,
everything else equal (the recipe's own rotation and rescaling turned off, so the scale is the only geometric
augmentation):

    lit-models fit --config classification/resnet20_cifar_digits --data.init_args.preset vgg \\
        --data.init_args.shorter_side [LOW,HIGH] --data.init_args.rotation 0 --data.init_args.scale_jitter 0 \\
        --trainer.max_epochs E --seed_everything S

with S (the shorter side before the random 28-px crop, in the paper's pixels for a 224 crop: x 28/224 here) fixed
at 256, fixed at 384, or drawn uniform in [256, 512] for every image (scale jittering, the preset as it is). Each
run's last checkpoint (the cosine schedule ends at lr 0) is then scored on the 1,000 test digits at three test
scales Q: the image's shorter side resized to Q x 28/224, then the central 28-px crop. Q = 256 is the recipe's own
evaluation (what `lit-models test` reports); the paper tests a fixed-S net at Q = S and a jittered one at Q = 384.
Runs go one at a time, each with --threads torch threads (two trainings sharing 2 cores slow each other
several-fold); fit time is the whole `lit-models fit` process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

RECIPE = "classification/resnet20_cifar_digits"
# label -> the shorter side S range (the paper's pixels for a 224 crop)
SCALES = {"fixed S = 256": (256, 256), "fixed S = 384": (384, 384), "jittered S in [256, 512]": (256, 512)}
TEST_SCALES = (256, 384, 512)


def fit(shorter_side: tuple[int, int], seed: int, epochs: int, save_dir: Path, threads: int) -> tuple[Path, float]:
    """(the run's last checkpoint, the fit's wall seconds)."""
    command = [sys.executable, "-m", "lit_models", "fit", "--config", RECIPE, "--data.init_args.preset", "vgg",
               "--data.init_args.shorter_side", f"[{shorter_side[0]},{shorter_side[1]}]",
               "--data.init_args.rotation", "0", "--data.init_args.scale_jitter", "0",
               "--trainer.max_epochs", str(epochs), "--seed_everything", str(seed), "--trainer.enable_progress_bar",
               "false", "--trainer.logger.init_args.save_dir", str(save_dir)]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    seconds = time.perf_counter() - start
    (run,) = save_dir.glob("*/version_*")
    return run / "checkpoints" / "last.ckpt", seconds


def load_test_digits() -> tuple[list[Image.Image], torch.Tensor]:
    """The 1,000 embedded test digits (exported to the cache on first use) and their labels."""
    from lit_models.datamodules.image_folder import ImageFolderDataModule

    data = ImageFolderDataModule(num_workers=0)
    data.prepare_data()
    data.setup("test")
    samples = data.datasets["test"].samples
    images = [Image.open(path).convert("RGB") for path, _ in samples]
    return images, torch.tensor([label for _, label in samples])


def top1_at_scales(checkpoint: Path, images: list[Image.Image], labels: torch.Tensor) -> list[float]:
    """Test top-1 at each of TEST_SCALES: shorter side Q x image_size / 224, then the central image_size crop."""
    import lit_models

    module = lit_models.load(checkpoint, device="cpu")
    spec = module.data_spec
    scores = []
    for scale in TEST_SCALES:
        transform = v2.Compose([v2.ToImage(), v2.Resize(round(scale * spec.image_size / 224), antialias=True),
                                v2.CenterCrop(spec.image_size), v2.ToDtype(torch.float32, scale=True),
                                v2.Normalize(spec.mean, spec.std)])  # fmt: skip
        inputs = torch.stack([transform(image) for image in images])
        with torch.no_grad():
            predicted = torch.cat([module.net(batch).argmax(1) for batch in inputs.split(250)])
        scores.append((predicted == labels).float().mean().item())
    return scores


def spread(values: list[float]) -> str:
    """min - max (mean) over seeds, in %."""
    if len(values) == 1:
        return f"{100 * values[0]:.1f} %"
    return f"{100 * min(values):.1f} – {100 * max(values):.1f} % ({100 * np.mean(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training and of the scoring")
    parser.add_argument("--keep", type=Path, help="write the runs here and keep them")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, labels = load_test_digits()
    header = " | ".join(f"test top-1, Q = {q}" + (" (the recipe's)" if q == 256 else "") for q in TEST_SCALES)
    rows = [f"| training scale | {header} | fit time (mean) |", "|---|" + "---:|" * (len(TEST_SCALES) + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for label, shorter_side in SCALES.items():
            scores, seconds = [], []
            for seed in args.seeds:
                save_dir = base / f"S{shorter_side[0]}-{shorter_side[1]}" / f"seed{seed}"
                checkpoint, fit_seconds = fit(shorter_side, seed, args.epochs, save_dir, args.threads)
                scores.append(top1_at_scales(checkpoint, images, labels))
                seconds.append(fit_seconds)
                print(f"{label}, seed {seed}: top-1 {scores[-1]}, {fit_seconds:.0f} s", file=sys.stderr, flush=True)
            columns = " | ".join(spread([score[i] for score in scores]) for i in range(len(TEST_SCALES)))
            rows.append(f"| {label} | {columns} | {np.mean(seconds):.0f} s |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
