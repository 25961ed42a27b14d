"""The optimizer and scheduler every family's configure_optimizers returns: the bias rule, YOLO v1's warm-up and
milestones, the cosine that ends with the trainer's max_epochs, and torch's ReduceLROnPlateau watching each family's
headline metric."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from families import FAMILIES, build
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lit_models.optim import WarmupCosineLR, WarmupMultiStepLR, build_optimizers

pytestmark = pytest.mark.usefixtures("one_thread")


def learning_rates(scheduler: torch.optim.lr_scheduler.LRScheduler, epochs: int) -> list[float]:
    rates = []
    for _ in range(epochs):
        rates.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return rates


def test_warmup_rises_linearly_then_milestones_divide():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01)
    scheduler = WarmupMultiStepLR(optimizer, warmup_epochs=3, milestones=[8, 5], gamma=0.1, start_factor=0.1)
    factors = [0.1, 0.4, 0.7, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01]
    assert learning_rates(scheduler, 10) == pytest.approx([0.01 * f for f in factors])


def test_a_milestone_inside_the_warm_up_scales_it():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupMultiStepLR(optimizer, warmup_epochs=2, milestones=[1], gamma=0.5, start_factor=0.5)
    assert learning_rates(scheduler, 3) == pytest.approx([0.5, 0.5 * 0.75, 0.5])


def test_cosine_without_warm_up_is_torchs_cosine():
    rates = {}
    for kind in (WarmupCosineLR, torch.optim.lr_scheduler.CosineAnnealingLR):
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.2)
        rates[kind] = learning_rates(kind(optimizer, T_max=7, eta_min=0.01), 8)
    assert rates[WarmupCosineLR] == pytest.approx(rates[torch.optim.lr_scheduler.CosineAnnealingLR], abs=1e-12)
    assert rates[WarmupCosineLR][-1] == pytest.approx(0.01)  # eta_min at epoch T_max


def test_warm_up_rises_linearly_then_the_cosine_spans_the_remaining_epochs():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupCosineLR(optimizer, T_max=6, warmup_epochs=2, start_factor=0.2)
    factors = [0.2, 0.6, 1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2, 0.0, 0.0]
    assert learning_rates(scheduler, 8) == pytest.approx(factors, abs=1e-12)


def test_cosine_without_a_horizon_ends_at_max_epochs():
    net = nn.Linear(2, 2)
    factory = lambda params: torch.optim.SGD(params, lr=0.1)  # noqa: E731

    def horizon(scheduler):
        config = build_optimizers(net, factory, scheduler, max_epochs=3)
        return config["lr_scheduler"]["scheduler"].T_max

    assert horizon(WarmupCosineLR) == 3
    assert horizon(lambda optimizer: WarmupCosineLR(optimizer, T_max=10)) == 10  # a horizon of its own stays
    for max_epochs in (None, -1):  # a run bounded by steps or time has no epoch count to follow
        with pytest.raises(ValueError, match="init_args.T_max"):
            build_optimizers(net, factory, WarmupCosineLR, max_epochs=max_epochs)


def test_trainer_max_epochs_sets_the_horizon_of_a_fit(request, tmp_path):
    model, data = build("classification", request)
    model.lr_scheduler_factory = WarmupCosineLR
    trainer = pl.Trainer(
        max_epochs=3, limit_train_batches=1, limit_val_batches=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, data)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.T_max == 3 and scheduler.last_epoch == 3
    assert scheduler.get_last_lr() == pytest.approx([0.0])  # the cosine ended with the run


def test_bias_rule_puts_biases_in_a_second_group_from_the_factorys_rate():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    net[0].weight.requires_grad_(False)  # frozen parameters are left out
    factory = lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)  # noqa: E731
    optimizer = build_optimizers(net, factory, None, bias_lr_mult=2.0, bias_weight_decay=False)
    weights, biases = optimizer.param_groups
    assert {id(p) for p in weights["params"]} == {id(net[1].weight), id(net[2].weight)}
    assert {id(p) for p in biases["params"]} == {id(net[0].bias), id(net[1].bias), id(net[2].bias)}
    assert (weights["lr"], weights["weight_decay"]) == (0.1, 5e-4)
    assert (biases["lr"], biases["weight_decay"]) == (0.2, 0.0)
    assert len(build_optimizers(net, factory, None).param_groups) == 1


@pytest.mark.parametrize("family", list(FAMILIES))
def test_torch_plateau_scheduler_watches_the_family_headline_metric(family, request, tmp_path):
    model, data = build(family, request)
    # The headline of a sequence module is decided by its data's task, in setup: read when the factory is called.
    model.lr_scheduler_factory = lambda optimizer: ReduceLROnPlateau(optimizer, mode=model.monitor_goal, patience=0)
    trainer = pl.Trainer(
        max_epochs=2, limit_train_batches=1, limit_val_batches=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, data)  # Lightning stops here if the watched metric is never logged
    config = trainer.lr_scheduler_configs[0]
    assert config.monitor == model.monitor and config.monitor in trainer.callback_metrics
    headline = {"classification": "val/acc_top1", "segmentation": "val/miou", "detection": "val/map_50",
                "language_model": "val/bits_per_token", "sequence_classification": "val/acc_top1"}  # fmt: skip
    assert model.monitor == headline[family]


def test_plateau_mode_that_contradicts_the_metric_names_the_setting():
    net = nn.Linear(2, 2)
    factory = lambda optimizer: ReduceLROnPlateau(optimizer)  # noqa: E731  mode "min", the default
    with pytest.raises(ValueError, match="val/map_50, which improves when it goes up.*init_args.mode max"):
        build_optimizers(net, None, factory, plateau_monitor="val/map_50", plateau_mode="max")
