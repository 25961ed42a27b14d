"""The classification papers' test protocols side by side on one trained digits classifier; print a markdown table.

    python benchmarks/test_protocols.py                             # fit the quickstart, then test it 8 ways
    python benchmarks/test_protocols.py --run runs/quickstart/version_0   # reuse a finished fit run
    python benchmarks/test_protocols.py --config configs/classification/vgg11_digits.yaml   # VGG's own dense head
    python benchmarks/test_protocols.py --epochs 1 --limit 2        # a quick smoke run

The recipe is fitted once with `lit-models fit` (benchmarks/cli_runs.py), or an earlier run is reused; its best
checkpoint is then tested on the 1,000 embedded test digits under every protocol of `ImageFolderDataModule`
(`--data.init_args.test_crops` and `test_scales`, docs/classification.md "Test protocols"): the preset's own single
view, the centre crop at three scales, AlexNet's and ResNet's ten crops, GoogLeNet's 144 crops, and dense evaluation
(the whole image and its mirror image through the fully convolutional net, VGG §3.2) at one and at three scales (VGG
§4.2, ResNet §3.4). Scales Q are the papers' shorter sides for a 224 crop: x 28/224 for the 28-px digits (224 -> 28,
256 -> 32, 288 -> 36). Each test runs in this process, built as `lit-models test` builds it (`lit_models.recipe`);
the time is `Trainer.test`'s wall time, data loading included, with --threads torch threads.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from cli_runs import REPO, fit_and_test

# label -> (test_crops, test_scales); None: the option's default.
PROTOCOLS: dict[str, tuple[int | str, list[int] | None]] = {
    "1 view (the preset's evaluation, as validation)": (1, None),
    "centre crop, Q = 256": (1, [256]),
    "centre crop, Q = {224, 256, 288}": (1, [224, 256, 288]),
    "10 crops, Q = 256 (AlexNet §4.1, ResNet Table 3)": (10, None),
    "144 crops (GoogLeNet §7)": (144, None),
    "dense + mirror, Q = 224 (VGG §3.2)": ("dense", [224]),
    "dense + mirror, Q = 256": ("dense", [256]),
    "dense + mirror, Q = {224, 256, 288} (VGG §4.2, ResNet §3.4)": ("dense", [224, 256, 288]),
}


def views_per_image(crops: int | str, scales: list[int] | None) -> int:
    if crops == 144:
        return 144
    return (2 if crops == "dense" else int(crops)) * len(scales or [256])


def options(crops: int | str, scales: list[int] | None) -> str:
    shown = f"`--data.init_args.test_crops {crops}`"
    return shown + (f" `--data.init_args.test_scales [{','.join(map(str, scales))}]`" if scales else "")


def best_checkpoint(run: Path) -> Path:
    found = sorted((run / "checkpoints").glob("best-*.ckpt"))
    if not found:
        raise SystemExit(f"{run} holds no checkpoints/best-*.ckpt: pass the folder of a finished `lit-models fit` run")
    return found[-1]


def test(config: Path, checkpoint: Path, crops: int | str, scales: list[int] | None, limit: int | None,
         folder: Path) -> tuple[float, float]:  # fmt: skip
    """(test top-1, seconds of Trainer.test) of the checkpoint under one protocol; the run's config.yaml goes to
    ``folder``."""
    import lit_models

    trainer_options = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False,
                       "default_root_dir": str(folder)}  # fmt: skip
    if limit:
        trainer_options["limit_test_batches"] = limit
    model, data, trainer = lit_models.recipe(
        str(config), data={"test_crops": crops, "test_scales": scales}, trainer=trainer_options
    )
    start = time.perf_counter()
    metrics = trainer.test(model, datamodule=data, ckpt_path=str(checkpoint), verbose=False)[0]
    return metrics["test/acc_top1"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "quickstart.yaml", help="a digits recipe")
    parser.add_argument("--run", type=Path, help="a finished fit run of --config to reuse (no training)")
    parser.add_argument("--epochs", type=int, help="train this many epochs instead of the recipe's")
    parser.add_argument("--limit", type=int, help="test only this many batches of each protocol (smoke runs)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the tests (the fit uses its own)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            extra = ["--trainer.max_epochs", str(args.epochs)] if args.epochs else []
            fit_seconds, run, _ = fit_and_test(args.config, Path(tmp), *extra)
            print(f"fit {args.config.stem}: {fit_seconds:.0f} s", file=sys.stderr, flush=True)
        checkpoint = best_checkpoint(run)
        rows = ["| protocol | options | views per image | test top-1 | test time |", "|---|---|---:|---:|---:|"]
        for label, (crops, scales) in PROTOCOLS.items():
            top1, seconds = test(args.config, checkpoint, crops, scales, args.limit, Path(tmp))
            print(f"{label}: {100 * top1:.2f} %, {seconds:.1f} s", file=sys.stderr, flush=True)
            views = views_per_image(crops, scales)
            rows.append(f"| {label} | {options(crops, scales)} | {views} | {100 * top1:.2f} % | {seconds:.1f} s |")
    print(f"{args.config.stem}, {checkpoint.name}:\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
