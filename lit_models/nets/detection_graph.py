"""A detection net's ``predict`` as one traceable graph with outputs of a fixed size, what ``lit-models export``
writes for a detector: the decoding, score threshold and NMS inside the graph, not left to the caller.

The number of detections depends on the image, so each image's are padded to ``box_detections_per_img`` (K), the
layout of TensorRT's EfficientNMS and of graphs built on ONNX's NonMaxSuppression: ``boxes`` N x K x 4 (xyxy, input
pixels), ``scores`` N x K, ``labels`` N x K (1..C; 0, the background, on padding) and ``counts`` N, the number of
real detections of each image, which come first, by decreasing score. Dropping the padding
(:func:`unpadded`) gives ``net.predict``'s detections.

A region detector's graph also takes proposals (R x 4 xyxy, input pixels; R may vary from call to call), which
every image of the batch uses. The nets' ``predict`` loops over the images in Python, so N is fixed when the graph
is traced (the loop becomes N copies): ``lit-models export`` traces it for one image; ``lit-models benchmark``
traces one for each batch size it measures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OUTPUT_NAMES = ("boxes", "scores", "labels", "counts")


class DetectionGraph(nn.Module):
    """``net.predict(images[, [proposals]])`` -> (boxes N x K x 4, scores N x K, labels N x K, counts N)."""

    def __init__(self, net: nn.Module, box_detections_per_img: int, uses_proposals: bool) -> None:
        super().__init__()
        self.net, self.count, self.uses_proposals = net, box_detections_per_img, uses_proposals
        self.input_names = ("images", "proposals") if uses_proposals else ("images",)
        self.output_names = OUTPUT_NAMES
        # torch.export's form: which dimensions vary between calls (the proposals' number), the rest are fixed.
        self.dynamic_shapes = ({}, {0: torch.export.Dim("proposals", min=1)}) if uses_proposals else ({},)

    def forward(self, images: Tensor, proposals: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        found = (
            self.net.predict(images, [proposals] * images.shape[0]) if self.uses_proposals else self.net.predict(images)
        )
        return padded(found, self.count)

    def example_proposals(self, images: Tensor, count: int = 16) -> Tensor:
        """``count`` random boxes inside the images (R x 4, seeded): the proposals an exported graph is traced and
        checked with."""
        generator = torch.Generator().manual_seed(0)
        height, width = images.shape[-2:]
        corners = torch.rand(count, 2, 2, generator=generator) * torch.tensor([width, height])  # R x 2 points x 2
        return torch.cat([corners.amin(1), corners.amax(1) + 1], 1).clamp(max=torch.tensor([width, height] * 2))


def padded(detections: list[dict[str, Tensor]], count: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each image's detections (at most ``count``) padded to ``count`` rows with zeros, stacked; and their numbers."""
    # shape[0], not len(): in a traced graph the number is a symbol, which len() would have to know.
    rows = [
        [
            F.pad(found[key], (0, 0) * (found[key].ndim - 1) + (0, count - found[key].shape[0]))
            for key in OUTPUT_NAMES[:3]
        ]
        for found in detections
    ]
    boxes, scores, labels = (torch.stack(column) for column in zip(*rows, strict=True))
    counts = torch.stack([torch.ones_like(found["scores"], dtype=torch.int64).sum() for found in detections])
    return boxes, scores, labels.to(torch.int64), counts


def unpadded(boxes: Tensor, scores: Tensor, labels: Tensor, counts: Tensor) -> list[dict[str, Tensor]]:
    """The graph's outputs back to ``predict``'s per-image dicts (the first ``counts[i]`` rows of image i)."""
    return [
        {"boxes": b[:n], "scores": s[:n], "labels": lab[:n]}
        for b, s, lab, n in zip(boxes, scores, labels, counts.tolist(), strict=True)
    ]
