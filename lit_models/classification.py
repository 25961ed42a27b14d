"""Image classification: one training loop (ImageClassifier) and one thin module per ILSVRC architecture."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix

from lit_models.drawing import displayable
from lit_models.metrics import accuracy_metrics
from lit_models.nets.alexnet import AlexNet as AlexNetNet
from lit_models.nets.dense_evaluation import FullyConnectedHead
from lit_models.nets.densenet import DenseNet as DenseNetNet
from lit_models.nets.googlenet import GoogLeNet as GoogLeNetNet
from lit_models.nets.googlenet import GoogLeNetOutputs
from lit_models.nets.resnet import ResNet as ResNetNet
from lit_models.nets.vgg import VGG as VGGNet
from lit_models.nets.weights import load_weights
from lit_models.nets.yolo import YOLOv1ClassifierNet
from lit_models.pictures import Picture, Sample, confusion_picture, sample_grid
from lit_models.predictions import ClassPrediction
from lit_models.task import TaskModule, input_names
from lit_models.writers import ClassificationWriter

log = logging.getLogger(__name__)


class Mistake(NamedTuple):
    """A wrongly classified test image as shown: its (first) view as 3 x H x W uint8, the wrong class's
    probability, the predicted and the true class."""

    image: Tensor
    probability: float
    predicted: int
    truth: int


def first_view(images: Any, index: int) -> Tensor:
    """Image ``index`` of an evaluation batch as one 3 x H x W tensor: its first view where a test protocol gives
    several (at the first test scale the centre crop, GoogLeNet's centre square, or the whole image:
    ``lit_models.datamodules.protocols``)."""
    views = images[index]
    return views[0] if isinstance(views, list) or views.dim() == 4 else views


def most_confused(matrix: Tensor, names: Sequence[str], count: int = 5) -> list[str]:
    """The ``count`` largest off-diagonal cells of a confusion matrix (rows true, columns predicted) as
    "true -> predicted: count", largest first; empty where no image was misclassified."""
    cells = [(int(matrix[i, j]), i, j) for i, j in matrix.nonzero().tolist() if i != j]
    return [f"{names[i]} -> {names[j]}: {n}" for n, i, j in sorted(cells, key=lambda c: (-c[0], c[1], c[2]))[:count]]


class ImageClassifier(TaskModule, ABC):
    """The classification loop shared by every architecture.

    Cross-entropy (optional label smoothing) in training, on class indices or on class probabilities (the soft
    labels of MixUp / CutMix batches, ``ImageFolderDataModule(mixup_alpha=, cutmix_alpha=)``, whose training accuracy
    counts the dominant class of each mixed image); micro top-1/top-5 accuracy and loss for val/test,
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
        channels_last: Keep the net's weights and its input batches in the channels-last memory format (NHWC), which
            convolutions on recent GPUs (tensor cores, with bf16 or fp16) and on CPUs with oneDNN run faster in.
        compile: Compile the net with ``torch.compile`` when a run sets up (the first batches wait for it); the
            checkpoint's keys stay the plain net's, so it loads without compiling.
    """

    monitor = "val/acc_top1"
    prediction_writer = ClassificationWriter
    graph_description = "images N x 3 x S x S -> class scores N x K"
    mistakes_shown = 8  # the test's most confident mistakes drawn by summary_pictures

    def __init__(
        self,
        num_classes: int = 1000,
        label_smoothing: float = 0.0,
        weights: str | None = None,
        bias_lr_mult: float = 1.0,
        bias_weight_decay: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        norm_weight_decay: float | None = None,
        channels_last: bool = False,
        compile: bool = False,
        **net_args: Any,
    ) -> None:
        """Build the architecture's net, whose forward maps N x 3 x H x W images to class scores."""
        super().__init__(num_classes, bias_lr_mult, bias_weight_decay, optimizer, lr_scheduler, norm_weight_decay)
        self.net = self.build_net(num_classes, **net_args)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:  # loaded weights are copied into these tensors and keep their layout
            self.net.to(memory_format=torch.channels_last)
        self.compiled = False
        self.train_metrics = accuracy_metrics(num_classes, "train/")
        self.val_metrics = accuracy_metrics(num_classes, "val/")
        self.test_metrics = accuracy_metrics(num_classes, "test/")
        # Drawn by TrainingPictures at the end of test (summary_pictures); counting is cheap enough to always do.
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_mistakes: list[Mistake] = []
        if weights:
            load_weights(self.net, weights, num_classes)

    @abstractmethod
    def build_net(self, num_classes: int, **net_args: Any) -> nn.Module:
        """The architecture's network, from the constructor's ``**net_args`` (each module defines it)."""

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.hparams.compile and not self.compiled:
            # In place (nn.Module.compile): the parameters keep their names, so checkpoints load into a plain net.
            self.net.compile()
            self.compiled = True

    def forward(self, images: Tensor) -> Any:
        return self.net(images.contiguous(memory_format=self.memory_format))

    def logits(self, output: Any) -> Tensor:
        """Class scores N x num_classes from the net's output."""
        return output

    def training_loss(self, output: Any, labels: Tensor) -> Tensor:
        """Cross-entropy with the configured label smoothing; ``labels`` are class indices N or class probabilities
        N x K (a mixed batch), smoothed as torchvision's reference recipe smooths them: (1 - e) p + e / K."""
        return F.cross_entropy(output, labels, label_smoothing=self.hparams.label_smoothing)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, labels = self.split(batch)
        output = self(images)
        loss = self.training_loss(output, labels)
        # A mixed image is counted as its dominant class (the larger share of MixUp's blend or CutMix's area), so
        # train/acc_top1 goes on tracking the fit; it reads lower than on unmixed images.
        hard = labels.argmax(dim=1) if labels.is_floating_point() else labels
        self.train_metrics(self.logits(output).detach(), hard)
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

    def evaluation_logits(self, images: Tensor | list[list[Tensor]]) -> Tensor:
        """Class scores N x K of evaluation images N x 3 x H x W. A test protocol's views
        (``ImageFolderDataModule(test_crops=...)``) are scored by the log of their softmax class posteriors
        averaged, as every paper averages (AlexNet §4.1, VGG §3.2 and §4.2, GoogLeNet §7, ResNet §3.4): crops
        N x V x 3 x S x S through the net, or per image a list of whole images of their own sizes (dense
        evaluation) through ``dense_logits``, the views of one size in one batch."""
        if isinstance(images, Tensor) and images.dim() == 4:
            return self.logits(self(images))
        if isinstance(images, Tensor):
            count, crops = images.shape[:2]
            probs = torch.softmax(self.logits(self(images.flatten(0, 1))), dim=1).view(count, crops, -1).mean(dim=1)
            return probs.log()
        # Views of one size (an image and its mirror; every image of one shape) go through the net together.
        views = [(owner, view) for owner, image_views in enumerate(images) for view in image_views]
        device = views[0][1].device
        summed = torch.zeros(len(images), self.num_classes, device=device)
        counts = torch.zeros(len(images), device=device)
        for size in dict.fromkeys(view.shape for _, view in views):
            owners = torch.tensor([owner for owner, view in views if view.shape == size], device=device)
            scores = self.dense_logits(torch.stack([view for _, view in views if view.shape == size]))
            summed.index_add_(0, owners, torch.softmax(scores, dim=1).to(summed))
            counts.index_add_(0, owners, torch.ones(len(owners), device=device))
        return (summed / counts[:, None]).log()

    def dense_logits(self, images: Tensor) -> Tensor:
        """Class scores N x K of whole images N x 3 x H x W (each side at least the training size): the fully
        convolutional net's class score map averaged over its positions (VGG §3.2). AlexNet and VGG apply their
        fully connected layers as convolutions (``FullyConnectedHead.score_map``); the nets that average-pool
        globally before one linear layer (ResNet, GoogLeNet, DenseNet) already compute that average of a whole
        image (ResNet §3.4's fully convolutional form)."""
        if not isinstance(self.net, FullyConnectedHead):
            return self.logits(self(images))
        if self.data_spec is None or not self.data_spec.image_size:
            raise ValueError(
                f"dense evaluation of {type(self).__name__} needs the side it was trained on (the data's image_size): "
                "test the module with its DataModule, or one loaded from a checkpoint (lit_models.load)"
            )
        return self.net.score_map(images, self.data_spec.image_size).mean(dim=(2, 3))

    def _evaluate(self, batch: Any, stage: str, metrics: MetricCollection) -> Tensor:
        images, labels = self.split(batch)
        logits = self.evaluation_logits(images)
        # Plain cross-entropy (no smoothing) so the number is comparable across recipes.
        loss = F.cross_entropy(logits, labels)
        metrics.update(logits, labels)
        self.log_evaluation_loss(stage, loss, len(labels))
        self.log_dict(metrics, prog_bar=True, batch_size=len(labels))
        return logits

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        logits = self._evaluate(batch, "test", self.test_metrics)
        images, labels = self.split(batch)
        self.test_confusion.update(logits, labels)
        self.keep_mistakes(images, logits, labels)

    def keep_mistakes(self, images: Any, logits: Tensor, labels: Tensor) -> None:
        """Keep the ``mistakes_shown`` most confident mistakes so far: wrong top-1 with the highest probability."""
        probs, predicted = torch.softmax(logits.detach(), dim=1).max(dim=1)
        wrong = (predicted != labels).nonzero().flatten()
        worst = wrong[probs[wrong].argsort(descending=True)[: self.mistakes_shown]].tolist()
        mean_std = self.image_statistics()
        self.test_mistakes += [
            Mistake(displayable(first_view(images, i)[None], *mean_std)[0], probs[i].item(), int(predicted[i]),
                    int(labels[i]))
            for i in worst
        ]  # fmt: skip
        self.test_mistakes = sorted(self.test_mistakes, key=lambda m: -m.probability)[: self.mistakes_shown]

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()
        self.test_mistakes = []

    def on_test_epoch_end(self) -> None:
        # Every rank: computing the matrix gathers it from all of them.
        pairs = most_confused(self.test_confusion.compute(), self.display_names)
        if pairs and self.trainer.is_global_zero:
            log.info("most confused classes in test (true -> predicted: count):\n  %s", "\n  ".join(pairs))

    @torch.no_grad()
    def show(self, batch: Any, count: int) -> list[Sample]:
        """Each image (its first view, under a multi-view test protocol) with its predicted class and probability,
        and its true class: green when right, red when wrong."""
        images, labels = self.split(batch)
        images, labels = images[:count], labels[:count]
        probs, predicted = torch.softmax(self.evaluation_logits(images), dim=1).max(dim=1)
        mean_std = self.image_statistics()
        return [
            self.captioned(displayable(first_view(images, i)[None], *mean_std)[0], prob, guess, truth)
            for i, (prob, guess, truth) in enumerate(zip(probs.tolist(), predicted.tolist(), labels.tolist(),
                                                         strict=True))
        ]  # fmt: skip

    def captioned(self, image: Tensor, probability: float, predicted: int, truth: int) -> Sample:
        """An image with its predicted class and probability over its true class, green when right, red when wrong."""
        names = self.display_names
        caption = f"{names[predicted]} {probability:.2f}\ntrue: {names[truth]}"
        return Sample(image=image, caption=caption, colour="green" if predicted == truth else "red")

    def summary_pictures(self, stage: str) -> dict[str, Picture]:
        """The test split's confusion matrix (rows true, columns predicted, class names on the axes, the most
        confused pairs above it) and the most confident mistakes (rank 0's share of the split under DDP)."""
        if stage != "test":
            return {}
        matrix = self.test_confusion.compute()
        pairs = most_confused(matrix, self.display_names)
        title = "most confused (true -> predicted: count)\n" + "\n".join(pairs) if pairs else None
        pictures = {"test/confusion_matrix": confusion_picture(matrix, self.class_names, self.test_confusion, title)}
        if self.test_mistakes:
            pictures["test/mistakes"] = sample_grid([self.captioned(*mistake) for mistake in self.test_mistakes])
        return pictures

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
