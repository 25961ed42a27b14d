"""Train the Markov window, RNN, LSTM and GRU on MNIST-1D, the adding problem and the pydoc text; time the fused and
hand-written recurrent cells.

    python benchmarks/sequence.py [--only gru_mnist1d ...] [--keep RUNS] [--reuse RUNS] [--skip-training]

Each configs/sequence/*.yaml runs `lit-models fit`, then `test --ckpt_path best`, in fresh processes one at a time
(two trainings on 2 cores slow each other several-fold). Printed, side by side:

* MNIST-1D test accuracy beside the paper's table (Greydanus 2020: logistic 32 %, MLP 68 %, CNN 94 %, GRU 91 %).
  Target: our GRU >= 93 %.
* The adding problem at T = 200: test MSE of each model against the 0.167 of always answering 1. Target: LSTM and
  GRU <= 0.01 while the RNN stays near 0.167 (the short-term memory problem, measured).
* Character-level bits per character and perplexity on the held-out end of the pydoc text.
* Fused (torch's nn.RNN/LSTM/GRU) against hand-written cells with the same weights: training-step time (forward
  and backward) of one batch of the adding problem, the two alternating over rounds, median and ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from cli_runs import REPO, all_metrics, describe_checkpoint, fit_and_test, last_metric

from lit_models.nets.recurrent import Recurrent

CONFIGS = REPO / "configs" / "sequence"
MODELS = ("markov", "rnn", "lstm", "gru")
SOURCES = {  # source -> (the test metric, how it reads)
    "mnist1d": ("test/acc_top1", "test accuracy"),
    "adding": ("test/mse", "test MSE"),
    "text": ("test/bits_per_token", "test bits per character"),
}
MNIST1D_PAPER = {"logistic regression": 0.32, "MLP": 0.68, "CNN": 0.94, "GRU": 0.91, "human": 0.96}
ADDING_BASELINE = 1 / 6  # the variance of a sum of two U(0, 1): MSE of always answering its mean, 1


def run(name: str, save_dir: Path, reuse: Path | None) -> dict:
    """Fit and test one config (or read an earlier --keep folder's runs)."""
    if reuse and (reuse / name).is_dir():
        runs = sorted((reuse / name).glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
        written = [path.stat().st_mtime for path in runs[0].rglob("*") if path.is_file()]
        fit_seconds, fit_run, test_run = max(written) - min(written), runs[0], runs[-1]
    else:
        fit_seconds, fit_run, test_run = fit_and_test(CONFIGS / f"{name}.yaml", save_dir)
    source = name.split("_", 1)[1]
    metric = SOURCES[source][0]
    about = describe_checkpoint(fit_run)
    row = {"config": name, "params": about["params"], "epochs": about["epochs"], "fit_s": fit_seconds,
           "test": last_metric(test_run, metric),
           "val": all_metrics(fit_run, metric.replace("test/", "val/"))}  # fmt: skip
    if source == "text":
        row["perplexity"] = last_metric(test_run, "test/perplexity")
    print(f"done {name}: {metric} {row['test']:.4f} in {fit_seconds:.0f} s", file=sys.stderr)
    return row


def time_cells(rounds: int) -> list[dict]:
    """Median seconds of one training step (forward + backward) of fused and manual cells, same weights."""
    torch.manual_seed(0)
    inputs = torch.rand(64, 200, 2)  # one adding-problem batch: N x T x 2
    rows = []
    for kind in ("rnn", "lstm", "gru"):
        nets = {cell: Recurrent(kind, 2, 128, cell=cell) for cell in ("fused", "manual")}
        nets["manual"].load_state_dict(nets["fused"].state_dict())
        seconds: dict[str, list[float]] = {cell: [] for cell in nets}
        for _ in range(rounds + 1):  # the first round warms up
            for cell, net in nets.items():
                start = time.perf_counter()
                outputs, _ = net(inputs)
                outputs[:, -1].sum().backward()
                seconds[cell].append(time.perf_counter() - start)
                net.zero_grad()
        fused, manual = (statistics.median(seconds[cell][1:]) for cell in ("fused", "manual"))
        rows.append({"kind": kind, "fused_ms": 1000 * fused, "manual_ms": 1000 * manual, "ratio": manual / fused})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="config names (stems) to run; default all twelve")
    parser.add_argument("--keep", type=Path, help="keep the runs (checkpoints, metrics) in this folder")
    parser.add_argument("--reuse", type=Path, help="an earlier --keep folder: its configs are not trained again")
    parser.add_argument("--rounds", type=int, default=10, help="timed training steps per cell")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    names = [f"{model}_{source}" for source in SOURCES for model in MODELS]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in (n for n in names if not args.only or n in args.only):
            rows[name] = run(name, args.keep or Path(tmp), args.reuse)
    cells = time_cells(args.rounds)

    print(f"\n{os.cpu_count()} CPU cores, torch {torch.__version__}; each row: `lit-models fit` then `test --ckpt_path "
          "best` with configs/sequence/<config>.yaml.\n")  # fmt: skip
    for source, (metric, reads) in SOURCES.items():
        print(f"| {source} config | params | epochs | fit (s) | best val | {reads} |")
        print("|---|---:|---:|---:|---:|---:|")
        for name in (f"{model}_{source}" for model in MODELS):
            if name in rows:
                row = rows[name]
                best = (max if metric.endswith("acc_top1") else min)(row["val"])
                extra = f" (perplexity {row['perplexity']:.2f})" if "perplexity" in row else ""
                print(f"| {name} | {row['params']:,} | {row['epochs']} | {row['fit_s']:.0f} | {best:.4f} | "
                      f"{row['test']:.4f}{extra} |")  # fmt: skip
        if source == "mnist1d":
            for paper, accuracy in MNIST1D_PAPER.items():
                print(f"| paper: {paper} | | | | | {accuracy:.2f} |")
        if source == "adding":
            print(f"| always answering 1 | | | | | {ADDING_BASELINE:.4f} |")
        print()
    print("| cell | fused: ms per training step | manual: ms per training step | manual / fused |")
    print("|---|---:|---:|---:|")
    for row in cells:
        print(f"| {row['kind']} | {row['fused_ms']:.1f} | {row['manual_ms']:.1f} | {row['ratio']:.1f}x |")


if __name__ == "__main__":
    main()
