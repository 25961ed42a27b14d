"""The lecture's claims about these architectures, each measured on the package's own nets: one table, with plots.

    python benchmarks/claims.py [--seeds 0 1] [--keep RUNS] [--reuse RUNS] [--plots docs]

Printed: one markdown row per claim (the claim, our measurement, the paper's number where it gives one, and whether
they agree), then the per-block GoogLeNet table and the degradation table. Saved in --plots: claims_receptive_field,
claims_inception, claims_degradation, claims_accuracy_per_parameter and claims_gradients (PNG).

The static measurements (receptive fields, parameters, FLOPs, gradients) take seconds. The training runs are the
degradation experiment (plain and residual CIFAR ResNet-20/56 per seed) and DenseNet-BC-100, on the embedded digits
(claims_training.py; about 25 minutes on 2 cores for two seeds). --keep and --reuse keep and read back those runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import matplotlib
import torch
from claims_training import DEPTHS, train_all
from torch import nn

from lit_models.analysis import gradient_through_time, parameter_count, receptive_field
from lit_models.datamodules.adding import AddingProblemDataModule
from lit_models.nets.alexnet import AlexNet
from lit_models.nets.densenet import DenseNet
from lit_models.nets.fcn import FCN
from lit_models.nets.googlenet import GoogLeNet
from lit_models.nets.recurrent import Recurrent
from lit_models.nets.vgg import VGG
from lit_models.summary import layer_table

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

Row = tuple[str, str, str, bool]  # claim, measured, paper, agree


def yes(agree: bool) -> str:
    return "yes" if agree else "**no**"


def conv_stack(kernels: list[int], channels: int) -> nn.Sequential:
    """Convolutions C -> C of the given kernel sizes, each 'same'-padded, without bias, with ReLUs between."""
    layers: list[nn.Module] = []
    for kernel in kernels:
        layers += [nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False), nn.ReLU()]
    return nn.Sequential(*layers)


def flops(net: nn.Module, size: int, channels: int = 3) -> float:
    """FLOPs (a multiply-add counts 2) of one forward pass on one size x size image."""
    return layer_table(net, torch.zeros(1, channels, size, size))[2]


def vgg_stacks(plots: Path) -> list[Row]:
    """VGG §2.3: stacked 3x3 convolutions see as far as one large kernel, with fewer weights and FLOPs."""
    rows = []
    first_block = VGG(16).features[:4]  # conv1_1, ReLU, conv1_2, ReLU: the first two 3x3 layers of VGG-16
    field = receptive_field(first_block, 21)
    measured = f"{field.height}x{field.width} (VGG-16's conv1_1 + conv1_2, from input gradients)"
    rows.append(("VGG: two stacked 3x3 convolutions see a 5x5 field", measured, "5x5 (§2.3)",
                 (field.height, field.width) == (5, 5)))  # fmt: skip
    channels, size = 64, 56
    maps = {}
    for stacked, single, paper in ((2, 5, "18C² vs 25C²"), (3, 7, "27C² vs 49C², 81 % more (§2.3)")):
        stack, large = conv_stack([3] * stacked, channels), conv_stack([single], channels)
        stack_field, large_field = receptive_field(stack, 21, channels), receptive_field(large, 21, channels)
        maps[f"{stacked} x 3x3"], maps[f"1 x {single}x{single}"] = stack_field.gradient, large_field.gradient
        weights = parameter_count(stack) / channels**2, parameter_count(large) / channels**2
        ratio = flops(large, size, channels) / flops(stack, size, channels)
        rows.append((f"VGG: {stacked} stacked 3x3 = one {single}x{single} field, fewer weights and FLOPs",
                     f"field {stack_field.height}x{stack_field.width} vs {large_field.height}x{large_field.width}; "
                     f"{weights[0]:.0f}C² vs {weights[1]:.0f}C²; {single}x{single} costs {ratio:.2f}x the FLOPs",
                     paper, stack_field.height == large_field.height == single
                     and weights == (9 * stacked, single**2)))  # fmt: skip
    figure, axes = plt.subplots(1, len(maps), figsize=(3 * len(maps), 3.2))
    for axis, (name, gradient) in zip(axes, maps.items(), strict=True):
        axis.imshow(gradient[5:16, 5:16], cmap="magma")
        axis.set_title(f"{name}: centre unit's\ninput gradient", fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(plots / "claims_receptive_field.png", dpi=110)
    plt.close(figure)
    return rows


def inception(plots: Path) -> tuple[list[Row], list[str]]:
    """GoogLeNet §5: the 1x1 reductions before the 3x3 and 5x5 convolutions keep the blocks affordable."""
    tables = {}
    for reductions in (True, False):
        net = GoogLeNet(aux_logits=False, reductions=reductions)
        block_rows, params, total = layer_table(net, torch.zeros(1, 3, 224, 224))
        blocks = {name: (p, f) for name, kind, p, f in block_rows if kind == "_Inception"}
        tables[reductions] = (blocks, params, total)
    (with_blocks, with_params, with_flops), (naive_blocks, naive_params, naive_flops) = tables[True], tables[False]
    lines = ["| Inception block | params with 1x1 reductions | without | GFLOPs with | without | FLOPs saved |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, (params, block_flops) in with_blocks.items():
        naive_p, naive_f = naive_blocks[name]
        lines.append(f"| {name.removeprefix('inception')} | {params / 1e6:.2f} M | {naive_p / 1e6:.2f} M | "
                     f"{block_flops / 1e9:.2f} | {naive_f / 1e9:.2f} | {naive_f / block_flops:.1f}x |")  # fmt: skip
    lines.append(f"| whole network | {with_params / 1e6:.2f} M | {naive_params / 1e6:.2f} M | {with_flops / 1e9:.2f} | "
                 f"{naive_flops / 1e9:.2f} | {naive_flops / with_flops:.1f}x |")  # fmt: skip
    figure, axis = plt.subplots(figsize=(7, 3.2))
    names = [name.removeprefix("inception") for name in with_blocks]
    positions = range(len(names))
    axis.bar([p - 0.2 for p in positions], [f / 1e9 for _, f in naive_blocks.values()], 0.4, label="without")
    axis.bar([p + 0.2 for p in positions], [f / 1e9 for _, f in with_blocks.values()], 0.4, label="with 1x1 reductions")
    axis.set_xticks(list(positions), names)
    axis.set_ylabel("GFLOPs per 224x224 image")
    axis.set_title("GoogLeNet's Inception blocks with and without their 1x1 reductions")
    axis.legend()
    figure.tight_layout()
    figure.savefig(plots / "claims_inception.png", dpi=110)
    plt.close(figure)
    rows = [("GoogLeNet: 1x1 reductions make Inception affordable", f"{with_params / 1e6:.1f} M params, "
             f"{with_flops / 2e9:.2f} G multiply-adds; without them {naive_params / 1e6:.1f} M and "
             f"{naive_flops / 2e9:.2f} G ({naive_flops / with_flops:.1f}x)", "6.8 M params, 1.5 G multiply-adds "
             "(§5, Table 1)", abs(with_params / 6.8e6 - 1) < 0.1 and abs(with_flops / 3e9 - 1) < 0.1
             and naive_flops > 2 * with_flops)]  # fmt: skip
    return rows, lines


def fully_connected() -> list[Row]:
    """AlexNet's and VGG's parameters sit in their fully connected layers; FCN turns those into convolutions."""
    rows = []
    for name, net, paper_total in (("AlexNet", AlexNet(), 60e6), ("VGG-16", VGG(16), 138e6)):
        share = parameter_count(net, (nn.Linear,)) / parameter_count(net)
        total = parameter_count(net)
        rows.append((f"{name}: most parameters are in the fully connected layers", f"{share:.1%} of "
                     f"{total / 1e6:.1f} M", f"{paper_total / 1e6:.0f} M in all", share > 0.85
                     and abs(total / paper_total - 1) < 0.05))  # fmt: skip
    vgg, fcn = VGG(16).eval(), FCN(num_classes=21).eval()
    fcn.convolutionalize(vgg)
    fc_params = parameter_count(vgg.classifier[:4], (nn.Linear,))
    conv_params = parameter_count(fcn.encoder.fc6) + parameter_count(fcn.encoder.fc7)
    with torch.no_grad():
        pool5 = vgg.avgpool(vgg.features(torch.randn(1, 3, 224, 224)))  # 1 x 512 x 7 x 7
        as_linear = vgg.classifier[0](pool5.flatten(1))
        as_conv = fcn.encoder.fc6(pool5).flatten(1)  # the 7x7 convolution at one position
        sizes = [(224, 224), (375, 500), (97, 131)]
        shapes = [tuple(fcn(torch.zeros(1, 3, h, w)).shape[2:]) for h, w in sizes]
    difference = (as_linear - as_conv).abs().max().item()
    rows.append(("FCN: convolutionalizing fc6/fc7 keeps their parameters and their function",
                 f"{conv_params:,} vs {fc_params:,} parameters; fc6 as a 7x7 convolution differs from the Linear by "
                 f"{difference:.1e}", "the same weights, reshaped (§3.1)", conv_params == fc_params
                 and difference < 1e-4))  # fmt: skip
    rows.append(("FCN: takes any input size, returns a score map of that size", ", ".join(
        f"{h}x{w} -> {s[0]}x{s[1]}" for (h, w), s in zip(sizes, shapes, strict=True)), "arbitrary size (§3)",
        shapes == sizes))  # fmt: skip
    return rows


def dense_growth() -> Row:
    """DenseNet §3: each layer adds k maps to the concatenation; each transition halves it (compression 0.5)."""
    net = DenseNet(100, num_classes=10).eval()
    channels = {}
    for name, module in net.features.named_children():
        if name.startswith(("denseblock", "transition")):
            module.register_forward_hook(lambda _m, _i, out, name=name: channels.__setitem__(name, out.shape[1]))
    layer_outputs = []
    for module in net.features.denseblock1.children():
        module.register_forward_hook(lambda _m, _i, out: layer_outputs.append(out.shape[1]))
    with torch.no_grad():
        net(torch.zeros(1, 3, 32, 32))
    stem, k, layers = net.features.conv0.out_channels, 12, 16
    expected = {"denseblock1": stem + layers * k}
    expected["transition1"] = expected["denseblock1"] // 2
    expected["denseblock2"] = expected["transition1"] + layers * k
    expected["transition2"] = expected["denseblock2"] // 2
    expected["denseblock3"] = expected["transition2"] + layers * k
    measured = " -> ".join(f"{channels[name]}" for name in expected)
    return ("DenseNet-BC: each layer adds k maps; transitions compress by θ = 0.5",
            f"each layer adds {set(layer_outputs)} maps; channels {stem} -> {measured}; "
            f"{parameter_count(net) / 1e6:.2f} M params", "k = 12, θ = 0.5, 0.8 M params (DenseNet-BC-100, "
            "Table 2)", channels == expected and set(layer_outputs) == {k})  # fmt: skip


def gradients(plots: Path, seeds: list[int]) -> list[Row]:
    """Bengio et al. 1994: through a tanh RNN the gradient of the loss at T shrinks exponentially with the distance
    to step t; gates give the LSTM and GRU a path that can keep it. Measured at initialisation on adding-problem
    sequences (T = 200), as the gradient at T - 1 - d over the gradient at T - 1, for d = 50 steps back."""
    data = AddingProblemDataModule(length=200, train_size=64, val_size=64, test_size=64, batch_size=64)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    back = 50
    ratios: dict[str, list[float]] = {}
    curves = {}
    for kind in ("rnn", "lstm", "gru"):
        for seed in seeds:
            torch.manual_seed(seed)
            recurrent, readout = Recurrent(kind, 2, 128), nn.Linear(128, 1)

            def loss_of_inputs(inputs, recurrent=recurrent, readout=readout):
                outputs, _ = recurrent(inputs)
                return nn.functional.mse_loss(readout(outputs[:, -1]).squeeze(1), batch["target"].squeeze(-1))

            norms = gradient_through_time(loss_of_inputs, batch["inputs"])
            ratios.setdefault(kind, []).append((norms[-1 - back] / norms[-1]).item())
            curves.setdefault(kind, norms.flip(0))  # indexed by the distance d
    figure, axis = plt.subplots(figsize=(6, 3.2))
    for kind, norms in curves.items():
        axis.semilogy(range(len(norms)), norms.numpy(), label=kind.upper())
    axis.set_xlabel("steps back from the loss at T = 200")
    axis.set_ylabel("mean ||d loss / d x_t||")
    axis.set_title("Gradient reaching earlier steps, adding problem, at initialisation")
    axis.legend()
    figure.tight_layout()
    figure.savefig(plots / "claims_gradients.png", dpi=110)
    plt.close(figure)

    def span(values: list[float]) -> str:
        return f"{min(values):.0e}" if len(values) == 1 else f"{min(values):.0e} to {max(values):.0e}"

    rnn, lstm, gru = (ratios[kind] for kind in ("rnn", "lstm", "gru"))
    lstm_params, gru_params = (parameter_count(Recurrent(kind, 2, 128)) for kind in ("lstm", "gru"))
    seeds_text = f"{len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}"
    return [
        ("Sequences: a tanh RNN's gradient shrinks exponentially with distance", f"gradient {back} steps back over "
         f"the last step's: {span(rnn)} ({seeds_text}, at initialisation)", "exponential decay (Bengio et al. 1994)",
         max(rnn) < 1e-6),
        ("LSTM: the cell's gated additive path carries the gradient further", f"{span(lstm)}, against the RNN's "
         f"{span(rnn)} (forget-gate bias 1, at initialisation)", "constant error flow through the cell (Hochreiter & "
         "Schmidhuber 1997; forget gate, Gers et al. 2000)", min(lstm) > 1e3 * max(rnn)),
        ("GRU: the update gate carries the gradient further", f"{span(gru)} at initialisation (update gates near "
         "0.5); trained, it solves the adding problem the RNN cannot (sequence table)",
         "long-term dependencies kept (Cho et al. 2014; Chung et al. 2014)", min(gru) > 1e3 * max(rnn)),
        ("GRU: three gate blocks against LSTM's four", f"{gru_params:,} vs {lstm_params:,} parameters "
         f"({gru_params / lstm_params:.2f}) at 128 hidden units", "3/4 (Cho et al. 2014)",
         abs(gru_params / lstm_params - 0.75) < 0.01),
    ]  # fmt: skip


def degradation(runs: dict[str, dict], seeds: list[int], plots: Path) -> tuple[list[Row], list[str]]:
    """ResNet §4.2, Figure 6: deeper plain nets train worse (degradation); residual ones do not."""
    final = {name: run["train_error"][-1] for name, run in runs.items()}
    lines = ["| network | parameters | final training error | best validation error | test error |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip

    def spread(values: list[float]) -> str:
        low, high = min(values), max(values)
        return f"{low:.2%}" if len(values) == 1 else f"{low:.2%} – {high:.2%}"

    for net in [f"{kind}{depth}" for kind in ("plain", "resnet") for depth in DEPTHS] + ["densenet_bc100"]:
        mine = [run for name, run in runs.items() if name.startswith(f"{net}_")]
        train, val = spread([r["train_error"][-1] for r in mine]), spread([min(r["val_error"]) for r in mine])
        lines.append(f"| {net} | {mine[0]['params']:,} | {train} | {val} | {spread([r['test_error'] for r in mine])} |")

    def pair(kind: str) -> list[tuple[float, float]]:
        return [(final[f"{kind}20_seed{seed}"], final[f"{kind}56_seed{seed}"]) for seed in seeds]

    plain_worse = all(deep > shallow for shallow, deep in pair("plain"))
    residual_better = all(deep <= shallow for shallow, deep in pair("resnet"))
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for axis, kind in zip(axes, ("plain", "resnet"), strict=True):
        for depth, colour in zip(DEPTHS, ("tab:orange", "tab:red"), strict=True):
            run = runs[f"{kind}{depth}_seed{seeds[0]}"]
            epochs = range(1, len(run["train_error"]) + 1)
            axis.plot(epochs, run["train_error"], color=colour, linestyle="--", label=f"{kind}-{depth} train")
            axis.plot(epochs, run["val_error"][-len(run["train_error"]) :], color=colour, label=f"{kind}-{depth} val")
        axis.set_yscale("log")
        axis.set_xlabel("epoch")
        axis.set_title(f"{'Plain' if kind == 'plain' else 'Residual'} networks, embedded digits")
        axis.legend(fontsize=8)
    axes[0].set_ylabel("error (dashed: training, solid: validation)")
    figure.tight_layout()
    figure.savefig(plots / "claims_degradation.png", dpi=110)
    plt.close(figure)
    shallow, deep = zip(*pair("plain"), strict=True)
    res_shallow, res_deep = zip(*pair("resnet"), strict=True)
    rows = [
        ("ResNet: a deeper plain net trains worse (degradation)", f"final training error plain-20 "
         f"{spread(list(shallow))}, plain-56 {spread(list(deep))}", "plain-56 above plain-20 throughout (Figure 6, "
         "CIFAR-10)", plain_worse),
        ("ResNet: shortcuts remove the degradation at the same depth", f"final training error ResNet-56 "
         f"{spread(list(res_deep))} against plain-56's {spread(list(deep))}", "ResNet-56 far below plain-56 "
         "(Figure 6)", all(r < p for r, p in zip(res_deep, deep, strict=True))),
        ("ResNet: with shortcuts, depth helps", f"final training error ResNet-20 {spread(list(res_shallow))}, "
         f"ResNet-56 {spread(list(res_deep))}", "ResNet-56 below ResNet-20; test error 6.97 % vs 8.75 % (Table 6)",
         residual_better),
    ]  # fmt: skip
    return rows, lines


def accuracy_per_parameter(runs: dict[str, dict], plots: Path) -> Row:
    """DenseNet §4.3: DenseNet-BC reaches ResNets' accuracy with fewer parameters."""
    points = {}
    for net in ("resnet20", "resnet56", "plain20", "plain56", "densenet_bc100"):
        mine = [run for name, run in runs.items() if name.startswith(f"{net}_")]
        points[net] = (mine[0]["params"], statistics.mean(run["test_error"] for run in mine))
    figure, axis = plt.subplots(figsize=(5, 3.4))
    for net, (params, error) in points.items():
        axis.scatter(params / 1e6, error * 100)
        axis.annotate(net, (params / 1e6, error * 100), fontsize=8)
    axis.set_xlabel("parameters (M)")
    axis.set_ylabel("test error (%), mean over seeds")
    axis.set_title("Accuracy per parameter, embedded digits")
    figure.tight_layout()
    figure.savefig(plots / "claims_accuracy_per_parameter.png", dpi=110)
    plt.close(figure)
    (dense_p, dense_e), (res_p, res_e) = points["densenet_bc100"], points["resnet56"]
    return ("DenseNet-BC: ResNet's accuracy with fewer parameters", f"DenseNet-BC-100 {dense_e:.2%} test error with "
            f"{dense_p / 1e6:.2f} M; ResNet-56 {res_e:.2%} with {res_p / 1e6:.2f} M", "4.51 % with 0.8 M vs "
            "ResNet-110's 6.41 % with 1.7 M (CIFAR-10+, Table 2)", dense_e <= res_e and dense_p < res_p)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of the degradation runs")
    parser.add_argument("--keep", type=Path, help="keep the training runs in this folder")
    parser.add_argument("--reuse", type=Path, help="an earlier --keep folder: its finished runs are read back")
    parser.add_argument("--plots", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    args.plots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = train_all(args.seeds, args.reuse or args.keep or Path(tmp))
    rows = vgg_stacks(args.plots)
    inception_rows, inception_table = inception(args.plots)
    rows += inception_rows + fully_connected() + [dense_growth()]
    degradation_rows, degradation_table = degradation(runs, args.seeds, args.plots)
    rows += degradation_rows + [accuracy_per_parameter(runs, args.plots)] + gradients(args.plots, args.seeds)

    print(f"\n{os.cpu_count()} CPU cores, torch {torch.__version__}.\n")
    print("| claim | measured here | the paper | agree? |\n|---|---|---|---|")
    for claim, measured, paper, agree in rows:
        print(f"| {claim} | {measured} | {paper} | {yes(agree)} |")
    print("\n" + "\n".join(inception_table) + "\n\n" + "\n".join(degradation_table))


if __name__ == "__main__":
    main()
