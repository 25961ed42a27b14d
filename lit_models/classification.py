"""Image classification: one training loop (ImageClassifier) and one thin module per ILSVRC architecture."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix

from lit_models.drawing import displayable
from lit_models.metrics import accuracy_metrics
from lit_models.nets.alexnet import AlexNet as AlexNetNet
from lit_models.nets.densenet import DenseNet as DenseNetNet
from lit_models.nets.googlenet import GoogLeNet as GoogLeNetNet
from lit_models.nets.googlenet import GoogLeNetOutputs
from lit_models.nets.resnet import ResNet as ResNetNet
from lit_models.nets.vgg import VGG as VGGNet
from lit_models.nets.weights import load_weights
from lit_models.nets.yolo import YOLOv1ClassifierNet
from lit_models.pictures import Picture, Sample, confusion_picture
from lit_models.predictions import ClassPrediction
from lit_models.task import TaskModule, input_names
from lit_models.writers import ClassificationWriter


class ImageClassifier(TaskModule, ABC):
    """The classification loop shared by every architecture.

    Cross-entropy (optional label smoothing) in training; micro top-1/top-5 accuracy and loss for val/test,
    logged as ``{stage}/acc_top1``, ``{stage}/acc_top5``, ``{stage}/loss``; optimizer and LR scheduler injected
    from the config; the class list saved in every checkpoint. Each architecture's module defines ``build_net``
    (the rest of the constructor's arguments go to it, and ``--model.help AlexNet`` lists them) and, where the
    architecture needs it, overrides ``training_loss`` and ``logits``.

    Args:
        num_classes: Number of classes (set from the data by the CLI).
        label_smoothing: Cross-entropy label smoothing in training (Szegedy et al. 2016 use 0.1).
        weights: Weights to start from: torchvision's by name (IMAGENET1K_V1, DEFAULT; from torch's cache, downloaded
            there when missing), or a local file (torchvision state dict or lit-models checkpoint). A head of
            another size is left freshly initialised.
    """

    monitor = "val/acc_top1"
    prediction_writer = ClassificationWriter
    graph_description = "images N x 3 x S x S -> class scores N x K"

    def __init__(
        self,
        num_classes: int = 1000,
        label_smoothing: float = 0.0,
        weights: str | None = None,
        bias_lr_mult: float = 1.0,
        bias_weight_decay: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        **net_args: Any,
    ) -> None:
        """Build the architecture's net, whose forward maps N x 3 x H x W images to class scores."""
        super().__init__(num_classes, bias_lr_mult, bias_weight_decay, optimizer, lr_scheduler)
        self.net = self.build_net(num_classes, **net_args)
        self.train_metrics = accuracy_metrics(num_classes, "train/")
        self.val_metrics = accuracy_metrics(num_classes, "val/")
        self.test_metrics = accuracy_metrics(num_classes, "test/")
        # Drawn by TrainingPictures at the end of test (summary_pictures); counting is cheap enough to always do.
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        if weights:
            load_weights(self.net, weights, num_classes)

    @abstractmethod
    def build_net(self, num_classes: int, **net_args: Any) -> nn.Module:
        """The architecture's network, from the constructor's ``**net_args`` (each module defines it)."""

    def forward(self, images: Tensor) -> Any:
        return self.net(images)

    def logits(self, output: Any) -> Tensor:
        """Class scores N x num_classes from the net's output."""
        return output

    def training_loss(self, output: Any, labels: Tensor) -> Tensor:
        return F.cross_entropy(output, labels, label_smoothing=self.hparams.label_smoothing)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, labels = self.split(batch)
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

    def evaluation_logits(self, images: Tensor) -> Tensor:
        """Class scores of evaluation images N x 3 x H x W; for multi-crop batches N x crops x 3 x H x W (ten-crop
        test, ``ImageFolderDataModule(test_crops=10)``), the log of the softmax averaged over each image's crops,
        as AlexNet's and ResNet's tables are measured."""
        if images.dim() == 4:
            return self.logits(self(images))
        count, crops = images.shape[:2]
        probs = torch.softmax(self.logits(self(images.flatten(0, 1))), dim=1).view(count, crops, -1).mean(dim=1)
        return probs.log()

    def _evaluate(self, batch: Any, stage: str, metrics: MetricCollection) -> Tensor:
        images, labels = self.split(batch)
        logits = self.evaluation_logits(images)
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
        self.test_confusion.update(logits, self.split(batch)[1])

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()

    @torch.no_grad()
    def show(self, batch: Any, count: int) -> list[Sample]:
        """Each image with its predicted class and probability, and its true class: green when right, red when
        wrong."""
        images, labels = self.split(batch)
        images, labels = images[:count], labels[:count]
        probs, predicted = torch.softmax(self.logits(self(images)), dim=1).max(dim=1)
        names = self.display_names
        shown = []
        for image, prob, guess, truth in zip(
            displayable(images, *self.image_statistics()),
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

    def predict_step(self, batch: Any, batch_idx: int) -> list[ClassPrediction]:
        images, _ = self.split(batch)
        probs = torch.softmax(self.logits(self(images)), dim=1)
        top_probs, top_indices = probs.topk(min(5, self.num_classes), dim=1)
        return [
            ClassPrediction(path=path, name=name, classes=[self.display_names[i] for i in top], indices=top,
                            probs=probs)
            for path, name, top, probs in zip(*input_names(batch, len(images), batch_idx), top_indices.tolist(),
                                              top_probs.tolist(), strict=True)
        ]  # fmt: skip


class AlexNet(ImageClassifier):
    """Krizhevsky et al. 2012, the paper's net (LRN, overlapping pooling, optional two towers) or torchvision's."""

    def build_net(self, num_classes: int, **net_args: Any) -> AlexNetNet:
        """``net_args``: :class:`lit_models.nets.alexnet.AlexNet`'s arguments."""
        return AlexNetNet(num_classes=num_classes, **net_args)


class VGG(ImageClassifier):
    """Simonyan & Zisserman 2015, configurations A/B/D/E (11/13/16/19 weight layers), optional batch norm."""

    def build_net(self, num_classes: int, **net_args: Any) -> VGGNet:
        """``net_args``: :class:`lit_models.nets.vgg.VGG`'s arguments."""
        return VGGNet(num_classes=num_classes, **net_args)


class GoogLeNet(ImageClassifier):
    """Szegedy et al. 2015: Inception v1 with two auxiliary classifiers added to the training loss (§5)."""

    def build_net(self, num_classes: int, aux_weight: float = 0.3, **net_args: Any) -> GoogLeNetNet:
        """``net_args``: :class:`lit_models.nets.googlenet.GoogLeNet`'s arguments.

        Args:
            aux_weight: Weight of each auxiliary classifier's loss in training (0.3 in the paper); 0 removes the
                auxiliary heads.
        """
        self.aux_weight = aux_weight
        return GoogLeNetNet(num_classes=num_classes, aux_logits=aux_weight > 0, **net_args)

    def logits(self, output: GoogLeNetOutputs) -> Tensor:
        # At inference the auxiliary classifiers are discarded (paper §5).
        return output.logits

    def training_loss(self, output: GoogLeNetOutputs, labels: Tensor) -> Tensor:
        loss = super().training_loss(output.logits, labels)
        for aux in (output.aux_logits1, output.aux_logits2):
            if aux is not None:
                loss = loss + self.aux_weight * super().training_loss(aux, labels)
        return loss


class ResNet(ImageClassifier):
    """He et al. 2016: residual networks 18-152, or their plain counterparts (``residual=False``)."""

    def build_net(self, num_classes: int, **net_args: Any) -> ResNetNet:
        """``net_args``: :class:`lit_models.nets.resnet.ResNet`'s arguments."""
        return ResNetNet(num_classes=num_classes, **net_args)


class DenseNet(ImageClassifier):
    """Huang et al. 2017: DenseNet-BC 121/161/169/201 with growth rate k and compression 0.5."""

    def build_net(self, num_classes: int, **net_args: Any) -> DenseNetNet:
        """``net_args``: :class:`lit_models.nets.densenet.DenseNet`'s arguments."""
        return DenseNetNet(num_classes=num_classes, **net_args)


class YOLOClassifier(ImageClassifier):
    """Redmon et al. 2016, §2.2: YOLO v1's first 20 convolutions + average pool + fully connected layer, pre-trained
    as an ImageNet classifier at half the detector's input (224 for 448). ``lit_models.YOLOv1`` then starts from its
    checkpoint (``--init_from``, or the ``detection/yolov1_pretrained_*`` chains) with its own 4 convolutions and 2
    fully connected layers added."""

    def build_net(self, num_classes: int, **net_args: Any) -> YOLOv1ClassifierNet:
        """``net_args``: :class:`lit_models.nets.yolo.YOLOv1ClassifierNet`'s arguments."""
        return YOLOv1ClassifierNet(num_classes=num_classes, **net_args)
