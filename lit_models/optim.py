"""Optimizer and LR-scheduler assembly shared by every family's LightningModule."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau


def build_optimizers(
    parameters: Iterable[tuple[str, torch.nn.Parameter]],
    optimizer: Callable[..., torch.optim.Optimizer] | None,
    lr_scheduler: Callable[..., Any] | None,
    plateau_monitor: str = "val/loss",
    plateau_mode: str = "min",
    bias_lr_mult: float = 1.0,
    bias_weight_decay: bool = True,
    max_epochs: int | None = None,
) -> Any:
    """What ``configure_optimizers`` returns for the injected factories, given ``named_parameters()``.

    Without an optimizer factory (a module used from Python, not from a config) the default is SGD with
    lr 0.01 and momentum 0.9: a safe generic start; every paper recipe is spelled out in configs/.
    ``bias_lr_mult`` / ``bias_weight_decay`` put the biases in a second parameter group with that multiple of the
    learning rate and optionally no weight decay: the Caffe-era rule (``lr_mult: 2, decay_mult: 0`` on biases)
    of the FCN and R-CNN reference solvers. A ``ReduceLROnPlateau`` watches ``plateau_monitor`` (the family's
    headline metric, improving in ``plateau_mode``) unless it names its own monitor (Lightning's
    ``cli.ReduceLROnPlateau``). A :class:`WarmupCosineLR` without ``T_max`` ends its cosine at ``max_epochs``
    (the trainer's), so ``--trainer.max_epochs 3`` gives a 3-epoch schedule.
    """
    named = [(name, p) for name, p in parameters if p.requires_grad]
    params: list[Any] = [p for _, p in named]
    caffe_rule = bias_lr_mult != 1.0 or not bias_weight_decay
    if caffe_rule:
        params = [
            {"params": [p for name, p in named if not name.endswith("bias")]},
            {"params": [p for name, p in named if name.endswith("bias")]},
        ]
    opt = optimizer(params) if optimizer is not None else torch.optim.SGD(params, lr=0.01, momentum=0.9)
    if caffe_rule:
        # Set after construction, from the factory's own learning rate, so any optimizer class works.
        biases = opt.param_groups[1]
        biases["lr"] *= bias_lr_mult
        if not bias_weight_decay and "weight_decay" in biases:
            biases["weight_decay"] = 0.0
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
