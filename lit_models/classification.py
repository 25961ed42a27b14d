"""Image classification: one training loop (ImageClassifier) and one thin module per ILSVRC architecture."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix

from lit_models.callbacks import PredictionCSVWriter
from lit_models.metrics import accuracy_metrics
from lit_models.nets.alexnet import AlexNet as AlexNetNet
from lit_models.nets.densenet import DenseNet as DenseNetNet
from lit_models.nets.googlenet import GoogLeNet as GoogLeNetNet
from lit_models.nets.googlenet import GoogLeNetOutputs
from lit_models.nets.resnet import ResNet as ResNetNet
from lit_models.nets.vgg import VGG as VGGNet
from lit_models.nets.weights import load_weights
from lit_models.pictures import Picture, Sample, confusion_picture, displayable, image_statistics
from lit_models.task import TaskModule


def split_batch(batch: Any) -> tuple[Tensor, Tensor]:
    """Our DataModules yield dicts; plain (images, labels) tuples from anyone else's loader work too."""
    if isinstance(batch, Mapping):
        return batch["image"], batch["label"]
    return batch[0], batch[1]


class ImageClassifier(TaskModule):
    """The classification loop shared by every architecture.

    Cross-entropy (optional label smoothing) in training; micro top-1/top-5 accuracy and loss for val/test,
    logged as ``{stage}/acc_top1``, ``{stage}/acc_top5``, ``{stage}/loss``; optimizer and LR scheduler injected
    from the config; the class list saved in every checkpoint. Subclasses only build ``net`` and, where the
    architecture needs it, override ``training_loss`` and ``logits``.
    """

    monitor = "val/acc_top1"
    prediction_writer = PredictionCSVWriter

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        weights: str | None = None,
    ) -> None:
        """Wrap a network whose forward maps N x 3 x H x W images to class scores.

        Args:
            net: The network.
            num_classes: Number of classes (set from the data by the CLI).
            label_smoothing: Cross-entropy label smoothing in training (Szegedy et al. 2016 use 0.1).
            optimizer: Optimizer factory; default SGD(lr=0.01, momentum=0.9). Paper recipes are in configs/.
            lr_scheduler: LR scheduler factory; default none.
            weights: Local weight file (torchvision state dict or lit-models checkpoint) to start from; a head of
                another size is left freshly initialised.
        """
        super().__init__(net, num_classes, optimizer, lr_scheduler)
        self.train_metrics = accuracy_metrics(num_classes, "train/")
        self.val_metrics = accuracy_metrics(num_classes, "val/")
        self.test_metrics = accuracy_metrics(num_classes, "test/")
        # Drawn by TrainingPictures at the end of test (summary_pictures); counting is cheap enough to always do.
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        if weights:
            load_weights(self.net, weights, num_classes)

    def forward(self, images: Tensor) -> Any:
        return self.net(images)

    def logits(self, output: Any) -> Tensor:
        """Class scores N x num_classes from the net's output."""
        return output

    def training_loss(self, output: Any, labels: Tensor) -> Tensor:
        return F.cross_entropy(output, labels, label_smoothing=self.hparams.label_smoothing)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, labels = split_batch(batch)
        output = self(images)
        loss = self.training_loss(output, labels)
        self.train_metrics(self.logits(output).detach(), labels)
        self.log(
            "train/loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            sync_dist=True,
            batch_size=len(labels),
        )
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, batch_size=len(labels))
        return loss

    def _evaluate(self, batch: Any, stage: str, metrics: MetricCollection) -> Tensor:
        images, labels = split_batch(batch)
        logits = self.logits(self(images))
        # Plain cross-entropy (no smoothing) so the number is comparable across recipes.
        loss = F.cross_entropy(logits, labels)
        metrics.update(logits, labels)
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=True, batch_size=len(labels))
        self.log_dict(metrics, prog_bar=True, batch_size=len(labels))
        return logits

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        logits = self._evaluate(batch, "test", self.test_metrics)
        self.test_confusion.update(logits, split_batch(batch)[1])

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()

    @torch.no_grad()
    def show(self, batch: Any, count: int) -> list[Sample]:
        """Each image with its predicted class and probability, and its true class: green when right, red when
        wrong."""
        images, labels = split_batch(batch)
        images, labels = images[:count], labels[:count]
        probs, predicted = torch.softmax(self.logits(self(images)), dim=1).max(dim=1)
        names = self.class_names or [str(index) for index in range(self.num_classes)]
        shown = []
        for image, prob, guess, truth in zip(
            displayable(images, *image_statistics(self)),
            probs.tolist(),
            predicted.tolist(),
            labels.tolist(),
            strict=True,
        ):
            caption = f"{names[guess]} {prob:.2f}\ntrue: {names[truth]}"
            shown.append(Sample(image=image, caption=caption, colour="green" if guess == truth else "red"))
        return shown

    def summary_pictures(self, stage: str) -> dict[str, Picture]:
        """The test split's confusion matrix (rows true, columns predicted), class names on the axes."""
        if stage != "test":
            return {}
        matrix = self.test_confusion.compute()
        return {"test/confusion_matrix": confusion_picture(matrix, self.class_names, self.test_confusion)}

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        images, _ = split_batch(batch)
        probs = torch.softmax(self.logits(self(images)), dim=1)
        top_probs, top_indices = probs.topk(min(5, self.num_classes), dim=1)
        paths = batch["path"] if isinstance(batch, Mapping) else [""] * len(images)
        return {"path": paths, "indices": top_indices.cpu(), "probs": top_probs.cpu()}


class AlexNet(ImageClassifier):
    """Krizhevsky et al. 2012, the paper's net (LRN, overlapping pooling, optional two towers) or torchvision's."""

    def __init__(
        self,
        num_classes: int = 1000,
        variant: Literal["paper", "torchvision"] = "paper",
        two_tower: bool = False,
        width_mult: float = 1.0,
        hidden: int = 4096,
        dropout: float = 0.5,
        init: Literal["torch", "paper", "kaiming"] = "torch",
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        weights: str | None = None,
    ) -> None:
        """AlexNet classifier.

        Args:
            num_classes: Number of classes (set from the data by the CLI).
            variant: "paper" (96-256-384-384-256 with local response normalisation) or "torchvision"
                (64-192-384-256-256, no LRN; loads torchvision's weights).
            two_tower: The paper's two-GPU net: conv2, conv4, conv5 grouped in two towers ("paper" only).
            width_mult: Multiplies every convolution's channels (size knob).
            hidden: Width of the two fully connected layers (4096 in the paper).
            dropout: Dropout probability before the fully connected layers.
            init: Weight initialisation: "torch" (layer defaults, as torchvision), "paper" (§5: N(0, 0.01) weights,
                biases 1 in conv2/4/5 and the hidden FC layers) or "kaiming" (He et al. 2015).
            label_smoothing: Cross-entropy label smoothing in training.
            optimizer: Optimizer factory; default SGD(lr=0.01, momentum=0.9). Paper recipes are in configs/.
            lr_scheduler: LR scheduler factory; default none.
            weights: Local weight file (torchvision state dict or lit-models checkpoint) to start from.
        """
        net = AlexNetNet(num_classes, variant, two_tower, width_mult, hidden, dropout, init)
        super().__init__(net, num_classes, label_smoothing, optimizer, lr_scheduler, weights)


class VGG(ImageClassifier):
    """Simonyan & Zisserman 2015, configurations A/B/D/E (11/13/16/19 weight layers), optional batch norm."""

    def __init__(
        self,
        num_classes: int = 1000,
        depth: Literal[11, 13, 16, 19] = 16,
        batch_norm: bool = False,
        width_mult: float = 1.0,
        hidden: int = 4096,
        dropout: float = 0.5,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        weights: str | None = None,
    ) -> None:
        """VGG classifier.

        Args:
            num_classes: Number of classes (set from the data by the CLI).
            depth: Weight layers: 11, 13, 16 or 19.
            batch_norm: Batch norm after every convolution (torchvision's vgg*_bn; not in the paper).
            width_mult: Multiplies every convolution's channels (size knob).
            hidden: Width of the two fully connected layers (4096 in the paper).
            dropout: Dropout probability in the fully connected layers.
            label_smoothing: Cross-entropy label smoothing in training.
            optimizer: Optimizer factory; default SGD(lr=0.01, momentum=0.9). Paper recipes are in configs/.
            lr_scheduler: LR scheduler factory; default none.
            weights: Local weight file (torchvision state dict or lit-models checkpoint) to start from.
        """
        net = VGGNet(depth, num_classes, batch_norm, width_mult, hidden, dropout)
        super().__init__(net, num_classes, label_smoothing, optimizer, lr_scheduler, weights)


class GoogLeNet(ImageClassifier):
    """Szegedy et al. 2015: Inception v1 with two auxiliary classifiers added to the training loss (§5)."""

    def __init__(
        self,
        num_classes: int = 1000,
        aux_weight: float = 0.3,
        variant: Literal["paper", "torchvision"] = "paper",
        width_mult: float = 1.0,
        dropout: float = 0.4,
        aux_dropout: float = 0.7,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        weights: str | None = None,
    ) -> None:
        """GoogLeNet classifier.

        Args:
            num_classes: Number of classes (set from the data by the CLI).
            aux_weight: Weight of each auxiliary classifier's loss in training (0.3 in the paper); 0 removes the
                auxiliary heads.
            variant: "paper" (5x5 branches, LRN, no batch norm) or "torchvision" (batch norm; loads its weights).
            width_mult: Multiplies every convolution's channels (size knob).
            dropout: Dropout before the main classifier (0.4 in the paper).
            aux_dropout: Dropout in the auxiliary classifiers (0.7 in the paper).
            label_smoothing: Cross-entropy label smoothing in training.
            optimizer: Optimizer factory; default SGD(lr=0.01, momentum=0.9). Paper recipes are in configs/.
            lr_scheduler: LR scheduler factory; default none.
            weights: Local weight file (torchvision state dict or lit-models checkpoint) to start from.
        """
        net = GoogLeNetNet(
            num_classes=num_classes,
            aux_logits=aux_weight > 0,
            variant=variant,
            width_mult=width_mult,
            dropout=dropout,
            aux_dropout=aux_dropout,
        )
        super().__init__(net, num_classes, label_smoothing, optimizer, lr_scheduler, weights)

    def logits(self, output: GoogLeNetOutputs) -> Tensor:
        # At inference the auxiliary classifiers are discarded (paper §5).
        return output.logits

    def training_loss(self, output: GoogLeNetOutputs, labels: Tensor) -> Tensor:
        loss = super().training_loss(output.logits, labels)
        for aux in (output.aux_logits1, output.aux_logits2):
            if aux is not None:
                loss = loss + self.hparams.aux_weight * super().training_loss(aux, labels)
        return loss


class ResNet(ImageClassifier):
    """He et al. 2016: residual networks 18-152, or their plain counterparts (``residual=False``)."""

    def __init__(
        self,
        num_classes: int = 1000,
        depth: Literal[18, 34, 50, 101, 152] = 50,
        residual: bool = True,
        shortcut: Literal["A", "B", "C"] = "B",
        small_input: bool = False,
        width_mult: float = 1.0,
        stride_in_1x1: bool = False,
        zero_init_residual: bool = False,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        weights: str | None = None,
    ) -> None:
        """ResNet classifier.

        Args:
            num_classes: Number of classes (set from the data by the CLI).
            depth: 18, 34 (basic blocks), 50, 101, 152 (bottleneck blocks).
            residual: False removes the shortcuts: the paper's plain network (degradation experiment).
            shortcut: "A" zero-padding identity, "B" projection where the shape changes, "C" projection always.
            small_input: 3x3 stride-1 stem without max-pool, for 32x32-class images.
            width_mult: Multiplies every stage width (size knob).
            stride_in_1x1: Bottleneck stride in the first 1x1 conv (paper) rather than the 3x3 (torchvision).
            zero_init_residual: Zero-initialise each block's last BN scale (Goyal et al. 2017).
            label_smoothing: Cross-entropy label smoothing in training.
            optimizer: Optimizer factory; default SGD(lr=0.01, momentum=0.9). Paper recipes are in configs/.
            lr_scheduler: LR scheduler factory; default none.
            weights: Local weight file (torchvision state dict or lit-models checkpoint) to start from.
        """
        net = ResNetNet(
            depth, num_classes, residual, shortcut, small_input, width_mult, stride_in_1x1, zero_init_residual
        )
        super().__init__(net, num_classes, label_smoothing, optimizer, lr_scheduler, weights)


class DenseNet(ImageClassifier):
    """Huang et al. 2017: DenseNet-BC 121/161/169/201 with growth rate k and compression 0.5."""

    def __init__(
        self,
        num_classes: int = 1000,
        depth: Literal[121, 161, 169, 201] = 121,
        growth_rate: int | None = None,
        num_init_features: int | None = None,
        compression: float = 0.5,
        drop_rate: float = 0.0,
        small_input: bool = False,
        memory_efficient: bool = False,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        weights: str | None = None,
    ) -> None:
        """DenseNet classifier.

        Args:
            num_classes: Number of classes (set from the data by the CLI).
            depth: 121, 161, 169 or 201.
            growth_rate: k, channels each dense layer adds (None: the paper's 32, or 48 for DenseNet-161).
            num_init_features: Stem channels (None: 2k, or 96 for DenseNet-161).
            compression: Transition-layer compression theta (0.5 in DenseNet-BC).
            drop_rate: Dropout after each dense layer (the paper uses 0.2 without data augmentation).
            small_input: The paper's CIFAR stem (one 3x3 convolution, no pooling) for 32x32-class images.
            memory_efficient: Recompute bottleneck activations in backward (checkpointing) to save memory.
            label_smoothing: Cross-entropy label smoothing in training.
            optimizer: Optimizer factory; default SGD(lr=0.01, momentum=0.9). Paper recipes are in configs/.
            lr_scheduler: LR scheduler factory; default none.
            weights: Local weight file (torchvision state dict or lit-models checkpoint) to start from.
        """
        net = DenseNetNet(
            depth=depth,
            num_classes=num_classes,
            growth_rate=growth_rate,
            num_init_features=num_init_features,
            compression=compression,
            drop_rate=drop_rate,
            small_input=small_input,
            memory_efficient=memory_efficient,
        )
        super().__init__(net, num_classes, label_smoothing, optimizer, lr_scheduler, weights)
