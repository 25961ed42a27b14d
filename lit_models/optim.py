"""Optimizer and LR-scheduler assembly shared by every family's LightningModule."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau


def build_optimizers(
    parameters: Iterable[torch.nn.Parameter],
    optimizer: Callable[..., torch.optim.Optimizer] | None,
    lr_scheduler: Callable[..., Any] | None,
    plateau_monitor: str = "val/loss",
) -> Any:
    """What ``configure_optimizers`` returns for the injected factories.

    Without an optimizer factory (a module used from Python, not from a config) the default is SGD with
    lr 0.01 and momentum 0.9: a safe generic start; every paper recipe is spelled out in configs/.
    """
    params = [p for p in parameters if p.requires_grad]
    opt = optimizer(params) if optimizer is not None else torch.optim.SGD(params, lr=0.01, momentum=0.9)
    if lr_scheduler is None:
        return opt
    scheduler = lr_scheduler(opt)
    config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch"}
    if isinstance(scheduler, ReduceLROnPlateau):
        # Lightning's cli.ReduceLROnPlateau carries the metric it watches.
        config["monitor"] = getattr(scheduler, "monitor", None) or plateau_monitor
    return {"optimizer": opt, "lr_scheduler": config}
