"""R-CNN's staged training inside one ``fit``: fine-tune the CNN with a softmax, then train SVMs and box regressors."""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from pathlib import Path
from typing import Any, Literal

import torch
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from lit_models.datamodules.files import DataError
from lit_models.detection.base import Detector
from lit_models.detection.feature_cache import FeatureCache, fingerprint
from lit_models.detection.svm_mining import FEATURE_NORM, LinearSVM, mine
from lit_models.nets.region_heads import class_max_iou
from lit_models.runs import logger_runs

SVMTraining = Literal["mining", "online"]

log = logging.getLogger(__name__)


class StagedDetector(Detector):
    """The R-CNN paper's training (§2.3), which SPPNet follows, as epochs of one ``fit``.

    Epochs ``[0, finetune_epochs)``: the CNN is fine-tuned on warped (R-CNN) or pooled (SPPNet) proposals with a
    (K+1)-way softmax, foreground at IoU >= 0.5. Later epochs: the CNN is frozen and per-class linear SVMs
    (positives the ground-truth boxes, negatives proposals under IoU ``svm_neg_iou`` = 0.3 with every box of the
    class) and class-specific box regressors (proposals over IoU 0.6) are trained on its features. The net's
    ``stage`` is set at the start of every epoch, so a resumed run continues in the right stage. Until the SVMs
    have trained, detections are scored by the softmax, so validation measures the fine-tuned CNN alone.

    The SVMs, ``svm_training="mining"`` (the paper's): at the start of the first SVM epoch, the fc7 features of
    every training image's ground-truth boxes and proposals (the images unaugmented) are computed once with the
    frozen CNN and cached on disk (:mod:`lit_models.detection.feature_cache`), then each class's SVM is solved by
    hard-negative mining over the cache (:mod:`lit_models.detection.svm_mining`); the SVM epochs then train the
    box regressors. A resumed run reuses the cache where the weights and images match, and skips the mining once
    the checkpoint holds mined SVMs. Under DDP each process caches a share of the images and mines a share of the
    classes; the cache folder must be one they all see. ``svm_training="online"``: the SVMs train by SGD with the
    box regressors, on each step's sampled proposals (hinge loss).
    """

    uses_proposals = True

    def build_net(
        self,
        num_classes: int,
        finetune_epochs: int = 10,
        svm_training: SVMTraining = "mining",
        svm_C: float = 1e-3,
        svm_pos_weight: float = 2.0,
        svm_mining_rounds: int = 1,
        svm_images: int | None = None,
        svm_cache_dir: str | None = None,
        **net_args: Any,
    ) -> nn.Module:
        """The architecture's staged net (``build_staged_net``; ``net.stage`` is "finetune", then "svm" or
        "box_regression"). One optimizer serves every stage: frozen parameters get no gradient.

        Args:
            finetune_epochs: Epochs of softmax fine-tuning before the SVM stage.
            svm_training: "mining": the paper's hard-negative mining over cached features; "online": SGD on the
                hinge loss of each step's sampled proposals.
            svm_C: Mining: weight of the SVMs' losses against their regulariser (R-CNN's code: 0.001, for features
                scaled to a mean norm of 20).
            svm_pos_weight: Mining: extra weight of the positives' losses (R-CNN's code: 2).
            svm_mining_rounds: Mining: most passes over the cached images (R-CNN's code: 1); it stops early after
                a pass that finds no new hard negative, where the SVMs are those of all negatives at once.
            svm_images: Mining: cache and mine only this many training images, spread evenly over the training list
                (null: all, the paper's). The cache holds about 2,000 x D float16 values per image: on VOC 2007
                trainval (5,011 images) with a 4096-wide fc7, about 80 GB.
            svm_cache_dir: Mining: the cache folder (default: ``svm_cache`` in the logger's run folder, beside the
                ``version_N`` folders, so that a resumed run finds it; the trainer's root folder without a logger).
        """
        if finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0, got {finetune_epochs}")
        if svm_training not in ("mining", "online"):
            raise ValueError(f"svm_training must be 'mining' or 'online', got {svm_training!r}")
        if svm_mining_rounds < 1 or (svm_images is not None and svm_images < 1):
            raise ValueError(
                f"svm_mining_rounds must be >= 1 and svm_images >= 1 or null, got {svm_mining_rounds} and {svm_images}"
            )
        self.finetune_epochs, self.svm_training = finetune_epochs, svm_training
        self.svm_objective = LinearSVM(svm_C, svm_pos_weight)  # checks C and the weight
        self.svm_mining_rounds, self.svm_images, self.svm_cache_dir = svm_mining_rounds, svm_images, svm_cache_dir
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
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and 0 <= max_epochs <= self.finetune_epochs:
            rank_zero_warn(
                f"trainer.max_epochs={max_epochs} <= model.finetune_epochs={self.finetune_epochs}: "
                "the SVMs and box regressors will not be trained; detections are scored by the softmax."
            )
        elif self.svm_training == "mining":
            self.training_images()  # a fit on data the mining cannot read stops now, not after the fine-tuning

    def on_train_epoch_start(self) -> None:
        svm_stage = self.current_epoch >= self.finetune_epochs
        online = self.svm_training == "online"
        self.net.stage = "svm" if svm_stage and online else "box_regression" if svm_stage else "finetune"
        if self.net.stage == "box_regression" and not bool(self.net.svm_trained):
            self.mine_svms()
        self.log("train/svm_stage", float(svm_stage))

    # ------------------------------------------------------------------------------------- hard-negative mining

    def training_images(self) -> Any:
        """The training images with the evaluation transform (no flips or zoom), as the feature cache reads them."""
        data = self.trainer.datamodule
        if data is None or not hasattr(data, "evaluation_dataset"):
            raise ValueError(
                f"{type(self).__name__} with svm_training='mining' caches the features of the training images, read "
                "again without augmentation through the DataModule (DetectionDataModule.evaluation_dataset): fit with "
                f"a DetectionDataModule, or set model.svm_training to 'online'; got {type(data).__name__}."
            )
        return data.evaluation_dataset("train")

    def cache_folder(self) -> Path:
        if self.svm_cache_dir:
            return Path(self.svm_cache_dir).expanduser()
        runs = logger_runs(self.trainer)
        return (runs if runs is not None else Path(self.trainer.default_root_dir)) / "svm_cache"

    def mine_svms(self) -> None:
        """Cache the features of the training images, mine the SVMs over them and set them (class docstring)."""
        trainer, net = self.trainer, self.net
        cache, indices, cache_seconds = self.fill_cache()
        start = time.perf_counter()
        scale = cache.feature_scale(indices, FEATURE_NORM)
        rank, world = trainer.global_rank, trainer.world_size
        classes = list(range(1 + rank, self.num_classes, world))  # each process mines a share of the classes
        positives = cache.positives(indices, classes, scale)
        mined = mine(self.svm_objective, positives, lambda: cache.images(indices, classes, scale, net.svm_neg_iou),
                     self.svm_mining_rounds)  # fmt: skip
        weight, bias = torch.zeros_like(net.svm.weight), torch.zeros_like(net.svm.bias)
        # hard negatives, objective, classes whose last round found none: summed over every process's classes
        stats = torch.zeros(3, device=weight.device)
        for label, result in zip(classes, mined, strict=True):
            weight[label], bias[label] = result.weight.to(weight) * scale, result.bias.to(bias)
            objective = result.history[-1] if result.history else 0.0  # no negative: never solved
            stats += torch.tensor([len(result.negatives), objective, result.converged], device=stats.device)
            log.info("SVM %s: %d positives, %d hard negatives, %d solves, %d round(s) adding hard negatives%s, "
                     "objective %.4g", self.display_names[label], len(result.positives), len(result.negatives),
                     result.solves, result.rounds, ", then one adding none" if result.converged else "",
                     objective)  # fmt: skip
        weight, bias, stats = (trainer.strategy.reduce(t, reduce_op="sum") for t in (weight, bias, stats))
        with torch.no_grad():
            net.svm.weight.copy_(weight)
            net.svm.bias.copy_(bias)
            net.svm_trained.fill_(True)
        self.log_dict({"train/svm_cache_seconds": cache_seconds, "train/svm_solve_seconds": time.perf_counter() - start,
                       "train/svm_hard_negatives": stats[0], "train/svm_objective": stats[1],
                       "train/svm_converged_classes": stats[2]}, sync_dist=True)  # fmt: skip

    def fill_cache(self) -> tuple[FeatureCache, list[int], float]:
        """The feature cache of the training images that mining reads, filled (each process a share): the cache,
        the images' indices, the seconds it took."""
        trainer, net = self.trainer, self.net
        dataset = self.training_images()
        count = len(dataset) if self.svm_images is None else min(self.svm_images, len(dataset))
        indices = torch.linspace(0, len(dataset) - 1, count).round().long().unique().tolist() if count else []
        settings = {"net": type(net).__name__, **{name: getattr(net, name) for name in net.feature_settings}}
        cache = FeatureCache(self.cache_folder(), fingerprint([net.trunk, net.head], settings))

        def load(index: int) -> dict[str, Any]:
            item = dataset[index]
            if item["error"]:
                raise DataError(item["error"])
            return item

        with torch.no_grad():
            filled = cache.fill(indices[trainer.global_rank :: trainer.world_size], load, self.cache_entry)
        # Every process asks for log_dir: under DDP it is a collective (a broadcast from rank 0).
        about = {"weights": f"{type(self).__name__} after epoch {self.current_epoch - 1}", "run": trainer.log_dir,
                 "resumed_from": trainer.ckpt_path}  # fmt: skip
        trainer.strategy.barrier("svm_feature_cache")
        if trainer.is_global_zero:
            cache.finish(indices, about)
        log.info("SVM feature cache in %s: %d images computed, %d reused (%.0f s)", cache.folder, filled.computed,
                 filled.reused, filled.seconds)  # fmt: skip
        return cache, indices, filled.seconds

    def cache_entry(self, item: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One image's cache entry (:mod:`lit_models.detection.feature_cache`): its ground-truth boxes, then its
        proposals."""
        image, target = item["image"].to(self.device), item["target"]
        boxes = torch.cat([target["boxes"], item["proposals"]])  # G + R rows
        _, features, expand = self.net.roi_features([image], [boxes.to(image)])
        proposals = len(item["proposals"])
        return {
            "features": features[expand].float().cpu(),  # (G + R) x D
            "labels": torch.cat([target["labels"], torch.zeros(proposals, dtype=torch.int64)]),
            "positive": torch.cat([~target["difficult"].bool(), torch.zeros(proposals, dtype=torch.bool)]),
            "overlaps": class_max_iou(boxes, target["boxes"], target["labels"], self.num_classes),  # (G + R) x K
        }
