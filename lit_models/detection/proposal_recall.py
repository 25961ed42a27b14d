"""How many of the true objects a detector's region proposals cover, against the number of proposals taken: the
bound on what a detector that classifies them can find."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchmetrics import Metric
from torchvision.ops import box_iou

from lit_models.metrics import evaluation_targets, gather_images

RECALL_IOUS = (0.5, 0.7)  # proposal recall is logged at these IoUs (Faster R-CNN's Fig. 4 plots it from 0.5 to 1)
# The numbers of proposals at which test logs the recall: Faster R-CNN tests with 300 RPN proposals, R-CNN, SPPNet
# and Fast R-CNN with selective search's 2,000.
PROPOSAL_COUNTS = (10, 100, 300, 1000, 2000)
NEVER = torch.iinfo(torch.long).max  # the rank of an object no proposal covers


@dataclass
class RecallCurve:
    """Proposal recall over a split.

    Attributes:
        recall: len(RECALL_IOUS) x P: the share of the true objects that one of their image's first k proposals
            overlaps by at least each IoU, at k = 1 .. P, P the most proposals an image had.
        final: len(RECALL_IOUS): the same with all the proposals (0 without any true object).
    """

    recall: Tensor
    final: Tensor

    def at(self, count: int) -> Tensor:
        """The recall with the first ``count`` proposals of each image (every one when an image has fewer)."""
        return self.recall[:, min(count, self.recall.shape[1]) - 1] if self.recall.shape[1] else self.final


class ProposalRecall(Metric):
    """The share of the ground-truth boxes (difficult and crowd ones left out) that one of an image's first k
    proposals overlaps by at least each IoU of ``RECALL_IOUS``, for every k, over a whole split. Proposals come best
    first (selective search's ranking, the RPN's objectness).

    States are per-image lists gathered from every rank by :func:`lit_models.metrics.gather_images`.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__(sync_on_compute=False)
        # per image: for each true box and IoU, the rank of the first proposal that reaches it (NEVER if none)
        self.add_state("first_hits", default=[], dist_reduce_fx=None)
        self.add_state("counts", default=[], dist_reduce_fx=None)  # per image: its number of proposals

    def update(self, proposals: list[Tensor], targets: list[dict[str, Tensor]]) -> None:
        for boxes, truth in zip(proposals, evaluation_targets(targets), strict=True):
            counted = truth["boxes"][truth["iscrowd"] == 0].float().cpu()
            boxes = boxes.detach().float().cpu()
            first = torch.full((len(counted), len(RECALL_IOUS)), NEVER, dtype=torch.long)
            if len(counted) and len(boxes):
                overlaps = box_iou(counted, boxes)  # true boxes x proposals
                for column, iou in enumerate(RECALL_IOUS):
                    reached = overlaps >= iou
                    first[:, column] = torch.where(reached.any(dim=1), reached.int().argmax(dim=1), NEVER)
            self.first_hits.append(first)
            self.counts.append(torch.tensor([len(boxes)]))

    def compute(self) -> RecallCurve:
        gather_images(self)  # every rank then computes the same, whole-split values
        first = torch.cat([torch.zeros(0, len(RECALL_IOUS), dtype=torch.long), *(f.cpu() for f in self.first_hits)])
        most = int(max((int(count) for count in self.counts), default=0))
        total = max(len(first), 1)
        recall = torch.stack([
            torch.bincount(ranks[ranks < most], minlength=most).cumsum(0) / total for ranks in first.unbind(dim=1)
        ]) if most else torch.zeros(len(RECALL_IOUS), 0)  # fmt: skip
        return RecallCurve(recall=recall.float(), final=((first != NEVER).sum(dim=0) / total).float())
