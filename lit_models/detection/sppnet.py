"""``lit_models.SPPNet``: convolutional features once per image, each proposal's window pooled by a pyramid."""

from __future__ import annotations

from typing import Any

from lit_models.detection.staged import StagedDetector
from lit_models.nets.sppnet import SPPNetNet


class SPPNet(StagedDetector):
    """SPPNet for detection (He, Zhang, Ren & Sun 2014, §4) on selective-search proposals (``data.proposals``).

    The trunk runs once per image, of any size; each proposal's window on the conv5 map is max-pooled into a
    spatial pyramid (the paper's 6x6, 3x3, 2x2 and 1x1 bins) whose concatenation feeds fc6/fc7, then per-class
    SVMs and box regressors trained as R-CNN's (:class:`StagedDetector`). See :mod:`lit_models.nets.sppnet`.
    """

    def build_staged_net(self, num_classes: int, **net_args: Any) -> SPPNetNet:
        """``net_args``: :class:`lit_models.nets.sppnet.SPPNetNet`'s arguments."""
        return SPPNetNet(num_classes, **net_args)
