"""R-CNN's staged training inside one ``fit``: fine-tune the CNN with a softmax, then train SVMs and box regressors."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from lit_models.detection.base import Detector


class StagedDetector(Detector):
    """The R-CNN paper's training (§2.3), which SPPNet follows, as epochs of one ``fit``.

    Epochs ``[0, finetune_epochs)``: the CNN is fine-tuned on warped (R-CNN) or pooled (SPPNet) proposals with a
    (K+1)-way softmax, foreground at IoU >= 0.5. Later epochs: the CNN is frozen and per-class linear SVMs (hinge
    loss; positives the ground-truth boxes, negatives proposals under IoU 0.3) and class-specific box regressors
    (proposals over IoU 0.6) are trained on its features. The net's ``stage`` is set at the start of every epoch,
    so a resumed run continues in the right stage. Until the SVMs have trained, detections are scored by the
    softmax, so validation measures the fine-tuned CNN alone.
    """

    uses_proposals = True

    def build_net(self, num_classes: int, finetune_epochs: int = 10, **net_args: Any) -> nn.Module:
        """The architecture's staged net (``build_staged_net``; ``net.stage`` is "finetune" or "svm"). One optimizer
        serves both stages: frozen parameters get no gradient.

        Args:
            finetune_epochs: Epochs of softmax fine-tuning before the SVM stage.
        """
        if finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0, got {finetune_epochs}")
        self.finetune_epochs = finetune_epochs
        return self.build_staged_net(num_classes, **net_args)

    @abstractmethod
    def build_staged_net(self, num_classes: int, **net_args: Any) -> nn.Module:
        """The architecture's network (R-CNN's or SPPNet's), from the constructor's remaining ``**net_args``."""

    def setup(self, stage: str) -> None:
        super().setup(stage)
        strategy = self.trainer.strategy
        # Each stage leaves parameters without gradients (the SVMs while fine-tuning, the CNN in the SVM stage),
        # which DDP's default gradient reducer treats as an error in the middle of training.
        if (
            stage == "fit"
            and isinstance(strategy, DDPStrategy)
            and not strategy._ddp_kwargs.get("find_unused_parameters")
        ):
            raise ValueError(
                f"{type(self).__name__} trains different parameters in each stage; under DDP use "
                "--trainer.strategy ddp_find_unused_parameters_true (or DDPStrategy(find_unused_parameters=True))."
            )

    def on_train_start(self) -> None:
        if self.trainer.max_epochs is not None and 0 <= self.trainer.max_epochs <= self.finetune_epochs:
            rank_zero_warn(
                f"trainer.max_epochs={self.trainer.max_epochs} <= model.finetune_epochs={self.finetune_epochs}: "
                "the SVMs and box regressors will not be trained; detections are scored by the softmax."
            )

    def on_train_epoch_start(self) -> None:
        self.net.stage = "finetune" if self.current_epoch < self.finetune_epochs else "svm"
        self.log("train/svm_stage", float(self.net.stage == "svm"))
