import time

import pytest
import torch
from torchvision.ops import box_iou

from lit_models.nets.resnet import ResNet
from lit_models.nets.yolo import YOLOv1Net, decode, encode_targets, yolo_loss

SIZE, S, B, C = 64, 7, 2, 8  # input pixels, grid, boxes per cell, foreground classes
CELL = SIZE / S
TINY = {"width_mult": 1 / 32, "representation_size": 32, "image_size": SIZE, "head_stride": 1}
DECODE = {"box_score_thresh": 0.05, "box_nms_thresh": 0.5, "box_detections_per_img": 100}


pytestmark = pytest.mark.usefixtures("one_thread")


def target(boxes, labels) -> dict:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {"boxes": boxes, "labels": torch.tensor(labels, dtype=torch.int64), "difficult": torch.zeros(len(boxes))}


def random_targets(seed: int = 0) -> list[dict]:
    """Boxes of various sizes inside the image, centres in distinct cells, distinct labels (so NMS keeps all);
    an empty image; and a box whose centre lies exactly on the right edge (it extends out of the image)."""
    gen = torch.Generator().manual_seed(seed)
    targets = []
    for count in (5, 0, 3):
        cells = torch.randperm(S * S, generator=gen)[:count]
        centres = (torch.stack([cells % S, cells // S], 1) + torch.rand(count, 2, generator=gen)) * CELL  # K x 2
        room = torch.minimum(centres, SIZE - centres)  # the half-size that keeps the box inside the image
        half = room * (0.1 + 0.9 * torch.rand(count, 2, generator=gen))
        labels = torch.randperm(C, generator=gen)[:count] + 1
        targets.append({"boxes": torch.cat([centres - half, centres + half], 1), "labels": labels})
    targets[2]["boxes"][0] = torch.tensor([56.0, 10.0, 72.0, 30.0])  # centre x = 64, the right edge
    return targets


def perfect_output(encoded: torch.Tensor) -> torch.Tensor:
    """The output a perfect net gives: predictor 0 holds the truth with confidence 1, predictor 1 nothing."""
    out = torch.zeros(*encoded.shape[:3], 5 * B + encoded.shape[-1] - 5)
    out[..., :2], out[..., 2:4], out[..., 4] = encoded[..., :2], encoded[..., 2:4].sqrt(), encoded[..., 4]
    out[..., 5 * B :] = encoded[..., 5:]
    return out


def assert_same_boxes(result: dict, boxes: torch.Tensor, labels: torch.Tensor) -> None:
    assert len(result["boxes"]) == len(boxes)
    if len(boxes):
        match = torch.cdist(boxes, result["boxes"], p=1).argmin(1)  # decoded order is by score, here all 1
        assert match.unique().numel() == len(boxes)
        torch.testing.assert_close(result["boxes"][match], boxes, atol=1e-3, rtol=0)
        assert torch.equal(result["labels"][match], labels)
        torch.testing.assert_close(result["scores"], torch.ones(len(boxes)))


def test_encode_decode_round_trip():
    targets = random_targets()
    encoded = encode_targets(targets, SIZE, S, C)
    assert encoded.shape == (3, S, S, 5 + C)
    assert encoded[..., 4].sum(dim=(1, 2)).tolist() == [5, 0, 3]  # one object cell per box
    assert not encoded[1].any()
    edge = encoded[2, int(20 // CELL), S - 1]  # the edge centre belongs to the last column, at offset 1
    assert edge[4] == 1 and edge[0] == pytest.approx(1.0)
    results = decode(perfect_output(encoded), SIZE, B, **DECODE)
    for result, t in zip(results, targets, strict=True):
        assert result["labels"].dtype == torch.int64
        assert_same_boxes(result, t["boxes"].clamp(0, SIZE), t["labels"])  # decoded boxes are clipped


def test_one_object_per_cell_keeps_the_larger_box():
    small, large = [10.0, 10.0, 14.0, 14.0], [2.0, 2.0, 22.0, 22.0]  # both centred at (12, 12): cell (1, 1)
    for boxes, labels in (([small, large], [1, 2]), ([large, small], [2, 1])):
        encoded = encode_targets([target(boxes, labels)], SIZE, S, C)
        assert encoded[..., 4].sum() == 1
        result = decode(perfect_output(encoded), SIZE, B, **DECODE)[0]
        assert_same_boxes(result, torch.tensor([large]), torch.tensor([2]))


def loss(output, encoded, rescore=True):
    return yolo_loss(output, encoded, B, lambda_coord=5.0, lambda_noobj=0.5, rescore=rescore)


def test_perfect_output_has_zero_loss_and_coord_error_is_weighted():
    encoded = encode_targets(random_targets(), SIZE, S, C)
    output = perfect_output(encoded)
    parts = loss(output, encoded)
    assert set(parts) == {"coord", "conf_obj", "conf_noobj", "class"}
    for value in parts.values():
        assert value.item() == pytest.approx(0.0, abs=1e-6)
    n, row, col = encoded[..., 4].nonzero()[0]
    d = 0.1
    output[n, row, col, 0] += d  # x of the responsible predictor 0; predictor 1 (an empty box) still has IoU 0
    assert loss(output, encoded)["coord"].item() == pytest.approx(5.0 * d**2 / 3)  # lambda_coord * d^2 / N


def test_the_predictor_with_the_higher_iou_is_responsible():
    encoded = encode_targets([target([[16.0, 16.0, 48.0, 40.0]], [3])], SIZE, S, C)  # centre (32, 28): cell (3, 3)
    output = perfect_output(encoded)
    cell = output[0, 3, 3]
    cell[5:10] = cell[0:5]  # predictor 1: the exact box
    cell[0] += 0.3  # predictor 0: shifted by 0.3 cells, still overlapping (lower IoU)
    cell[4], cell[9] = 0.7, 1.0
    parts = loss(output, encoded)
    assert parts["coord"].item() == pytest.approx(0.0, abs=1e-6)
    assert parts["conf_obj"].item() == pytest.approx(0.0, abs=1e-6)  # target IoU = 1
    assert parts["conf_noobj"].item() == pytest.approx(0.5 * 0.7**2)  # predictor 0 counts as "no object"
    # rescore: the confidence target is the IoU. Predictor 1 at half the width, same centre: IoU 0.5; predictor 0
    # moved off the object (centre at 100 px, 32 px wide; the truth spans 16..48 px): IoU 0.
    cell[0], cell[7] = 8.0, cell[2] / 2**0.5
    cell[9] = 0.5
    assert loss(output, encoded)["conf_obj"].item() == pytest.approx(0.0, abs=1e-6)
    assert loss(output, encoded, rescore=False)["conf_obj"].item() == pytest.approx(0.25)
    # Neither box overlaps: the closer one (predictor 1) is responsible.
    cell[5] = 3.5  # centre at 59 px, 16 px wide
    cell[4], cell[9] = 0.7, 0.0
    assert loss(output, encoded)["conf_noobj"].item() == pytest.approx(0.5 * 0.7**2)


def test_gradients_flow_to_every_parameter():
    torch.manual_seed(0)
    net = YOLOv1Net(num_classes=C + 1, **TINY)
    parts = net.loss(torch.randn(3, 3, SIZE, SIZE), random_targets())
    sum(parts.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize("head_stride", [1, 2])
@pytest.mark.parametrize("backbone", ["darknet", "resnet18", "vgg16"])
def test_output_shape(backbone, head_stride):
    net = YOLOv1Net(4, backbone, width_mult=1 / 16, representation_size=32, image_size=96, head_stride=head_stride)
    assert net(torch.zeros(2, 3, 96, 96)).shape == (2, S, S, 5 * B + 3)
    with pytest.raises(ValueError, match="set data.image_size to 96"):
        net(torch.zeros(1, 3, 64, 96))


def test_conv_head_predicts_each_cell_from_its_own_place():
    torch.manual_seed(0)
    net = YOLOv1Net(4, backbone="resnet18", backbone_stride=16, head="conv", grid_size=SIZE // 16, **TINY)
    net.eval()
    images = torch.randn(2, 3, SIZE, SIZE)
    features = net.head(net.backbone(images))  # 2 x C x S x S
    cell = torch.einsum("nchw,oc->nhwo", features, net.fc.weight[:, :, 0, 0]) + net.fc.bias  # per cell, nothing else
    torch.testing.assert_close(net(images), cell)
    side = SIZE // 16
    with pytest.raises(ValueError, match=f"needs a 7 x 7 feature map, but image_size {SIZE} gives {side} x {side}"):
        YOLOv1Net(4, backbone="resnet18", backbone_stride=16, head="conv", grid_size=7, **TINY)


def test_grid_and_boxes_per_cell_set_the_layout():
    net = YOLOv1Net(4, grid_size=5, boxes_per_cell=3, **TINY)
    assert net(torch.zeros(1, 3, SIZE, SIZE)).shape == (1, 5, 5, 5 * 3 + 3)


def test_full_size_parameter_count():
    def conv(k: int, c_in: int, c_out: int) -> int:
        return k * k * c_in * c_out + c_out  # weights + bias (no batch norm)

    # Paper Fig. 3, layer by layer: 20 Darknet convs, 4 detection convs (14x14 -> 7x7), fc 7*7*1024 -> 4096 -> 7*7*30.
    darknet = (
        conv(7, 3, 64)
        + conv(3, 64, 192)
        + conv(1, 192, 128) + conv(3, 128, 256) + conv(1, 256, 256) + conv(3, 256, 512)
        + 4 * (conv(1, 512, 256) + conv(3, 256, 512)) + conv(1, 512, 512) + conv(3, 512, 1024)
        + 2 * (conv(1, 1024, 512) + conv(3, 512, 1024))
    )  # fmt: skip
    head = conv(3, 1024, 1024) * 4
    fc = (7 * 7 * 1024 * 4096 + 4096) + (4096 * 7 * 7 * (5 * 2 + 20) + 7 * 7 * 30)
    with torch.device("meta"):  # shapes only: no 1 GB of weights, no initialisation cost
        net = YOLOv1Net(num_classes=21)
    count = sum(p.numel() for p in net.parameters())
    print(f"YOLO v1 (448 px, S=7, B=2, C=20): {count:,} parameters")
    assert sum(p.numel() for p in net.backbone.parameters()) == darknet
    assert count == darknet + head + fc == 271_703_550


def test_tiny_net_overfits_two_images():
    torch.manual_seed(0)
    net = YOLOv1Net(4, grid_size=4, dropout=0.0, **{**TINY, "width_mult": 1 / 16, "representation_size": 64})
    images = torch.randn(2, 3, SIZE, SIZE)
    targets = [target([[4.0, 6.0, 30.0, 40.0], [36.0, 30.0, 60.0, 58.0]], [1, 3]), target([[10, 20, 50, 50]], [2])]
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    start = time.perf_counter()
    losses = []
    for _ in range(100):
        total = sum(net.loss(images, targets).values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(total.item())
    print(f"overfit: loss {losses[0]:.3f} -> {losses[-1]:.4f} in {time.perf_counter() - start:.1f} s")
    assert losses[-1] < 0.1 * losses[0]
    with torch.no_grad():
        results = net.predict(images)
    assert net.training  # predict restores the mode
    for result, t in zip(results, targets, strict=True):
        for box, label in zip(t["boxes"], t["labels"], strict=True):
            same_class = result["boxes"][result["labels"] == label]
            assert box_iou(box[None], same_class).max() > 0.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grid_size": 0}, "grid_size must be >= 1"),
        ({"boxes_per_cell": 0}, "boxes_per_cell must be >= 1"),
        ({"backbone": "resnet20"}, "backbone must be 'darknet' or one of"),
        ({"num_classes": 1}, "num_classes must be >= 2"),
        ({"head_stride": 3}, "head_stride must be 1 or 2"),
        ({"head": "dense"}, "head must be 'fc' or 'conv'"),
        ({"backbone_stride": 8}, "backbone_stride must be 16 or 32"),
        ({"backbone_stride": 16}, "backbone_stride must be 32 with darknet"),
        ({"image_size": 16}, "image_size 16 is too small"),  # Darknet's 5th max-pool gets a 1 x 1 map
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        YOLOv1Net(**{"num_classes": 3, **TINY, **kwargs})


def test_labels_out_of_range_are_rejected():
    with pytest.raises(ValueError, match="labels must be in 1..8"):
        encode_targets([target([[0.0, 0.0, 10.0, 10.0]], [0])], SIZE, S, C)


def test_backbone_weights_load_into_a_classifier_trunk(tmp_path):
    resnet = ResNet(depth=18, num_classes=10, width_mult=1 / 32)
    torch.save(resnet.state_dict(), tmp_path / "resnet.pth")
    net = YOLOv1Net(4, "resnet18", **TINY)
    net.load_backbone_weights(tmp_path / "resnet.pth")
    assert torch.equal(net.backbone.body.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)
    with pytest.raises(ValueError, match="darknet backbone has no classifier weights"):
        YOLOv1Net(4, **TINY).load_backbone_weights(tmp_path / "resnet.pth")
