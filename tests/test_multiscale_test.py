"""SPPNet's and Fast R-CNN's multi-scale test (``test_scales``): each proposal pooled from the map of the pyramid
scale at which its window is closest to ``test_window``^2 pixels (SPPNet §4.1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lit_models.nets.fast_rcnn import FastRCNNNet
from lit_models.nets.sppnet import SPPNetNet

TINY = {"backbone": "resnet18", "width_mult": 0.125, "representation_size": 32, "box_score_thresh": 0.0}
NETS = {"sppnet": SPPNetNet, "fast_rcnn": FastRCNNNet}


pytestmark = pytest.mark.usefixtures("seeded_one_thread")


def twin_nets(name: str, **test_args) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same weights tested at ``min_size`` 128 and with ``test_args``, in eval mode (SVMs on, for SPPNet)."""
    single = NETS[name](3, min_size=128, **TINY)
    other = NETS[name](3, min_size=128, **TINY, **test_args)
    other.load_state_dict(single.state_dict())
    for net in (single, other):
        if name == "sppnet":
            net.svm_trained.fill_(True)
        net.eval()
    return single, other


def images_and_proposals() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    images = [torch.randn(3, 64, 80), torch.randn(3, 72, 64)]
    proposals = [
        torch.tensor([[5.0, 5, 30, 28], [42, 12, 76, 48], [0, 0, 20, 20], [50, 40, 90, 70], [10, 30, 40, 60]]),
        torch.tensor([[8.0, 8, 40, 40], [30, 20, 60, 70], [0, 0, 64, 72]]),
    ]
    return images, proposals


@pytest.mark.parametrize("name", list(NETS))
def test_one_test_scale_is_the_single_scale_test_exactly(name):
    single, pyramid = twin_nets(name, test_scales=[128])
    images, proposals = images_and_proposals()
    with torch.no_grad():
        assert torch.equal(single.pooled(images, proposals), pyramid.pooled(images, proposals))
        for a, b in zip(single.predict(images, proposals), pyramid.predict(images, proposals), strict=True):
            for key in ("boxes", "scores", "labels"):
                assert torch.equal(a[key], b[key])


@pytest.mark.parametrize("name", list(NETS))
def test_each_proposal_is_pooled_at_the_scale_closest_to_the_window(name):
    # A 64 x 64 image at shorter sides 64 and 128 (x1, x2), the rule's window 32 x 32 = 1,024 pixels.
    _, net = twin_nets(name, test_scales=[64, 128], test_window=32)
    image = torch.randn(3, 64, 64)
    boxes = torch.tensor([
        [0.0, 0, 32, 32],  # 1,024 px at x1 (4,096 at x2): scale 0
        [16, 16, 32, 32],  # 256 px at x1, 1,024 at x2: scale 1
        [8, 8, 32, 32],  # 576 at x1 (448 off), 2,304 at x2 (1,280 off): scale 0
        [40, 10, 60, 30],  # 400 at x1 (624 off), 1,600 at x2 (576 off): scale 1
    ])  # fmt: skip
    expected_scale = [0, 1, 0, 1]
    assert net.scale_choice(boxes, (64, 64)).tolist() == expected_scale
    with torch.no_grad():
        pooled = net.pooled([image], [boxes])
        for row, (box, scale) in enumerate(zip(boxes, expected_scale, strict=True)):
            by_scale = []
            for factor in (1.0, 2.0):
                resized = F.interpolate(image[None], scale_factor=factor, mode="bilinear", align_corners=False)
                by_scale.append(net.pool_rois(net.trunk(resized)[0], box[None], factor / 16))
            torch.testing.assert_close(pooled[row : row + 1], by_scale[scale], rtol=0, atol=0)
            assert not torch.equal(by_scale[0], by_scale[1])  # the two scales pool different features


@pytest.mark.parametrize("name", list(NETS))
def test_shared_windows_over_a_pyramid_detect_as_every_proposal_does(name):
    _, net = twin_nets(name, test_scales=[64, 128, 192], test_window=40)
    images, proposals = images_and_proposals()
    proposals = [torch.cat([boxes, boxes + 3, boxes - 2]).clamp(min=0) for boxes in proposals]
    sizes = [tuple(image.shape[1:]) for image in images]
    windows = net.pooling_windows(proposals[0], sizes[0])
    assert windows.shape == (15, 5) and set(windows[:, 0].tolist()) == {0, 1}  # the scale, then the cells
    assert len(windows.unique(dim=0)) < len(windows)  # jittered copies on the same cells of the same scale
    with torch.no_grad():
        shared = net.predict(images, proposals)
        net.share_pooling_windows = False
        every = net.predict(images, proposals)
    for a, b in zip(shared, every, strict=True):
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(a[key], b[key])


def test_the_scales_are_a_feature_setting_and_are_checked():
    assert {"test_scales", "test_window"} <= set(SPPNetNet.feature_settings)
    assert "pyramid_levels" in SPPNetNet.feature_settings
    with pytest.raises(ValueError, match=r"test_scales must be null or shorter sides in \[1, max_size \(1000\)\]"):
        FastRCNNNet(3, **TINY, test_scales=[600, 1200])
    with pytest.raises(ValueError, match="test_window must be >= 1"):
        SPPNetNet(3, **TINY, test_scales=[600], test_window=0)
