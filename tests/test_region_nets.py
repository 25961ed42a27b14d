"""The proposal-based detectors' nets: R-CNN, SPPNet and Fast R-CNN (labelling, sampling, warping, pooling, the
joint and staged losses, inference) on tiny trunks."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou, roi_align, roi_pool
from torchvision.transforms.v2 import functional as TF

from lit_models.nets.fast_rcnn import FastRCNNNet
from lit_models.nets.rcnn import RCNNNet, context_windows, warp
from lit_models.nets.region_heads import label_proposals, truncated_svd
from lit_models.nets.roi_pooling import roi_pool as threaded_roi_pool
from lit_models.nets.roi_pooling import roi_pool_windows
from lit_models.nets.sppnet import SPPNetNet
from lit_models.nets.vgg import VGG

TINY = {"backbone": "resnet18", "width_mult": 0.125, "representation_size": 32, "rois_per_image": 8}
NETS = {
    "rcnn": lambda **kw: RCNNNet(3, warp_size=64, pool_size=2, **{**TINY, **kw}),
    "sppnet": lambda **kw: SPPNetNet(3, **{**TINY, "min_size": None, **kw}),  # the images as given
    "fast_rcnn": lambda **kw: FastRCNNNet(3, **{**TINY, "min_size": None, **kw}),
}
STAGED = ("rcnn", "sppnet")


pytestmark = pytest.mark.usefixtures("seeded_one_thread")


def target(boxes: list, labels: list) -> dict:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def batch() -> tuple[list[torch.Tensor], list[dict], list[torch.Tensor]]:
    """Two images of different sizes; the first with two objects and proposals around them (one overhanging the
    border), the second with no object."""
    images = [torch.randn(3, 64, 80), torch.randn(3, 72, 64)]
    targets = [target([[4, 4, 30, 30], [40, 10, 76, 50]], [1, 2]), target([], [])]
    proposals = [
        torch.tensor([[5.0, 5, 30, 28], [42, 12, 76, 48], [0, 0, 20, 20], [50, 40, 90, 70], [10, 30, 40, 60]]),
        torch.tensor([[8.0, 8, 40, 40], [30, 20, 60, 70]]),
    ]
    return images, targets, proposals


def test_labels_follow_the_iou_thresholds_at_their_boundaries():
    gt, labels = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]]), torch.tensor([2, 1])
    boxes = torch.tensor([
        [0, 0, 10, 5],  # IoU 0.5: foreground (>=)
        [0, 0, 10, 4.9],  # 0.49: background
        [0, 0, 10, 1],  # 0.1: background (the low end is inclusive)
        [0, 0, 10, 0.9],  # 0.09: ignored
        [50, 50, 60, 60],  # 0: ignored with Fast R-CNN's [0.1, 0.5), background with R-CNN's [0, 0.5)
        [20, 0, 30, 8],  # 0.8 with the second box: its class
    ])  # fmt: skip
    found, matched = label_proposals(boxes, gt, labels, 0.5, (0.1, 0.5))
    assert found.tolist() == [2, 0, 0, -1, -1, 1]
    assert matched[[0, 5]].tolist() == [0, 1]
    assert label_proposals(boxes, gt, labels, 0.5, (0.0, 0.5))[0].tolist() == [2, 0, 0, 0, 0, 1]
    no_objects = torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
    assert label_proposals(boxes, *no_objects, 0.5, (0.0, 0.5))[0].tolist() == [0] * 6
    assert label_proposals(boxes, *no_objects, 0.5, (0.1, 0.5))[0].tolist() == [-1] * 6


def test_sampling_keeps_the_foreground_fraction_and_codes_the_boxes():
    net = NETS["fast_rcnn"](rois_per_image=16, fg_fraction=0.25)
    gt, labels = torch.tensor([[20.0, 20, 60, 60]]), torch.tensor([2])
    jitter = torch.randint(-3, 4, (40, 4)).float()
    many_fg, background = gt + jitter, torch.tensor([[0.0, 0, 30, 30]]).repeat(100, 1)  # IoU 0.08 (ignored)...
    background[:, 2:] += 8  # ... grown to 0.2: background
    for boxes, fg_count in ((torch.cat([many_fg, background]), 4), (torch.cat([many_fg[:2], background]), 2)):
        rois, sampled, deltas = net.sample_rois(boxes, gt, labels, 0.5, (0.1, 0.5))
        assert len(rois) == 16 and (sampled == 2).sum() == fg_count and (sampled == 0).sum() == 16 - fg_count
        fg = sampled > 0
        torch.testing.assert_close(net.box_coder.decode_single(deltas[fg], rois[fg]), gt.expand(fg_count, 4))


def test_box_coding_round_trip_with_fast_rcnn_normalisation():
    coder = NETS["fast_rcnn"]().box_coder
    proposals = torch.tensor([[0.0, 0, 10, 10], [5, 5, 45, 25]])
    truth = torch.tensor([[1.0, 0, 11, 10], [0, 10, 60, 30]])
    deltas = coder.encode_single(truth, proposals)
    # The centre moves by 0.1 of the width: 0.1 / std 0.1 = 1 (Fast R-CNN's normalised target).
    torch.testing.assert_close(deltas[0], torch.tensor([1.0, 0, 0, 0]))
    torch.testing.assert_close(coder.decode_single(deltas, proposals), truth)


def test_warp_is_a_bilinear_resize_of_the_crop():
    image = TF.resize(torch.randn(3, 16, 16), [64, 64], antialias=False)  # smooth
    down = warp(image, torch.tensor([[8.0, 16, 40, 48]]), 16, 0)[0]  # 32 px -> 16: every sample inside
    torch.testing.assert_close(down, TF.resize(image[:, 16:48, 8:40], [16, 16], antialias=False))
    up = warp(image, torch.tensor([[8.0, 16, 24, 32]]), 32, 0)[0]  # 16 px -> 32
    resized = TF.resize(image[:, 16:32, 8:24], [32, 32], antialias=False)
    # Inside, the same interpolation; at the rim the warp blends in the pixels just outside the box, which a
    # resize of the crop cannot see.
    torch.testing.assert_close(up[:, 1:-1, 1:-1], resized[:, 1:-1, 1:-1])
    assert (up - resized).abs().mean() < 0.05 * resized.abs().mean()


def test_context_padding_leaves_that_many_pixels_around_the_box():
    boxes = torch.tensor([[16.0, 16, 40, 40], [10, 20, 14, 30]])
    windows = context_windows(boxes, 32, 4)
    torch.testing.assert_close(windows[0], torch.tensor([12.0, 12, 44, 44]))  # 24 px * 32 / 24
    torch.testing.assert_close(windows[1], torch.tensor([12 - 2 * 32 / 24, 25 - 5 * 32 / 24, 12 + 2 * 32 / 24,
                                                         25 + 5 * 32 / 24]))  # fmt: skip
    image = torch.zeros(3, 64, 64)
    image[:, 16:40, 16:40] = 1  # the box's pixels
    crop = warp(image, boxes[:1], 32, 4)[0, 0]
    inside = torch.zeros(32, 32)
    inside[4:28, 4:28] = 1
    assert torch.equal(crop, inside)  # 4 px of context on each side, at scale 1 an exact copy


def test_window_outside_the_image_is_zero_the_mean_colour():
    image = torch.full((3, 64, 64), 2.0)
    crop = warp(image, torch.tensor([[0.0, 0, 24, 24]]), 32, 4)[0]  # window [-4, 28]: 4 px outside
    assert (crop[:, :3] == 0).all() and (crop[:, :, :3] == 0).all()  # 0 = the mean of a normalised image
    assert (crop[:, 3:, 3:] == 2).all()  # the first pixel outside repeats the border (RoIAlign's clamp)


def test_spp_features_have_c_times_the_bins_for_any_image_size():
    net = NETS["sppnet"]().eval()
    channels = net.trunk.out_channels
    images, _, proposals = batch()
    with torch.no_grad():
        mixed = net.pooled(images, proposals)
        alone = net.pooled(images[1:], proposals[1:])
        maps = net.trunk(images[1][None])  # 1 x C x 5 x 4
        whole = net.pooled(images[1:], [torch.tensor([[0.0, 0, 64, 72]])])
    assert mixed.shape == (7, channels * (36 + 9 + 4 + 1))
    torch.testing.assert_close(mixed[5:], alone)  # each image through the trunk at its own size
    torch.testing.assert_close(whole[0, -channels:], maps[0].amax((1, 2)))  # the 1 x 1 level: the window's max


@pytest.mark.parametrize("levels", [(4, 2, 1), (6, 3, 2, 1), (8, 4, 3, 1)])
def test_pyramid_levels_max_pooled_from_finer_ones_equal_roi_pool(levels):
    net = NETS["sppnet"](pyramid_levels=levels)
    generator = torch.Generator().manual_seed(0)
    features = torch.relu(torch.randn(4, 13, 11, generator=generator))  # non-negative, as the trunk's ReLU leaves
    corners = torch.rand(300, 2, generator=generator) * 200 - 16  # some windows start or end off the map
    rois = torch.cat([corners, corners + torch.rand(300, 2, generator=generator) * 120], 1)
    rois[:100] = rois[:100].round()  # whole pixels too: bin edges on exact cell boundaries
    direct = torch.cat([roi_pool(features[None], [rois], n, 1 / 16).flatten(1) for n in levels], 1)
    assert torch.equal(net.pool_rois(features, rois, 1 / 16), direct)
    assert sum(source is None for source in net.level_sources.values()) < len(levels)  # some levels derived


@pytest.mark.parametrize("mode", ["grad", "no_grad", "inference"])
def test_roi_pool_shared_among_threads_equals_torchvision(mode):
    generator = torch.Generator().manual_seed(0)
    maps = torch.relu(torch.randn(2, 4, 13, 11, generator=generator)).requires_grad_(mode == "grad")
    corners = torch.rand(2, 700, 2, generator=generator) * 200 - 16
    boxes = list(torch.cat([corners, corners + torch.rand(2, 700, 2, generator=generator) * 120], 2))
    weights = torch.randn(1400, 4, 7, 7, generator=generator)  # distinct gradients for every pooled cell
    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # 1,400 RoIs: three shares
    try:
        context = {"grad": torch.enable_grad, "no_grad": torch.no_grad, "inference": torch.inference_mode}[mode]
        with context():
            shared = threaded_roi_pool(maps, boxes, 7, 1 / 16)
            direct = roi_pool(maps, boxes, 7, 1 / 16)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(shared, direct)
    assert shared.requires_grad == (mode == "grad") and shared.is_inference() == (mode == "inference")
    if mode == "grad":
        (gradient,) = torch.autograd.grad((shared * weights).sum(), maps)
        torch.testing.assert_close(gradient, torch.autograd.grad((direct * weights).sum(), maps)[0])


@pytest.mark.parametrize("pool", ["pool", "align"])
def test_fast_rcnn_pools_each_roi_to_7x7_from_the_stride_16_map(pool):
    net = NETS["fast_rcnn"](roi_pool=pool).eval()
    images, _, proposals = batch()
    with torch.no_grad():
        pooled = net.pooled(images, proposals)
        maps = net.trunk(images[0][None])  # 1 x C x 4 x 5
    assert pooled.shape == (7, net.trunk.out_channels * 49)
    if pool == "pool":
        expected = roi_pool(maps, [proposals[0]], 7, 1 / 16)
    else:
        expected = roi_align(maps, [proposals[0]], 7, 1 / 16, sampling_ratio=2, aligned=True)
    torch.testing.assert_close(pooled[:5], expected.flatten(1))


@pytest.mark.parametrize("name", list(NETS))
def test_loss_parts_for_each_scheme_and_stage(name):
    net = NETS[name]()
    images, targets, proposals = batch()
    stages = {"finetune": {"loss_classifier"}, "svm": {"loss_svm", "loss_box_reg"}} if name in STAGED else {None: {
        "loss_classifier", "loss_box_reg"}}  # fmt: skip
    for stage, keys in stages.items():
        if stage:
            net.stage = stage
        parts = net.loss(torch.stack([images[0], images[0]]), targets, proposals)  # a batched tensor too
        assert set(parts) == keys
        assert all(part.ndim == 0 and torch.isfinite(part) and part > 0 for part in parts.values())
        torch.stack(list(parts.values())).sum().backward()


@pytest.mark.parametrize("name", STAGED)
def test_svm_stage_trains_svms_and_regressors_only(name):
    net = NETS[name](batch_norm=True)
    images, targets, proposals = batch()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    torch.stack(list(net.loss(images, targets, proposals).values())).sum().backward()  # a fine-tuning step
    optimizer.step()
    optimizer.zero_grad()
    frozen = {k: v.clone() for k, v in [*net.trunk.state_dict().items(), *net.head.state_dict().items()]}
    svm, regressor = net.svm.weight.clone(), net.box_regressor.weight.clone()
    assert not net.svm_trained
    net.stage = "svm"
    torch.stack(list(net.loss(images, targets, proposals).values())).sum().backward()
    optimizer.step()
    assert net.svm_trained and "svm_trained" in net.state_dict()
    assert net.trunk.training and net.head.training  # eval for the features only
    now = {**net.trunk.state_dict(), **net.head.state_dict()}
    assert any("running_mean" in k for k in frozen)
    assert all(torch.equal(now[k], v) for k, v in frozen.items())  # weights and BN statistics
    assert not torch.equal(net.svm.weight, svm) and not torch.equal(net.box_regressor.weight, regressor)


@pytest.mark.parametrize("name", STAGED)
def test_staged_scoring_switches_from_softmax_to_svms(name):
    net = NETS[name]()
    images = [torch.randn(3, 64, 64)]
    proposals = [torch.tensor([[4.0, 4, 24, 24], [36, 36, 60, 60]])]
    for layer in (net.cls_score, net.svm, net.box_regressor):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    net.cls_score.bias.data = torch.tensor([0.0, -5.0, 2.0])  # softmax: class 2 (class 1 under box_score_thresh)
    net.svm.bias.data = torch.tensor([0.0, 3.0, -3.0])  # SVMs: class 1 at sigmoid(3)
    net.box_regressor.bias.data[4] = 1.0  # class 1's dx: 1 x std 0.1 = a tenth of the width to the right
    with torch.no_grad():
        before = net.predict(images, proposals)[0]
        net.svm_trained.fill_(True)
        after = net.predict(images, proposals)[0]
    softmax = net.cls_score.bias.softmax(0)[2]
    assert before["labels"].tolist() == [2, 2] and torch.allclose(before["scores"], softmax)
    assert {tuple(b) for b in before["boxes"].tolist()} == {tuple(p) for p in proposals[0].tolist()}  # unregressed
    assert after["labels"].tolist() == [1, 1] and torch.allclose(after["scores"], torch.sigmoid(torch.tensor(3.0)))
    shifted = proposals[0] + torch.tensor([2.0, 0, 2.0, 0]) * torch.tensor([[1.0], [1.2]])  # 20 and 24 px wide
    torch.testing.assert_close(after["boxes"][after["boxes"][:, 0].argsort()], shifted)


@pytest.mark.parametrize("name", list(NETS))
def test_predictions_are_classes_and_boxes_inside_the_image(name):
    net = NETS[name](box_score_thresh=0.0)
    if name in STAGED:
        net.svm_trained.fill_(True)
    regressor = net.box_regressor if name in STAGED else net.bbox_pred
    torch.nn.init.normal_(regressor.bias, std=3.0)  # boxes moved and grown by up to 1/3 and 2x: some leave the image
    images, _, proposals = batch()
    training = net.training
    with torch.no_grad():
        found = net.predict(images, proposals)
    assert net.training == training
    for image, detections in zip(images, found, strict=True):
        boxes, labels = detections["boxes"], detections["labels"]
        assert len(boxes) > 0 and labels.dtype == torch.int64 and ((labels >= 1) & (labels <= 2)).all()
        assert (boxes >= 0).all() and (boxes[:, 2] <= image.shape[2]).all() and (boxes[:, 3] <= image.shape[1]).all()
        scores = detections["scores"]
        assert scores.shape == labels.shape and (scores >= 0).all() and (scores <= 1).all()


def test_roi_pool_windows_are_the_cells_roi_pool_reads():
    height, width = 8, 7  # every window starts inside the map (corners up to 88 px: cell 6), some end outside
    cells = torch.arange(height * width, dtype=torch.float32).view(1, 1, height, width)
    features = torch.cat([cells, -cells], 1)  # 1x1 max pooling: the window's last cell, and minus its first
    generator = torch.Generator().manual_seed(0)
    corners = torch.randint(0, 12, (200, 2), generator=generator) * 8.0  # many x.5 cells at scale 1/16: ties
    rois = torch.cat([corners, corners + torch.randint(0, 9, (200, 2), generator=generator) * 8.0], 1)
    pooled = roi_pool(features, [rois], 1, 1 / 16).flatten(1)  # R x 2
    windows = roi_pool_windows(rois, 1 / 16)
    x1, y1 = windows[:, 0].clamp(0, width - 1), windows[:, 1].clamp(0, height - 1)
    x2, y2 = windows[:, 2].clamp(0, width - 1), windows[:, 3].clamp(0, height - 1)
    x2, y2 = torch.maximum(x1, x2), torch.maximum(y1, y2)  # roi_pool reads at least one cell
    torch.testing.assert_close(pooled[:, 0], (y2 * width + x2).float())
    torch.testing.assert_close(pooled[:, 1], -(y1 * width + x1).float())
    assert roi_pool_windows(torch.tensor([[-8.0, -24, 8, 40]]), 1 / 16).tolist() == [[-1, -2, 1, 3]]  # C round


@pytest.mark.parametrize("name", ["sppnet", "fast_rcnn"])
def test_the_trunk_sees_the_image_at_the_papers_scale(name):
    images, _, proposals = batch()  # 64 x 80 and 72 x 64
    net = NETS[name](min_size=128, max_size=160).eval()  # x2: 128 x 160 and 144 x 128
    with torch.no_grad():
        pooled = net.pooled(images, proposals)
        for image, boxes, size, scale in zip(images, proposals, [(128, 160), (144, 128)], [2.0, 2.0], strict=True):
            resized = torch.nn.functional.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
            maps = net.trunk(resized)
            expected = net.pool_rois(maps[0], boxes * scale, 1 / 16)  # the boxes on the resized image
            rows = slice(0, 5) if len(boxes) == 5 else slice(5, 7)
            torch.testing.assert_close(pooled[rows], expected)
    capped = NETS[name](min_size=96, max_size=100)
    assert capped.spatial_scale((64, 80)) == pytest.approx(100 / 80 / 16)  # the longer side held at max_size
    with pytest.raises(ValueError, match="max_size"):
        NETS[name](min_size=600, max_size=500)


@pytest.mark.parametrize("min_size", [None, 160])
@pytest.mark.parametrize("name", ["sppnet", "fast_rcnn"])
def test_proposals_sharing_a_pooling_window_are_pooled_once(name, min_size):
    net = NETS[name](box_score_thresh=0.0, min_size=min_size)
    if name in STAGED:
        net.svm_trained.fill_(True)
    images, _, proposals = batch()
    # Jittered copies: at stride 16 most fall on the same cells as their originals.
    proposals = [torch.cat([boxes, boxes + 3, boxes - 2]).clamp(min=0) for boxes in proposals]
    sizes = [tuple(image.shape[1:]) for image in images]
    distinct, expand = net.distinct_windows(proposals, sizes)
    assert sum(map(len, distinct)) < sum(map(len, proposals)) and len(expand) == sum(map(len, proposals))
    with torch.no_grad():
        shared = net.predict(images, proposals)
        net.share_pooling_windows = False  # every proposal through the head
        every = net.predict(images, proposals)
    assert net.distinct_windows(proposals, sizes)[0] is proposals
    for a, b in zip(shared, every, strict=True):
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(a[key], b[key])
    assert FastRCNNNet(3, roi_pool="align", **TINY).pooling_windows(proposals[0], sizes[0]) is None


@pytest.mark.parametrize("name", list(NETS))
def test_empty_proposals_and_images_without_objects(name):
    net = NETS[name]()
    images, targets, _ = batch()
    empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
    for stage in ("finetune", "svm") if name in STAGED else (None,):
        if stage:
            net.stage = stage
        parts = net.loss(images, targets, empty)  # the ground-truth boxes are the only RoIs
        torch.stack(list(parts.values())).sum().backward()
        assert all(torch.isfinite(part) for part in parts.values())
        no_objects = [target([], []), target([], [])]
        parts = net.loss(images, no_objects, batch()[2])
        torch.stack(list(parts.values())).sum().backward()
        assert all(torch.isfinite(part) for part in parts.values())
    with torch.no_grad():
        found = net.predict(images, empty)
    assert [tuple(d["boxes"].shape) for d in found] == [(0, 4), (0, 4)]
    assert all(d["labels"].dtype == torch.int64 and len(d["scores"]) == 0 for d in found)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: FastRCNNNet(1, **TINY), "num_classes"),
        (lambda: FastRCNNNet(3, roi_pool="avg", **TINY), "roi_pool"),
        (lambda: FastRCNNNet(3, bg_iou=(0.3, 0.6), **TINY), "bg_iou"),
        (lambda: FastRCNNNet(3, bg_iou=(0.4, 0.2), **TINY), "bg_iou"),
        (lambda: FastRCNNNet(3, fg_fraction=0.0, **TINY), "fg_fraction"),
        (lambda: FastRCNNNet(3, fg_iou=1.5, **TINY), "fg_iou"),
        (lambda: FastRCNNNet(3, dropout=1.5, **TINY), "dropout"),
        (lambda: FastRCNNNet(3, frozen_layers=-1, **TINY), "frozen_layers"),
        (lambda: FastRCNNNet(3, **{**TINY, "backbone": "alexnet"}), "backbone"),
        (lambda: SPPNetNet(3, pyramid_levels=(), **TINY), "pyramid_levels"),
        (lambda: SPPNetNet(3, pyramid_levels=(4, 0), **TINY), "pyramid_levels"),
        (lambda: SPPNetNet(3, svm_neg_iou=0.0, **TINY), "svm_neg_iou"),
        (lambda: RCNNNet(3, context_padding=112, **TINY), "context_padding"),
        (lambda: RCNNNet(3, warp_size=16, **TINY), "warp_size"),
        (lambda: RCNNNet(3, box_reg_iou=1.2, **TINY), "box_reg_iou"),
        (lambda: RCNNNet(3, crop_batch_size=0, **TINY), "crop_batch_size"),
    ],
)
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs_raise():
    net = NETS["rcnn"]()
    images, targets, proposals = batch()
    with pytest.raises(ValueError, match="one proposals tensor"):
        net.predict(images, proposals[:1])
    with pytest.raises(ValueError, match="R x 4"):
        net.predict(images, [torch.zeros(3, 5), proposals[1]])
    with pytest.raises(ValueError, match="labels must be in 1..2"):
        net.loss(images, [target([[0, 0, 9, 9]], [3]), targets[1]], proposals)
    net.stage = "test"
    with pytest.raises(ValueError, match="stage"):
        net.loss(images, targets, proposals)


def test_head_arguments_reach_the_shared_base_and_take_yaml_lists():
    rcnn = NETS["rcnn"](fg_iou=0.6, box_nms_thresh=0.4, box_detections_per_img=5)
    assert rcnn.bg_iou == (0.0, 0.6)  # R-CNN: every proposal under the foreground IoU is background
    assert (rcnn.box_nms_thresh, rcnn.box_detections_per_img) == (0.4, 5)
    assert NETS["sppnet"]().bg_iou == (0.0, 0.5)
    assert NETS["fast_rcnn"]().bg_iou == (0.1, 0.5)  # the paper's
    assert NETS["fast_rcnn"](bg_iou=None).bg_iou == (0.0, 0.5)
    assert NETS["fast_rcnn"](bg_iou=[0.0, 0.4]).bg_iou == (0.0, 0.4)  # a YAML list
    assert NETS["sppnet"](pyramid_levels=[2, 1]).pyramid_levels == (2, 1)
    with pytest.raises(TypeError, match="score_thresh"):
        NETS["fast_rcnn"](score_thresh=0.1)  # torchvision's word is box_score_thresh


def test_vgg_weights_initialise_the_trunk_and_fc6_fc7(tmp_path):
    vgg = VGG(depth=16, num_classes=10, width_mult=0.0625)
    torch.save(vgg.state_dict(), tmp_path / "vgg.pth")
    size = {"width_mult": 0.0625, "representation_size": 4096}
    for net, copied in (
        (RCNNNet(3, warp_size=64, **size), True),  # pool5: 32 x 7 x 7, as VGG's fc6 sees it
        (FastRCNNNet(3, **size), True),
        (SPPNetNet(3, **size), False),  # 32 x 50 bins: fc6 has another shape
    ):
        net.load_backbone_weights(tmp_path / "vgg.pth")
        assert torch.equal(net.trunk.body[0].weight, vgg.features[0].weight)
        assert torch.equal(net.trunk.body[28].weight, vgg.features[28].weight)  # conv5_3
        assert torch.equal(net.head.fc7.weight, vgg.classifier[3].weight) is copied
        if copied:
            assert torch.equal(net.head.fc6.weight, vgg.classifier[0].weight)
    assert len(RCNNNet(3, width_mult=0.0625, representation_size=32).trunk.body) == 31  # pool5 kept


def test_truncated_svd_factorises_a_layer():
    layer = torch.nn.Linear(40, 12)
    inputs = torch.randn(5, 40, generator=torch.Generator().manual_seed(0))
    full = truncated_svd(layer, 99)  # at or above min(u, v) = 12: every singular value kept, exact
    assert full[0].weight.shape == (12, 40) and full[0].bias is None and full[1].weight.shape == (12, 12)
    torch.testing.assert_close(full(inputs), layer(inputs), rtol=1e-4, atol=1e-5)
    low = truncated_svd(layer, 3)  # t(u + v) = 156 weights instead of 480
    assert low[0].weight.shape == (3, 40) and low[1].weight.shape == (12, 3)
    singular = torch.linalg.svdvals(layer.weight.detach())
    # The spectral-norm error of the best rank-3 approximation is the 4th singular value (Eckart-Young).
    error = layer.weight - low[1].weight @ low[0].weight
    assert float(torch.linalg.matrix_norm(error.detach(), 2)) == pytest.approx(float(singular[3]), rel=1e-4)


def test_truncated_head_detects_until_the_next_training_step():
    net = NETS["fast_rcnn"](dropout=0.0)
    images, targets, proposals = batch()
    with torch.no_grad():
        trained = net.predict(images, proposals)
        keys = set(net.state_dict())
        net.truncate_head((10_000, 10_000))  # full rank: the same detections
        exact = net.predict(images, proposals)
        net.truncate_head((2, 2))
        truncated = net.predict(images, proposals)
    assert set(net.state_dict()) == keys  # a snapshot outside the checkpoint
    for a, b in zip(trained, exact, strict=True):
        torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)
    assert any(
        a["scores"].shape != b["scores"].shape or not torch.allclose(a["scores"], b["scores"])
        for a, b in zip(trained, truncated, strict=True)
    )  # rank 2 of 32 changes the scores
    net.loss(images, targets, proposals)  # training discards the snapshot: the weights change
    with torch.no_grad():
        again = net.predict(images, proposals)
        net.truncate_head(None)
        untruncated = net.predict(images, proposals)
    for a, b in zip(untruncated, again, strict=True):
        torch.testing.assert_close(a["scores"], b["scores"])
    with pytest.raises(ValueError, match="two ranks >= 1"):
        net.truncate_head((0, 4))


def test_fast_rcnn_overfits_two_images():
    generator = torch.Generator().manual_seed(1)
    images = 0.1 * torch.randn(2, 3, 64, 64, generator=generator)
    targets = [target([[8, 8, 36, 36]], [1]), target([[30, 20, 60, 50], [4, 40, 24, 60]], [2, 1])]
    for image, t in zip(images, targets, strict=True):
        for (x1, y1, x2, y2), label in zip(t["boxes"].int().tolist(), t["labels"].tolist(), strict=True):
            image[label - 1, y1:y2, x1:x2] += 2.0  # class 1 bright in red, class 2 in green
    proposals = []
    for t in targets:
        jittered = t["boxes"].repeat_interleave(12, 0) + torch.randint(-5, 6, (12 * len(t["boxes"]), 4),
                                                                       generator=generator)  # fmt: skip
        corners = torch.randint(0, 40, (16, 2), generator=generator).float()
        random = torch.cat([corners, corners + torch.randint(8, 24, (16, 2), generator=generator)], 1)
        proposals.append(torch.cat([jittered.float(), random]).clamp(0, 64))
    net = NETS["fast_rcnn"](dropout=0.0, rois_per_image=32)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(100):
        loss = torch.stack(list(net.loss(images, targets, proposals).values())).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        found = net.predict(images, proposals)
    for t, detections in zip(targets, found, strict=True):
        overlaps = box_iou(t["boxes"], detections["boxes"]) > 0.5  # G x D
        # Detections come by decreasing score: each object's first overlapping one is its best.
        best = overlaps.float().argmax(1)
        assert overlaps.any(1).all() and detections["labels"][best].tolist() == t["labels"].tolist()
        assert (detections["scores"][best] > 0.9).all()
