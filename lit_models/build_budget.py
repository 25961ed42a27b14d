"""A ceiling on the tensor memory a constructor may allocate: a module built from a checkpoint's arguments stops with
an error before a size the file does not justify is allocated, not with an out-of-memory kill."""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors


class BudgetExceeded(MemoryError):
    """The tensors allocated so far, with the next one, exceed the budget."""


class AllocationBudget(TorchFunctionMode):
    """Inside ``with AllocationBudget(limit_bytes):`` every tensor-creating call (``torch.empty``, ``zeros``,
    ``randn``, ``arange``, ... : what ``nn`` layers build their parameters with) is first sized on the meta device,
    which allocates nothing; one that would take the total allocated past ``limit_bytes`` raises
    :class:`BudgetExceeded` instead. Tensors freed meanwhile still count: the budget bounds the work too."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__()
        self.limit_bytes, self.used_bytes = limit_bytes, 0
        self.constructors = _device_constructors()

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in self.constructors:
            try:
                probe = func(*args, **{**kwargs, "device": "meta"})
            except (TypeError, RuntimeError, NotImplementedError):  # no meta form (from data in memory: small)
                probe = None
            if isinstance(probe, torch.Tensor):
                self.used_bytes += probe.numel() * probe.element_size()
                if self.used_bytes > self.limit_bytes:
                    raise BudgetExceeded(
                        f"{self.used_bytes / 2**20:,.0f} MiB of tensors asked for, over the budget of "
                        f"{self.limit_bytes / 2**20:,.0f} MiB"
                    )
        return func(*args, **kwargs)
