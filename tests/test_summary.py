"""``lit-models summary``: parameters, FLOPs per sample and a per-layer table, for a checkpoint or a recipe."""

from __future__ import annotations

import torch
from conftest import make_image_tree, run_cli
from families import fit_and_save
from torch import nn

from lit_models import ImageFolderDataModule, ResNet
from lit_models.summary import describe, layer_table


def test_flops_are_torchs_count_per_sample():
    net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    rows, parameters, flops = layer_table(net, torch.randn(4, 10))
    assert parameters == 10 * 20 + 20 + 20 * 5 + 5
    assert flops == 2 * (10 * 20 + 20 * 5)  # a multiply-add counts 2, per sample of the batch of 4
    assert [(name, kind, count) for name, kind, count, _ in rows] == [
        ("0", "Linear", 220), ("1", "ReLU", 0), ("2", "Linear", 105)
    ]  # fmt: skip
    assert rows[0][3] == 2 * 10 * 20


def test_summary_of_a_checkpoint_and_of_a_recipe(tmp_path, one_thread):
    tree = make_image_tree(tmp_path / "data", {"train": 3, "val": 1})
    data = ImageFolderDataModule(str(tree), image_size=32, batch_size=4, num_workers=0)
    model = ResNet(num_classes=3, depth=18, width_mult=0.125)
    checkpoint = fit_and_save(model, data, tmp_path)
    printed = run_cli("summary", str(checkpoint), cwd=tmp_path).stdout
    parameters = sum(p.numel() for p in model.net.parameters())
    assert f"input per sample: 3 x 32 x 32; parameters: {parameters:,}" in printed
    assert "layer4" in printed and "Sequential" in printed

    recipe = describe("quickstart")
    assert "ResNet" in recipe and "input per sample: 3 x 28 x 28" in recipe and "FLOPs per sample" in recipe
