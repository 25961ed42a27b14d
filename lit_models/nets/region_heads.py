"""The pieces of :class:`lit_models.nets.region_detector.RegionDetectorNet`'s per-RoI head and its losses: proposal
labelling, the one-vs-rest SVMs' hinge loss, the class-specific box deltas, fc6/fc7's truncated SVD and the new
layers' initialisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou


def label_proposals(
    boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor, fg_iou: float, bg_iou: tuple[float, float]
) -> tuple[Tensor, Tensor]:
    """R boxes vs G ground-truth boxes -> (labels R: the best box's class at IoU >= fg_iou, 0 (background) in
    [bg_iou[0], bg_iou[1]), -1 (ignored) otherwise; matched R: index of the best ground-truth box, 0 if G = 0)."""
    if len(gt_boxes):
        best_iou, matched = box_iou(boxes, gt_boxes).max(1)  # R, R
    else:  # no object: every box has IoU 0
        best_iou = boxes.new_zeros(len(boxes))
        matched = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
    labels = torch.full_like(matched, -1)
    labels[(best_iou >= bg_iou[0]) & (best_iou < bg_iou[1])] = 0
    foreground = best_iou >= fg_iou
    labels[foreground] = gt_labels[matched[foreground]]
    return labels, matched


def class_max_iou(boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor, num_classes: int) -> Tensor:
    """R x num_classes: each box's highest IoU with the ground-truth boxes of each class (0 without any)."""
    iou = box_iou(boxes, gt_boxes)  # R x G
    classes = gt_labels.expand(len(boxes), -1)  # R x G
    return iou.new_zeros(len(boxes), num_classes).scatter_reduce_(1, classes, iou, "amax")


def svm_hinge_loss(pos_scores: Tensor, pos_labels: Tensor, neg_scores: Tensor, negative: Tensor) -> Tensor:
    """One-vs-rest linear SVMs' hinge loss (the staged scheme in :mod:`lit_models.nets.region_detector`'s
    docstring), averaged over the foreground classes.

    Args:
        pos_scores: P x K scores of the positives (ground-truth boxes).
        pos_labels: P classes of the positives, in 1..K-1.
        neg_scores: M x K scores of the sampled proposals.
        negative: M x K bool, whether each proposal is a negative for each class.
    """
    num_classes = pos_scores.shape[1]
    pos_hinge = F.relu(1 - pos_scores.gather(1, pos_labels[:, None]))[:, 0]  # P
    pos_sum = pos_scores.new_zeros(num_classes).index_add(0, pos_labels, pos_hinge)  # K
    pos_count = torch.bincount(pos_labels, minlength=num_classes).clamp(min=1)  # a class without positives adds 0
    neg_hinge = F.relu(1 + neg_scores) * negative  # M x K
    per_class = pos_sum / pos_count + neg_hinge.sum(0) / negative.sum(0).clamp(min=1)  # K
    return per_class[1:].sum() / (num_classes - 1)


def foreground_deltas(outputs: Tensor, labels: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """R x 4K class-specific deltas, R labels, R x 4 targets -> the F x 4 deltas of each foreground RoI's own
    class and its F x 4 targets."""
    fg = torch.where(labels > 0)[0]
    return outputs.view(len(labels), outputs.shape[1] // 4, 4)[fg, labels[fg]], targets[fg]


def truncated_svd(layer: nn.Linear, rank: int) -> nn.Sequential:
    """Fast R-CNN §3.1: ``W`` (u x v) ~ ``U_t S_t V_t^T`` as two layers, ``S_t V_t^T`` (t x v, no bias) then ``U_t``
    (u x t, with the original bias): t(u + v) multiply-adds per input instead of uv. A rank at or above min(u, v)
    keeps every singular value (exact)."""
    with torch.no_grad():
        left, singular, right = torch.linalg.svd(layer.weight, full_matrices=False)  # u x r, r, r x v
        rank = min(rank, len(singular))
        first = nn.Linear(layer.in_features, rank, bias=False, device=layer.weight.device, dtype=layer.weight.dtype)
        second = nn.Linear(rank, layer.out_features, device=layer.weight.device, dtype=layer.weight.dtype)
        first.weight.copy_(singular[:rank, None] * right[:rank])
        second.weight.copy_(left[:, :rank])
        second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)


def init_linear(layer: nn.Linear, std: float) -> None:
    nn.init.normal_(layer.weight, std=std)
    nn.init.zeros_(layer.bias)
