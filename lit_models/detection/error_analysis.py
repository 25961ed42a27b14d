"""What a detector's test adds to mAP, logged and drawn at the end of the split: YOLO's error breakdown (Redmon et al.
2016, §4.2, Fig. 4), a detection confusion matrix, each class's precision-recall curve, the worst mistakes on their
images, and the recall of region proposals against their number."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from torchmetrics.classification import MulticlassConfusionMatrix

from lit_models.detection.errors import CATEGORIES, Breakdown, ErrorBreakdown, similar_pairs
from lit_models.detection.mistakes import Mistakes, match_any_class
from lit_models.detection.proposal_recall import PROPOSAL_COUNTS, RECALL_IOUS, ProposalRecall, RecallCurve
from lit_models.pictures import Picture, confusion_picture, figure_array, sample_grid

CATEGORY_COLOURS = ("tab:green", "tab:orange", "tab:purple", "tab:blue", "tab:red")


class ErrorAnalysis(nn.Module):
    """A detector's test split analysed, for its logs (``scalars``) and its pictures (``pictures``):

    - ``test/errors/<category>``: YOLO's breakdown of each class's top N detections into correct, localization,
      similar, other and background (:mod:`lit_models.detection.errors`), averaged over the classes; drawn as a pie
      with a bar per class (``test/errors``).
    - ``test/confusion_matrix``: the detections scoring at least the module's ``draw_score`` matched to the objects
      at IoU 0.5 whatever their classes (:func:`lit_models.detection.mistakes.match_any_class`); row background:
      detections of no object, column background: objects missed.
    - ``test/precision_recall``: each class's precision against recall at IoU 0.5.
    - ``test/false_positives`` and ``test/missed``: the highest-scoring detections that are not correct, with their
      category, and the largest missed objects, with the detection that overlaps each most.
    - for detectors with region proposals: ``test/proposal_recall_50`` and ``_70`` with every proposal, at IoU 0.5
      and 0.7, and ``test/proposal_recall_50@<k>`` with the first k (``PROPOSAL_COUNTS`` up to the most an image
      had), drawn against k (``test/proposal_recall``).

    Args:
        num_classes: Classes including background.
        similar_classes: Groups of similar classes by name (the Detector's argument).
        most: Mistakes shown of each kind.
    """

    def __init__(self, num_classes: int, similar_classes: Sequence[Sequence[str]] | None = None, most: int = 8):
        super().__init__()
        self.similar_classes = [list(group) for group in similar_classes or []]
        self.breakdown = ErrorBreakdown(num_classes)
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.mistakes = Mistakes(most)
        self.proposal_recall = ProposalRecall()

    def use_classes(self, class_names: Sequence[str]) -> None:
        """Resolve ``similar_classes`` against the data's classes (ValueError naming any that is not one)."""
        self.breakdown.similar = similar_pairs(self.similar_classes, class_names)

    def reset(self) -> None:
        for metric in (self.breakdown, self.confusion, self.mistakes, self.proposal_recall):
            metric.reset()

    def update(
        self,
        images: Sequence[Tensor],
        statistics: tuple[Sequence[float] | None, Sequence[float] | None],
        detections: list[dict[str, Tensor]],
        truth: list[dict[str, Tensor]],
        min_score: float,
    ) -> None:
        """One test batch: its images (and their normalisation's mean and std, to show them), the detections and the
        truth (:func:`lit_models.metrics.evaluation_targets`); ``min_score`` is the lowest score of a detection the
        confusion matrix counts."""
        self.breakdown.update(detections, truth)
        categories = self.breakdown.categories[-len(detections) :]  # this batch's, just categorised
        matches = [match_any_class(found, objects, min_score) for found, objects in zip(detections, truth, strict=True)]
        device = self.confusion.confmat.device
        predicted = torch.cat([torch.zeros(0, dtype=torch.long), *(match.predicted for match in matches)])
        true = torch.cat([torch.zeros(0, dtype=torch.long), *(match.truth for match in matches)])
        self.confusion.update(predicted.to(device), true.to(device))
        self.mistakes.update(images, statistics, detections, truth, categories, [match.missed for match in matches])

    def scalars(self) -> dict[str, float]:
        """The logged values, by key. Called on every rank (computing gathers the split from all of them)."""
        logged = {}
        if self.breakdown.update_called:
            fractions = self.breakdown.compute().fractions.tolist()
            logged |= {f"test/errors/{name}": share for name, share in zip(CATEGORIES, fractions, strict=True)}
        if self.proposal_recall.update_called:
            curve = self.proposal_recall.compute()
            for column, iou in enumerate(RECALL_IOUS):
                name = f"test/proposal_recall_{round(iou * 100)}"
                logged[name] = float(curve.final[column])
                for count in (count for count in PROPOSAL_COUNTS if count <= curve.recall.shape[1]):
                    logged[f"{name}@{count}"] = float(curve.at(count)[column])
        return logged

    def pictures(self, names: Sequence[str]) -> dict[str, Picture]:
        """The pictures by tag. Called on every rank (computing gathers the split from all of them)."""
        drawn = {}
        if self.breakdown.update_called:
            breakdown = self.breakdown.compute()
            drawn["test/errors"] = breakdown_picture(breakdown, names)
            drawn["test/confusion_matrix"] = confusion_picture(self.confusion.compute(), names, self.confusion)
            drawn["test/precision_recall"] = precision_recall_picture(breakdown.curves, names)
            for tag, samples in zip(("test/false_positives", "test/missed"), self.mistakes.samples(names), strict=True):
                if samples:
                    drawn[tag] = sample_grid(samples)
        if self.proposal_recall.update_called:
            drawn["test/proposal_recall"] = proposal_recall_picture(self.proposal_recall.compute())
        return drawn


def breakdown_picture(breakdown: Breakdown, names: Sequence[str]) -> Picture:
    """YOLO's Fig. 4: a pie of the categories' mean shares, and beside it each class's shares as a stacked bar."""
    classes = [label for label in range(1, len(names)) if breakdown.counts[label].sum() > 0]
    figure = Figure(figsize=(10, max(3.6, 1.2 + 0.28 * len(classes))), dpi=100)
    figure.set_layout_engine("constrained")
    pie, bars = figure.subplots(1, 2, width_ratios=[1, 1.3])
    fractions = breakdown.fractions.numpy()
    if classes:
        labels = [
            f"{name} {100 * share:.1f}%" if share > 0 else "" for name, share in zip(CATEGORIES, fractions, strict=True)
        ]
        pie.pie(fractions, labels=labels, colors=CATEGORY_COLOURS, startangle=90, counterclock=False)
    pie.set_title("each class's top N detections\n(N: its objects), mean over classes", fontsize=10)
    counts = breakdown.counts[classes].double()
    shares = (counts / counts.sum(dim=1, keepdim=True)).numpy() if classes else np.zeros((0, len(CATEGORIES)))
    left = np.zeros(len(classes))
    for column, (category, colour) in enumerate(zip(CATEGORIES, CATEGORY_COLOURS, strict=True)):
        bars.barh(range(len(classes)), shares[:, column], left=left, color=colour, label=category)
        left += shares[:, column]
    bars.set_yticks(range(len(classes)), [names[label] for label in classes], fontsize=8)
    bars.invert_yaxis()
    bars.set_xlim(0, 1)
    bars.set_xlabel("share of the class's top N")
    figure.legend(*bars.get_legend_handles_labels(), loc="outside lower center", ncols=len(CATEGORIES), fontsize=8)
    return figure_array(figure)


def precision_recall_picture(curves: Sequence[Tensor | None], names: Sequence[str]) -> Picture:
    """Each class's precision against recall (IoU 0.5), one panel per class with objects in the split."""
    classes = [label for label, curve in enumerate(curves) if curve is not None]
    columns = max(1, min(5, int(np.ceil(np.sqrt(len(classes))))))
    rows = max(1, int(np.ceil(len(classes) / columns)))
    figure = Figure(figsize=(2.4 * columns, 2.2 * rows), dpi=100)
    figure.set_layout_engine("constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, label in zip(axes, classes, strict=False):
        recall, precision = curves[label].numpy()
        ax.plot(recall, precision, linewidth=1.2)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(names[label], fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(classes) :]:
        ax.set_axis_off()
    figure.supxlabel("recall", fontsize=9)
    figure.supylabel("precision", fontsize=9)
    return figure_array(figure)


def proposal_recall_picture(curve: RecallCurve) -> Picture:
    """Recall of the proposals against how many of each image's best are taken, at each IoU of RECALL_IOUS."""
    figure = Figure(figsize=(5, 3.6), dpi=100)
    figure.set_layout_engine("constrained")
    ax = figure.subplots()
    counts = np.arange(1, curve.recall.shape[1] + 1)
    for iou, recall in zip(RECALL_IOUS, curve.recall.numpy(), strict=True):
        ax.plot(counts, recall, label=f"IoU {iou}")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("proposals per image")
    ax.set_ylabel("recall")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_array(figure)
