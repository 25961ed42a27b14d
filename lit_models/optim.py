"""Optimizer and LR-scheduler assembly shared by every family's LightningModule."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

# torchvision's reference set_weight_decay's norm layers: their weight and bias are found by the module's type,
# whatever the parameters are called.
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass(frozen=True)
class GroupRule:
    """How a parameter group differs from the optimizer's own settings: a multiple of its learning rate, and a
    weight decay of its own (None: the optimizer's)."""

    lr_mult: float = 1.0
    weight_decay: float | None = None


def parameter_groups(
    module: nn.Module,
    bias_lr_mult: float = 1.0,
    bias_weight_decay: bool = True,
    norm_weight_decay: float | None = None,
) -> list[tuple[GroupRule, list[nn.Parameter]]]:
    """The trainable parameters of ``module`` by the rule each follows, the optimizer's own settings first.

    Biases (by name) take ``bias_lr_mult`` times the learning rate and no weight decay unless ``bias_weight_decay``:
    the Caffe-era rule (``lr_mult: 2, decay_mult: 0``) of the FCN and R-CNN reference solvers. The weights and
    biases of normalisation layers (``NORM_LAYERS``, by type) take ``norm_weight_decay`` where it is set:
    torchvision's ``--norm-weight-decay 0.0`` of its recent classification recipes.
    """
    norm = {id(p) for layer in module.modules() if isinstance(layer, NORM_LAYERS) for p in layer.parameters(False)}
    groups: dict[GroupRule, list[nn.Parameter]] = {GroupRule(): []}
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        bias = name.endswith("bias")
        decay = None if bias_weight_decay or not bias else 0.0
        if norm_weight_decay is not None and id(parameter) in norm:
            decay = norm_weight_decay
        rule = GroupRule(bias_lr_mult if bias else 1.0, decay)
        groups.setdefault(rule, []).append(parameter)
    return [(rule, params) for rule, params in groups.items() if params]


def build_optimizers(
    module: nn.Module,
    optimizer: Callable[..., torch.optim.Optimizer] | None,
    lr_scheduler: Callable[..., Any] | None,
    plateau_monitor: str = "val/loss",
    plateau_mode: str = "min",
    bias_lr_mult: float = 1.0,
    bias_weight_decay: bool = True,
    norm_weight_decay: float | None = None,
    max_epochs: int | None = None,
) -> Any:
    """What ``configure_optimizers`` returns for the injected factories, given the module's parameters.

    Without an optimizer factory (a module used from Python, not from a config) the default is SGD with
    lr 0.01 and momentum 0.9: a safe generic start; every paper recipe is spelled out in configs/.
    ``bias_lr_mult``, ``bias_weight_decay`` and ``norm_weight_decay`` put parameters in groups of their own
    (:func:`parameter_groups`), the optimizer's settings in the first. A ``ReduceLROnPlateau`` watches
    ``plateau_monitor`` (the family's headline metric, improving in ``plateau_mode``) unless it names its own
    monitor (Lightning's ``cli.ReduceLROnPlateau``). A :class:`WarmupCosineLR` without ``T_max`` ends its cosine at
    ``max_epochs`` (the trainer's), so ``--trainer.max_epochs 3`` gives a 3-epoch schedule.
    """
    groups = parameter_groups(module, bias_lr_mult, bias_weight_decay, norm_weight_decay)
    params: list[Any] = [{"params": params} for _, params in groups]
    if len(groups) == 1:  # one group: the plain list, as any optimizer is given it
        params = groups[0][1]
    opt = optimizer(params) if optimizer is not None else torch.optim.SGD(params, lr=0.01, momentum=0.9)
    # Set after construction, from the factory's own settings, so any optimizer class works.
    for (rule, _), group in zip(groups, opt.param_groups, strict=True):
        group["lr"] *= rule.lr_mult
        if rule.weight_decay is not None and "weight_decay" in group:
            group["weight_decay"] = rule.weight_decay
    if lr_scheduler is None:
        return opt
    scheduler = lr_scheduler(opt)
    if isinstance(scheduler, WarmupCosineLR) and scheduler.T_max is None:
        if max_epochs is None or max_epochs < 1:
            raise ValueError(
                f"WarmupCosineLR follows the trainer's max_epochs, which is {max_epochs} here (a run bounded by "
                "steps or time): set its horizon with --model.lr_scheduler.init_args.T_max EPOCHS."
            )
        scheduler.T_max = max_epochs
    # The name LearningRateMonitor logs it under ("train/lr", "train/lr/pg2" for a second parameter group).
    config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch", "name": "train/lr"}
    if isinstance(scheduler, ReduceLROnPlateau):
        # Lightning's cli.ReduceLROnPlateau carries the metric it watches; torch's watches the family's headline.
        config["monitor"] = getattr(scheduler, "monitor", None) or plateau_monitor
        if config["monitor"] == plateau_monitor and scheduler.mode != plateau_mode:
            raise ValueError(
                f"ReduceLROnPlateau watches {plateau_monitor}, which improves when it goes "
                f"{'down' if plateau_mode == 'min' else 'up'}, but its mode is {scheduler.mode!r}: set "
                f"--model.lr_scheduler.init_args.mode {plateau_mode}."
            )
    return {"optimizer": opt, "lr_scheduler": config}


class WarmupMultiStepLR(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up from ``start_factor`` to 1 over ``warmup_epochs``, then x``gamma`` at each milestone.

    YOLO v1's schedule (§2.2: the rate raised from 1e-3 to 1e-2 over the first epochs, because a high rate at the
    start diverges from unstable gradients, then divided by 10 twice), expressible in one config entry.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_epochs: int = 0,
        milestones: list[int] | None = None,
        gamma: float = 0.1,
        start_factor: float = 0.1,
    ) -> None:
        self.warmup_epochs, self.milestones = warmup_epochs, sorted(milestones or [])
        self.gamma, self.start_factor = gamma, start_factor
        super().__init__(optimizer, self.factor)

    def factor(self, epoch: int) -> float:
        decay = self.gamma ** sum(epoch >= milestone for milestone in self.milestones)
        if epoch < self.warmup_epochs:
            return decay * (self.start_factor + (1 - self.start_factor) * epoch / self.warmup_epochs)
        return decay


class WarmupCosineLR(LRScheduler):
    """Linear warm-up from ``start_factor`` to 1 over ``warmup_epochs``, then a cosine decay (Loshchilov & Hutter
    2017, without restarts) to ``eta_min`` at epoch ``T_max``.

    ``T_max`` left out follows the trainer's ``max_epochs`` (set by :func:`build_optimizers`), so a recipe's
    schedule and its length cannot drift apart and ``--trainer.max_epochs 3`` gives a 3-epoch cosine. Without
    warm-up the rates are torch's ``CosineAnnealingLR(T_max, eta_min)``'s, computed in closed form.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        T_max: int | None = None,
        eta_min: float = 0.0,
        warmup_epochs: int = 0,
        start_factor: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        """Configure the schedule.

        Args:
            optimizer: The optimizer whose learning rates it sets (each group from its own initial rate).
            T_max: The epoch at which the cosine reaches ``eta_min`` (torch's name); default: the trainer's
                max_epochs.
            eta_min: The final learning rate.
            warmup_epochs: Epochs of linear warm-up before the cosine (0: none).
            start_factor: The first warm-up epoch's share of the initial rate.
            last_epoch: The index of the last epoch (-1 to start), as in every torch scheduler.
        """
        self.T_max, self.eta_min = T_max, eta_min
        self.warmup_epochs, self.start_factor = warmup_epochs, start_factor
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [self.rate(base, self.last_epoch) for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    def rate(self, base: float, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return base * (self.start_factor + (1 - self.start_factor) * epoch / self.warmup_epochs)
        done = epoch - self.warmup_epochs
        if done == 0:  # the cosine's start: no horizon needed yet (build_optimizers sets it after construction)
            return base
        if self.T_max is None:
            raise ValueError("WarmupCosineLR has no T_max: give it one, or build it through build_optimizers")
        progress = min(1.0, done / max(1, self.T_max - self.warmup_epochs))
        return self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * progress)) / 2
