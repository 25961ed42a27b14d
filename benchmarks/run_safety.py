"""What the run safety nets cost (lit_models.run_safety); print two markdown tables.

    python benchmarks/run_safety.py                    # CPU or the GPU it finds, 5 rounds
    python benchmarks/run_safety.py --rounds 3 --steps 20

1. Training steps with and without ``RunSafety`` (the loss of every batch checked for NaN / inf before its backward
   pass: one device-to-host read of a flag per step, and an all-reduce of it under DDP): ``Trainer.fit`` of
   ``lit_models.ResNet`` on synthetic batches already on the device (benchmarks/gpu.py's), ``--steps`` timed steps
   after ``--warmup`` untimed ones, fp32 on the CPU, bf16-mixed on a GPU.
2. Saving one checkpoint (a ResNet's weights and SGD momentum, as ``trainer.save_checkpoint`` hands it over) with
   Lightning's ``TorchCheckpointIO`` and with ``AtomicCheckpointIO`` (written beside the target, flushed to the disk
   with fsync, renamed over it), into a temporary folder (``--folder``: another one, e.g. on the disk runs go to).

The two settings of each table alternate within every round, so a machine whose load changes slows both alike; the
median over the rounds is reported, and the ratio on / off.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from gpu import TINY, Batches, StepTimer, build_module, synthetic_batches
from pytorch_lightning.plugins.io import TorchCheckpointIO

from lit_models.run_safety import AtomicCheckpointIO, RunSafety

STEP_SIZE = {**TINY, "batch_size": 16}  # ResNet-18 x0.125 on 32 px: the per-step cost is what shows
CHECKPOINT_SIZE = {"depth": 18, "width_mult": 1.0}  # 11.7 M parameters: 47 MB of weights, as much momentum


def fit_seconds(device: torch.device, steps: int, warmup: int, batches: list, safety: bool) -> float:
    """Seconds of ``steps`` training steps after ``warmup`` ones, with or without RunSafety."""
    module = build_module(STEP_SIZE, channels_last=device.type == "cuda")
    timer = StepTimer(warmup, device)
    trainer = pl.Trainer(
        accelerator=device.type, devices=1, precision="bf16-mixed" if device.type == "cuda" else "32-true",
        max_steps=warmup + steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer, *([RunSafety()] if safety else [])],
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(Batches(batches), batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    return timer.seconds


def checkpoint() -> dict:
    """A training checkpoint's bulk: the weights and SGD's momentum buffers of a full-width ResNet-18."""
    module = build_module({**STEP_SIZE, **CHECKPOINT_SIZE}, channels_last=False)
    weights = module.state_dict()
    momentum = {name: torch.randn_like(value) for name, value in weights.items() if value.is_floating_point()}
    return {"state_dict": weights, "optimizer_states": [{"state": momentum}], "global_step": 1}


def save_seconds(io: TorchCheckpointIO, contents: dict, target: Path) -> float:
    start = time.perf_counter()
    io.save_checkpoint(contents, target)
    return time.perf_counter() - start


def table(title: str, unit: str, seconds: dict[str, list[float]], scale: float) -> str:
    (off, off_times), (on, on_times) = seconds.items()
    lines = [f"| {title} | {unit} (median) | rounds |", "|---|---|---|"]
    for name, times in seconds.items():
        lines.append(f"| {name} | {statistics.median(times) * scale:.2f} | {len(times)} |")
    ratio = statistics.median(on_times) / statistics.median(off_times)
    lines.append(f"| {on} / {off} | {ratio:.3f}x | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=None, help="where the checkpoints are saved")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (a shared machine: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batches = synthetic_batches(8, STEP_SIZE["batch_size"], STEP_SIZE["image_size"], device)
    contents = checkpoint()
    steps: dict[str, list[float]] = {"without RunSafety": [], "with RunSafety": []}
    saves: dict[str, list[float]] = {"TorchCheckpointIO (Lightning)": [], "AtomicCheckpointIO": []}
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        target = Path(folder) / "last.ckpt"
        for _ in range(args.rounds):
            for name, safety in zip(steps, (False, True), strict=True):
                steps[name].append(fit_seconds(device, args.steps, args.warmup, batches, safety))
            for name, io in zip(saves, (TorchCheckpointIO(), AtomicCheckpointIO()), strict=True):
                saves[name].append(save_seconds(io, contents, target))
        size = target.stat().st_size / 1e6
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"ResNet-18 x{STEP_SIZE['width_mult']}, batch {STEP_SIZE['batch_size']} of {STEP_SIZE['image_size']} px, "
          f"{where}: {args.steps} steps after {args.warmup}\n")  # fmt: skip
    print(table("training steps", "ms per step", steps, 1000 / args.steps))
    destination = args.folder or "the temporary folder"
    print(f"\nSaving a {size:.0f} MB checkpoint (ResNet-18 weights and SGD momentum) into {destination}\n")
    print(table("checkpoint write", "ms per save", saves, 1000))


if __name__ == "__main__":
    main()
