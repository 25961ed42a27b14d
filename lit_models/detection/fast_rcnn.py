"""``lit_models.FastRCNN``: RoI pooling from one shared feature map, softmax and box regression trained jointly."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from lit_models.detection.base import Detector
from lit_models.nets.fast_rcnn import FastRCNNNet


class FastRCNN(Detector):
    """Fast R-CNN (Girshick 2015) on selective-search proposals (``data.proposals``).

    Defaults are the paper's VGG-16 model: RoI max pooling to 7 x 7 from conv5_3, fc6/fc7 of 4096 with dropout,
    sibling (K+1)-way softmax and class-specific box regressors trained jointly (smooth L1, lambda = 1), 64 RoIs
    per image of which 25 % foreground (IoU >= 0.5; background [0.1, 0.5)), per-class NMS 0.3 at test. The
    paper's mini-batch is 2 images (``data.batch_size: 2``). See :mod:`lit_models.nets.fast_rcnn` for deviations.
    """

    uses_proposals = True

    def build_net(self, num_classes: int, svd_ranks: tuple[int, int] | None = None, **net_args: Any) -> FastRCNNNet:
        """``net_args``: :class:`lit_models.nets.fast_rcnn.FastRCNNNet`'s arguments.

        Args:
            svd_ranks: Test and predict with fc6 and fc7 replaced by their truncated SVDs of these ranks (§3.1; the
                paper: 1024 and 256 for VGG-16's 4096-wide layers); None uses them as trained. Validation during
                training always uses the trained layers.
        """
        if svd_ranks is not None and (len(svd_ranks) != 2 or min(svd_ranks) < 1):
            raise ValueError(f"svd_ranks must be two ranks >= 1 (fc6, fc7) or null, got {svd_ranks}")
        self.svd_ranks = tuple(svd_ranks) if svd_ranks else None
        return FastRCNNNet(num_classes, **net_args)

    # Test and predict detect with the truncated head; at their end, or when they raise, fc6/fc7 are back.
    def on_test_start(self) -> None:
        self.net.truncate_head(self.svd_ranks)

    def on_test_end(self) -> None:
        self.net.truncate_head(None)

    on_predict_start = on_test_start
    on_predict_end = on_test_end

    def configure_callbacks(self) -> list:
        return [*super().configure_callbacks(), FullHeadAfterErrors()]


class FullHeadAfterErrors(Callback):
    """Restores Fast R-CNN's fc6/fc7 when a run stops with an exception (``on_test_end`` is then never called)."""

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        pl_module.net.truncate_head(None)
