"""``lit_models.FasterRCNN``: the region-proposal-network detector on the Detector loop."""

from __future__ import annotations

from typing import Any

from lit_models.detection.base import Detector
from lit_models.nets.faster_rcnn import FasterRCNNNet


class FasterRCNN(Detector):
    """Faster R-CNN (Ren et al. 2015): RPN proposals into a Fast R-CNN head, trained end to end.

    Defaults are the paper's VGG-16 model (shorter side 600, anchors 128/256/512 x 1:2, 1:1, 2:1, 12000/2000
    proposals before/after NMS in training and 6000/300 in test, 256 anchors and 128 RoIs sampled per image,
    RoI max pooling to 7x7, a 4096-wide head, NMS 0.3 at test). See :mod:`lit_models.nets.faster_rcnn` for the
    deviations, and configs/detection/ for the paper's VOC recipe and a CPU-sized one.
    """

    def build_net(self, num_classes: int, **net_args: Any) -> FasterRCNNNet:
        """``net_args``: :class:`lit_models.nets.faster_rcnn.FasterRCNNNet`'s arguments."""
        return FasterRCNNNet(num_classes, **net_args)
