"""``lit_models.RCNN``: a CNN on every warped region proposal, then per-class SVMs and box regressors."""

from __future__ import annotations

from typing import Any

from lit_models.detection.staged import StagedDetector
from lit_models.nets.rcnn import RCNNNet


class RCNN(StagedDetector):
    """R-CNN (Girshick, Donahue, Darrell & Malik 2014) on selective-search proposals (``data.proposals``).

    Each proposal is warped, with 16 px of context, to the CNN's input size and run through the whole
    classifier trunk; fc7 features feed per-class linear SVMs and pool5 features class-specific box regressors;
    per-class NMS 0.3. Training is the paper's, in stages (:class:`StagedDetector`). Defaults are the paper's
    VGG-16 variant (224-px warps). See :mod:`lit_models.nets.rcnn` for the mechanism and deviations.
    """

    def build_staged_net(self, num_classes: int, **net_args: Any) -> RCNNNet:
        """``net_args``: :class:`lit_models.nets.rcnn.RCNNNet`'s arguments."""
        return RCNNNet(num_classes, **net_args)
