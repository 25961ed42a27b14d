"""YOLO v1 (Redmon, Divvala, Girshick & Farhadi, CVPR 2016, "You Only Look Once: Unified, Real-Time Object Detection").

The image is divided into an S x S grid; each cell predicts B boxes with a confidence each and one set of C class
probabilities, all regressed at once by a convolutional network with a fully connected head (paper §2). The cell
that contains an object's centre is responsible for it, and of its B predictors the one whose current box has the
highest IoU with the object learns the box (paper §2.2, Eq. 3, sum-squared error).

Output layout, per cell: B blocks of (x, y, sqrt_w, sqrt_h, confidence), then C class probabilities, so the last
axis has 5B + C raw linear values. x, y: the box centre's offset within its cell, in [0, 1]; sqrt_w, sqrt_h: the
square roots of the box width and height relative to the image (the paper predicts square roots so that an error
on a small box costs more than the same error on a large one).

Deviations from the paper:

* Each loss part is divided by the batch size (the paper sums over the batch): the learning rate then does not
  depend on the batch size. The parts are returned separately, for logging.
* When none of a cell's B boxes overlaps its object, the responsible predictor is the one whose corners are
  closest (the paper leaves this case open; the reference Darknet code uses the smallest RMSE).
* ``batch_norm`` puts BatchNorm after every convolution (a YOLOv2 addition, which postdates the paper); convs then
  have no bias. Without it the net is the paper's.
* A cell holds one object, as in the paper; of several centres in one cell the largest box is kept (the paper does
  not say which).
* Classifier trunks (VGG-16, ResNets) can replace the Darknet backbone; ``head_stride=1`` keeps the detection convs'
  resolution for small inputs. The fully connected head fixes the input size, as in the paper (448 x 448).
* Weights are Kaiming-initialised for LeakyReLU. The paper starts the first 20 convolutions from their ImageNet
  classifier (§2.2: :class:`YOLOv1ClassifierNet` at 224 px, about a week); here that pre-training is a stage of its
  own (``lit_models.YOLOClassifier``, then ``YOLOv1`` initialised from its checkpoint), not a default.
* ``head="conv"`` replaces the two fully connected layers with a 1x1 convolution over an S x S feature map, so
  each cell is predicted from the features at its own place (the locality YOLOv2 later adopted). Trained from
  scratch on the shapes scenes (no ImageNet features to start from), the fully connected head's outputs collapsed
  to nearly the same prediction for every image: in a development run (Darknet x0.125, batch 32) its class error
  after 1,000 steps was still the prior's (1.65 per image), while a convolutional head on a 7 x 7 ResNet-18 map
  reached 0.66 mAP@0.5 in the same number of steps (docs/benchmarks.md, development measurements). The loss, the cell
  responsibility and the decoding are the paper's either way; the paper's recipe keeps ``head="fc"``.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import boxes as box_ops

from lit_models.nets.backbones import BACKBONES, Backbone, Trunk

# Paper Figure 3, the first 20 convolutional layers: (kernel, out_channels, stride) per convolution ("same"
# padding), "M" a 2x2/2 max-pool. Five halvings: stride 32, 448 -> 14 x 14 x 1024.
DARKNET_LAYERS: tuple[tuple[int, int, int] | str, ...] = (
    (7, 64, 2), "M",
    (3, 192, 1), "M",
    (1, 128, 1), (3, 256, 1), (1, 256, 1), (3, 512, 1), "M",
    *((1, 256, 1), (3, 512, 1)) * 4, (1, 512, 1), (3, 1024, 1), "M",
    *((1, 512, 1), (3, 1024, 1)) * 2,
)  # fmt: skip
LEAKY_SLOPE = 0.1  # the paper's leaky rectified linear activation, on every layer but the last


def scaled(channels: int, width_mult: float) -> int:
    return max(1, round(channels * width_mult))


def conv_block(in_channels: int, out_channels: int, kernel: int, stride: int, batch_norm: bool) -> list[nn.Module]:
    """Conv ("same" padding) [+ BN] + LeakyReLU(0.1); Kaiming-initialised for that slope."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=not batch_norm)
    nn.init.kaiming_normal_(conv.weight, a=LEAKY_SLOPE, nonlinearity="leaky_relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    norm = [nn.BatchNorm2d(out_channels)] if batch_norm else []
    return [conv, *norm, nn.LeakyReLU(LEAKY_SLOPE, inplace=True)]


class DarkNet(nn.Module):
    """The paper's backbone (Figure 3 without the detection layers): N x 3 x H x W -> N x 1024 x H/32 x W/32."""

    def __init__(self, width_mult: float = 1.0, batch_norm: bool = False) -> None:
        """Build the 20 convolutions; ``width_mult`` scales every channel count (rounded, at least 1)."""
        super().__init__()
        if not width_mult > 0:
            raise ValueError(f"DarkNet width_mult must be > 0, got {width_mult}")
        layers: list[nn.Module] = []
        in_channels = 3
        for spec in DARKNET_LAYERS:
            if spec == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            kernel, channels, stride = spec
            layers += conv_block(in_channels, scaled(channels, width_mult), kernel, stride, batch_norm)
            in_channels = scaled(channels, width_mult)
        self.features = nn.Sequential(*layers)
        self.out_channels, self.stride = in_channels, 32

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


def build_backbone(
    owner: str, backbone: str, width_mult: float, batch_norm: bool, backbone_stride: int
) -> DarkNet | Trunk:
    """The first 20 convolutions (Darknet) or a classifier trunk, the part the detector and its pre-training
    classifier share under the name ``backbone``; ``owner`` names the net in the errors."""
    for name, value, ok, rule in (
        ("backbone", backbone, backbone == "darknet" or backbone in BACKBONES, f"'darknet' or one of {BACKBONES}"),
        ("width_mult", width_mult, width_mult > 0, "> 0"),
        ("backbone_stride", backbone_stride, backbone_stride in (16, 32), "16 or 32"),
        ("backbone_stride", backbone_stride, backbone_stride == 32 or backbone != "darknet", "32 with darknet"),
    ):
        if not ok:
            raise ValueError(f"{owner} {name} must be {rule}, got {value!r}")
    if backbone == "darknet":
        return DarkNet(width_mult, batch_norm)
    return Trunk(backbone, width_mult, batch_norm, backbone_stride)


class YOLOv1ClassifierNet(nn.Module):
    """The pre-training form of YOLO v1 (paper §2.2): the detector's first 20 convolutions, then a global average
    pool and a fully connected layer: N x 3 x H x W -> N x num_classes scores.

    The paper trains it on ImageNet's 1,000 classes at 224 x 224, half the detector's input, then builds the detector
    on its convolutions. Its ``backbone`` has the detector's parameter names, so a checkpoint carries over one to one
    (``YOLOv1.init_mapping``); ``classifier`` is left out of the detector.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        backbone: Literal["darknet", Backbone] = "darknet",
        width_mult: float = 1.0,
        batch_norm: bool = False,
        backbone_stride: int = 32,
    ) -> None:
        """Build the network. The arguments shared with :class:`YOLOv1Net` must match the detector's for the
        weights to carry over.

        Args:
            num_classes: Classes to score (1000 for ImageNet).
            backbone: "darknet" (the paper's 20 convolutions) or a classifier trunk of
                ``lit_models.nets.backbones.BACKBONES``, as the detector that will start from it.
            width_mult: Multiplies the backbone's widths (size knob for tests and CPUs).
            batch_norm: BatchNorm after every Darknet conv (YOLOv2), or VGG-16 with BN.
            backbone_stride: 32, or 16 for a classifier trunk cut at conv4_x / conv5_3.
        """
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"YOLOv1ClassifierNet num_classes must be >= 1, got {num_classes}")
        self.backbone = build_backbone("YOLOv1ClassifierNet", backbone, width_mult, batch_norm, backbone_stride)
        self.pool = nn.AdaptiveAvgPool2d(1)  # any input size: 224 in the paper, 7 x 7 cells of 1024 channels
        self.classifier = nn.Linear(self.backbone.out_channels, num_classes)
        self.torchvision_name = None  # torchvision has no Darknet weights

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.pool(self.backbone(images)).flatten(1))


def feature_size(body: nn.Module, image_size: int) -> int:
    """Flattened size of ``body``'s output for one image, by a dry forward on the meta device (shapes only); two
    images, since BatchNorm in training mode refuses a single value per channel."""
    meta = {name: torch.empty_like(t, device="meta") for name, t in [*body.named_parameters(), *body.named_buffers()]}
    try:
        out = torch.func.functional_call(body, meta, (torch.zeros(2, 3, image_size, image_size, device="meta"),))
    except RuntimeError as error:
        raise ValueError(f"image_size {image_size} is too small for this backbone: {error}") from error
    return out[0].numel()


class YOLOv1Net(nn.Module):
    """Backbone + 4 detection convs + 2 fully connected layers: N x 3 x s x s -> N x S x S x (5B + C)."""

    def __init__(
        self,
        num_classes: int,
        backbone: Literal["darknet", Backbone] = "darknet",
        width_mult: float = 1.0,
        batch_norm: bool = False,
        image_size: int = 448,
        grid_size: int = 7,
        boxes_per_cell: int = 2,
        head_channels: int = 1024,
        head_stride: int = 2,
        head: Literal["fc", "conv"] = "fc",
        backbone_stride: int = 32,
        representation_size: int = 4096,
        dropout: float = 0.5,
        lambda_coord: float = 5.0,
        lambda_noobj: float = 0.5,
        rescore: bool = True,
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.5,
        box_detections_per_img: int = 100,
    ) -> None:
        """Build the network.

        Args:
            num_classes: Classes including the background (21 for PASCAL VOC); targets' labels are 1..num_classes-1.
            backbone: "darknet" (the paper's) or a classifier trunk: one of ``lit_models.nets.backbones.BACKBONES``.
            width_mult: Multiplies the backbone's and the detection convs' widths (size knob for tests and CPUs).
            batch_norm: BatchNorm after every Darknet and detection conv (YOLOv2), or VGG-16 with BN.
            image_size: The fixed square input size (448 in the paper); the fully connected head depends on it.
            grid_size: S, the grid's side (7 in the paper).
            boxes_per_cell: B, boxes predicted per cell (2 in the paper).
            head_channels: Width of the 4 detection convs (1024), before ``width_mult``.
            head_stride: Stride of the 2nd detection conv: 2 as the paper (448 -> 7 x 7), 1 keeps the resolution.
            head: "fc" (the paper: two fully connected layers map the whole feature map to the grid) or "conv"
                (a 1x1 convolution predicts each cell from the feature map's cell at the same place; the feature
                map must then be S x S). See the module docstring for why the second exists.
            backbone_stride: 32, or 16 for a classifier trunk cut at conv4_x / conv5_3 (finer cells for small inputs).
            representation_size: Width of the first fully connected layer (4096).
            dropout: Dropout after the first fully connected layer (0.5).
            lambda_coord: Weight of the box coordinate errors (5).
            lambda_noobj: Weight of the confidence errors of predictors without an object (0.5).
            rescore: Confidence target = IoU of the predicted box with the truth (the paper); False: 1.
            box_score_thresh: Class-specific confidence under which :meth:`predict` drops a box.
            box_nms_thresh: IoU above which per-class NMS suppresses the lower-scored box.
            box_detections_per_img: Most boxes per image returned by :meth:`predict`.
        """
        super().__init__()
        for name, value, ok, rule in (
            ("num_classes", num_classes, num_classes >= 2, ">= 2 (it counts the background too)"),
            ("image_size", image_size, image_size >= 1, ">= 1"),
            ("grid_size", grid_size, grid_size >= 1, ">= 1"),
            ("boxes_per_cell", boxes_per_cell, boxes_per_cell >= 1, ">= 1"),
            ("head_channels", head_channels, head_channels >= 1, ">= 1"),
            ("head_stride", head_stride, head_stride in (1, 2), "1 or 2"),
            ("head", head, head in ("fc", "conv"), "'fc' or 'conv'"),
            ("representation_size", representation_size, representation_size >= 1, ">= 1"),
            ("dropout", dropout, 0 <= dropout <= 1, "in [0, 1]"),
            ("lambda_coord", lambda_coord, lambda_coord >= 0, ">= 0"),
            ("lambda_noobj", lambda_noobj, lambda_noobj >= 0, ">= 0"),
            ("box_score_thresh", box_score_thresh, 0 <= box_score_thresh <= 1, "in [0, 1]"),
            ("box_nms_thresh", box_nms_thresh, 0 <= box_nms_thresh <= 1, "in [0, 1]"),
            ("box_detections_per_img", box_detections_per_img, box_detections_per_img >= 1, ">= 1"),
        ):
            if not ok:
                raise ValueError(f"YOLOv1Net {name} must be {rule}, got {value!r}")
        self.num_fg, self.image_size = num_classes - 1, image_size  # C: the classes without the background
        self.grid_size, self.boxes_per_cell = grid_size, boxes_per_cell
        self.lambda_coord, self.lambda_noobj, self.rescore = lambda_coord, lambda_noobj, rescore
        self.box_score_thresh, self.box_nms_thresh = box_score_thresh, box_nms_thresh
        self.box_detections_per_img = box_detections_per_img

        self.head_kind = head
        self.backbone = build_backbone("YOLOv1Net", backbone, width_mult, batch_norm, backbone_stride)
        width = scaled(head_channels, width_mult)
        # The paper's last 4 convolutions (3x3, the 2nd of stride 2): with Darknet's 20, its 24 conv layers.
        self.head = nn.Sequential(
            *conv_block(self.backbone.out_channels, width, 3, 1, batch_norm),
            *conv_block(width, width, 3, head_stride, batch_norm),
            *conv_block(width, width, 3, 1, batch_norm),
            *conv_block(width, width, 3, 1, batch_norm),
        )
        features = feature_size(nn.Sequential(self.backbone, self.head), image_size)  # 7 * 7 * 1024 in the paper
        outputs = 5 * boxes_per_cell + self.num_fg
        if head == "conv":
            side = round((features // width) ** 0.5)
            if side != grid_size:
                raise ValueError(
                    f"YOLOv1Net head='conv' needs a {grid_size} x {grid_size} feature map, but image_size {image_size} "
                    f"gives {side} x {side}: use image_size = grid_size x the total stride, or head='fc'"
                )
            self.fc: nn.Module = nn.Conv2d(width, outputs, 1)  # N x (5B+C) x S x S, linear
        else:
            self.fc = nn.Sequential(
                nn.Linear(features, representation_size),
                nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
                nn.Dropout(dropout),
                nn.Linear(representation_size, grid_size * grid_size * outputs),  # linear: no activation
            )

    def forward(self, images: Tensor) -> Tensor:
        """N x 3 x image_size x image_size -> N x S x S x (5B + C) raw predictions (layout: module docstring)."""
        size = self.image_size
        if tuple(images.shape[-2:]) != (size, size):
            raise ValueError(
                f"YOLOv1Net was built for {size} x {size} images (its fully connected head fixes the input size), "
                f"got {images.shape[-2]} x {images.shape[-1]}: set data.image_size to {size}"
            )
        x = self.head(self.backbone(images))  # N x 1024 x 7 x 7 in the paper
        if self.head_kind == "conv":
            return self.fc(x).permute(0, 2, 3, 1)  # N x S x S x (5B+C)
        out = self.fc(x.flatten(1))  # N x S*S*(5B+C)
        return out.view(-1, self.grid_size, self.grid_size, 5 * self.boxes_per_cell + self.num_fg)

    def loss(self, images: Tensor, targets: list[dict]) -> dict[str, Tensor]:
        """The paper's Eq. 3 in parts: "coord", "conf_obj", "conf_noobj" and "class", each per image."""
        encoded = encode_targets(targets, self.image_size, self.grid_size, self.num_fg)
        return yolo_loss(self(images), encoded, self.boxes_per_cell, self.lambda_coord, self.lambda_noobj, self.rescore)

    def predict(self, images: Tensor) -> list[dict[str, Tensor]]:
        """Per image: boxes (xyxy, input pixels), scores and labels (1..C) after per-class NMS (eval mode)."""
        training = self.training
        self.eval()  # no dropout, BN running statistics
        output = self(images)
        self.train(training)
        return decode(
            output,
            self.image_size,
            self.boxes_per_cell,
            self.box_score_thresh,
            self.box_nms_thresh,
            self.box_detections_per_img,
        )

    def load_backbone_weights(self, path: str | os.PathLike) -> None:
        """Initialise a classifier trunk backbone from its classifier's weights (torchvision state dict or
        lit-models checkpoint, any head size); Darknet has no classifier weights to load."""
        if not isinstance(self.backbone, Trunk):
            raise ValueError("YOLOv1Net's darknet backbone has no classifier weights: use a vgg16 or resnet backbone")
        self.backbone.load_backbone_weights(path)


def encode_targets(targets: list[dict], image_size: int, grid_size: int, num_fg: int) -> Tensor:
    """Boxes (xyxy pixels) and labels (1..C) -> N x S x S x (5 + C): (x, y, w, h, 1, one-hot of C) per object cell.

    x, y: the centre's offset in its cell; w, h relative to the image; empty cells are all zero. A cell holds one
    object (the paper's limit): of several centres in one cell, the largest box is kept (the first on ties).
    Centres on the right or bottom edge belong to the last cell.
    """
    device = targets[0]["boxes"].device if targets else None
    encoded = torch.zeros(len(targets), grid_size * grid_size, 5 + num_fg, device=device)
    cell_size = image_size / grid_size
    for n, target in enumerate(targets):
        boxes, labels = target["boxes"].float(), target["labels"]
        if labels.numel() and not 1 <= int(labels.min()) <= int(labels.max()) <= num_fg:
            raise ValueError(f"target labels must be in 1..{num_fg} (num_classes - 1), got {labels.tolist()}")
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2 / cell_size  # K x 2, in cells
        col_row = centres.floor().long().clamp(0, grid_size - 1)  # K x 2
        cells = col_row[:, 1] * grid_size + col_row[:, 0]  # K
        sizes = (boxes[:, 2:] - boxes[:, :2]) / image_size  # K x 2
        # Largest first; each cell keeps the first of its objects in that order.
        order = sizes.prod(1).argsort(descending=True, stable=True)
        first = torch.full((grid_size * grid_size,), len(order), device=device)
        first = first.scatter_reduce(0, cells[order], torch.arange(len(order), device=device), "amin")
        keep = order[first[first < len(order)]]
        one_hot = F.one_hot(labels[keep] - 1, num_fg).float()
        ones = torch.ones(len(keep), 1, device=device)
        encoded[n, cells[keep]] = torch.cat([centres[keep] - col_row[keep], sizes[keep], ones, one_hot], 1)
    return encoded.view(len(targets), grid_size, grid_size, 5 + num_fg)


def corners(offsets: Tensor, sizes: Tensor, image_size: float) -> Tensor:
    """N x S x S x B x 2 in-cell centre offsets and image-relative sizes -> N x S x S x B x 4 xyxy, image_size units."""
    grid_size = offsets.shape[1]
    rows, cols = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    cell = torch.stack([cols, rows], -1).to(offsets)[:, :, None]  # S x S x 1 x 2: each cell's (col, row)
    centres = (cell + offsets) / grid_size
    return torch.cat([centres - sizes / 2, centres + sizes / 2], -1) * image_size


def paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise IoU of ... x 4 xyxy boxes (broadcast)."""
    inter = (torch.min(a[..., 2:], b[..., 2:]) - torch.max(a[..., :2], b[..., :2])).clamp(min=0).prod(-1)
    area_a, area_b = (a[..., 2:] - a[..., :2]).prod(-1), (b[..., 2:] - b[..., :2]).prod(-1)
    return inter / (area_a + area_b - inter).clamp(min=1e-9)


def split(output: Tensor, boxes_per_cell: int) -> tuple[Tensor, Tensor]:
    """N x S x S x (5B + C) -> boxes N x S x S x B x (x, y, sqrt_w, sqrt_h, conf) and classes N x S x S x C."""
    n, s = output.shape[:2]
    return output[..., : 5 * boxes_per_cell].reshape(n, s, s, boxes_per_cell, 5), output[..., 5 * boxes_per_cell :]


def yolo_loss(
    output: Tensor, encoded: Tensor, boxes_per_cell: int, lambda_coord: float, lambda_noobj: float, rescore: bool
) -> dict[str, Tensor]:
    """Paper Eq. 3 (sum-squared error), each part summed over cells and predictors and divided by the batch size."""
    boxes, classes = split(output, boxes_per_cell)  # N x S x S x B x 5, N x S x S x C
    truth = encoded[..., None, :4]  # N x S x S x 1 x 4: x, y, w, h
    has_object = encoded[..., 4] > 0  # N x S x S
    with torch.no_grad():
        predicted = corners(boxes[..., :2], boxes[..., 2:4].clamp(min=0).square(), 1.0)  # N x S x S x B x 4
        true_corners = corners(truth[..., :2], truth[..., 2:], 1.0)  # N x S x S x 1 x 4
        iou = paired_iou(predicted, true_corners)  # N x S x S x B
        # Highest IoU; when no box overlaps the truth, the closest corners (Darknet's smallest RMSE).
        closeness = torch.where(iou.amax(-1, keepdim=True) > 0, iou, -(predicted - true_corners).square().sum(-1))
        responsible = F.one_hot(closeness.argmax(-1), boxes_per_cell).bool() & has_object[..., None]  # N x S x S x B
    coord_error = (boxes[..., :2] - truth[..., :2]).square().sum(-1) + (
        boxes[..., 2:4] - truth[..., 2:].sqrt()
    ).square().sum(-1)  # N x S x S x B
    confidence = boxes[..., 4]  # N x S x S x B
    target = iou if rescore else torch.ones_like(iou)
    batch = output.shape[0]
    return {
        "coord": lambda_coord * coord_error[responsible].sum() / batch,
        "conf_obj": (confidence - target)[responsible].square().sum() / batch,
        "conf_noobj": lambda_noobj * confidence[~responsible].square().sum() / batch,
        "class": (classes - encoded[..., 5:])[has_object].square().sum() / batch,
    }


def decode(
    output: Tensor,
    image_size: int,
    boxes_per_cell: int,
    box_score_thresh: float,
    box_nms_thresh: float,
    box_detections_per_img: int,
) -> list[dict[str, Tensor]]:
    """N x S x S x (5B + C) -> per image {"boxes" K x 4 xyxy pixels, "scores" K, "labels" K in 1..C}.

    Every (box, class) pair scores confidence x class probability (paper §2, test time), clamped to [0, 1] since
    the outputs are unbounded; pairs above ``box_score_thresh`` go through per-class NMS, best first.
    """
    boxes, classes = split(output, boxes_per_cell)
    xyxy = corners(boxes[..., :2], boxes[..., 2:4].clamp(min=0).square(), image_size).clamp(0, image_size)
    scores = (boxes[..., 4:5] * classes[..., None, :]).clamp(0, 1)  # N x S x S x B x C
    results = []
    for image_boxes, image_scores in zip(xyxy.flatten(1, 3), scores.flatten(1, 3), strict=True):  # S*S*B x 4, x C
        box_index, label = (image_scores > box_score_thresh).nonzero(as_tuple=True)
        kept_boxes, kept_scores = image_boxes[box_index], image_scores[box_index, label]
        # Looked up when called: export traces an equivalent form (lit_models.export_ops.exportable_nms).
        keep = box_ops.batched_nms(kept_boxes, kept_scores, label, box_nms_thresh)  # by decreasing score
        keep = keep[:box_detections_per_img]
        results.append({"boxes": kept_boxes[keep], "scores": kept_scores[keep], "labels": label[keep] + 1})
    return results
