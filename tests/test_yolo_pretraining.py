"""YOLO v1's procedure (Redmon et al. 2016, §2.2): the classifier pre-training of its convolutions, the detector
initialised from it, and its augmentation (random scaling and translation, HSV exposure and saturation)."""

from __future__ import annotations

import colorsys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from conftest import REPO
from torchvision import tv_tensors
from torchvision.transforms import v2

from lit_models import ImageFolderDataModule, ResNet, YOLOClassifier, YOLOv1
from lit_models.chains import read_chain
from lit_models.datamodules.detection import DetectionDataModule, HSVJitter
from lit_models.detection.yolo import BACKBONE_ARGUMENTS
from lit_models.nets.yolo import YOLOv1ClassifierNet, YOLOv1Net
from lit_models.stages import InitError, SourceModel, initialise

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = REPO / "configs" / "detection"
# The backbone both stages share, at a size that builds in milliseconds.
TINY = {"backbone": "darknet", "width_mult": 1 / 32, "batch_norm": True}
DETECTOR = {"image_size": 64, "grid_size": 2, "representation_size": 16, "head_channels": 256}


def fit_classifier(root: Path, tmp_path: Path, **net_args) -> Path:
    """A few training steps of a tiny YOLOClassifier on the 3-class image tree; its last checkpoint."""
    torch.manual_seed(0)
    data = ImageFolderDataModule(str(root), image_size=32, batch_size=8, num_workers=0)
    model = YOLOClassifier(num_classes=data.num_classes, **{**TINY, **net_args})
    before = model.net.classifier.weight.clone()
    trainer = pl.Trainer(max_steps=3, limit_val_batches=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path))  # fmt: skip
    trainer.fit(model, data)
    assert trainer.global_step == 3 and not torch.equal(model.net.classifier.weight, before)  # it trained
    return next((tmp_path / "checkpoints").glob("last*.ckpt"))


def test_the_classifier_net_is_the_detectors_backbone_with_a_pool_and_a_fully_connected_layer():
    classifier = YOLOv1ClassifierNet(10, **TINY)
    detector = YOLOv1Net(4, **TINY, **DETECTOR)
    assert classifier.backbone.state_dict().keys() == detector.backbone.state_dict().keys()
    assert sum(isinstance(m, torch.nn.Conv2d) for m in classifier.backbone.modules()) == 20  # paper Figure 3
    assert classifier(torch.zeros(2, 3, 32, 32)).shape == (2, 10)  # any input size: the pool is global
    trunk = YOLOv1ClassifierNet(10, backbone="resnet18", width_mult=0.125, backbone_stride=16)
    assert "body.layer4.0.conv1.weight" not in trunk.backbone.state_dict()  # cut at conv4_x, as the shapes detector
    with pytest.raises(ValueError, match="YOLOv1ClassifierNet backbone_stride must be 32 with darknet, got 16"):
        YOLOv1ClassifierNet(10, backbone="darknet", backbone_stride=16)
    with pytest.raises(ValueError, match="YOLOv1ClassifierNet backbone must be 'darknet' or one of"):
        YOLOv1ClassifierNet(10, backbone="alexnet")


def test_the_detector_starts_from_the_classifiers_convolutions_and_keeps_its_own_new_layers(image_tree, tmp_path):
    checkpoint = fit_classifier(image_tree, tmp_path / "classifier")
    trained = torch.load(checkpoint, weights_only=True)["state_dict"]
    torch.manual_seed(1)
    detector = YOLOv1(num_classes=4, **TINY, **DETECTOR)
    fresh = {key: value.clone() for key, value in detector.state_dict().items()}
    source = initialise(detector, checkpoint)
    assert source.model == "YOLOClassifier"
    state = detector.state_dict()
    backbone = [key for key in state if key.startswith("net.backbone.")]
    assert len(backbone) == len([key for key in trained if key.startswith("net.backbone.")]) > 20
    for key in backbone:  # weights and BatchNorm statistics, bit for bit
        assert torch.equal(state[key], trained[key]), key
    new = [key for key in state if key.startswith(("net.head.", "net.fc."))]
    assert len(new) + len(backbone) == len(state)
    for key in new:  # the 4 convolutions and 2 fully connected layers the detector adds
        assert torch.equal(state[key], fresh[key]), key
    assert detector.initialised_from["model"] == "YOLOClassifier"

    wider = YOLOv1(num_classes=4, **{**TINY, "width_mult": 1 / 16}, **DETECTOR)
    with pytest.raises(InitError, match=r"width_mult 0\.03125 \(this detector: 0\.0625\)"):
        initialise(wider, checkpoint)


def test_a_detector_takes_its_own_checkpoints_and_refuses_other_models():
    detector = YOLOv1(num_classes=4, **TINY, **DETECTOR)
    own = SourceModel("own.ckpt", "YOLOv1", dict(detector.hparams), detector.state_dict())
    mapping = detector.init_mapping(own)
    assert mapping.apply(own.state, detector.state_dict(), own.describe()).keys() == detector.state_dict().keys()
    resnet = ResNet(num_classes=3, depth=18, width_mult=0.125)
    other = SourceModel("resnet.ckpt", "ResNet", dict(resnet.hparams), resnet.state_dict())
    with pytest.raises(InitError, match="YOLOClassifier checkpoint .* or from a YOLOv1 checkpoint; resnet.ckpt"):
        detector.init_mapping(other)


def test_the_chains_pair_a_classifier_and_a_detector_of_the_same_backbone():
    for name in ("yolov1_pretrained_shapes", "yolov1_pretrained_voc"):
        chain = read_chain(CONFIGS / f"{name}.yaml")
        classifier, detector = chain.stages
        assert (classifier.name, detector.name, detector.init_from) == ("classifier", "detector", "classifier")
        models = [yaml.safe_load(Path(stage.config).read_text())["model"] for stage in chain.stages]
        assert models[0]["class_path"] == "lit_models.YOLOClassifier" and models[1]["class_path"] == "lit_models.YOLOv1"
        defaults = {"backbone": "darknet", "width_mult": 1.0, "batch_norm": False, "backbone_stride": 32}
        shared = [{key: model["init_args"].get(key, defaults[key]) for key in BACKBONE_ARGUMENTS} for model in models]
        assert shared[0] == shared[1], name


def red_square() -> tuple[torch.Tensor, dict]:
    """A 64-px blue image with a red 24 x 24 object, and its targets (plus a small box in a corner)."""
    image = torch.zeros(3, 64, 64, dtype=torch.uint8)
    image[2] = 200
    image[0, 20:44, 16:40], image[2, 20:44, 16:40] = 200, 0
    corners = torch.tensor([[16.0, 20, 40, 44], [0, 0, 5, 5]])
    boxes = tv_tensors.BoundingBoxes(corners, format="XYXY", canvas_size=(64, 64))
    flags = torch.zeros(2, dtype=torch.bool)
    return tv_tensors.Image(image), {"boxes": boxes, "labels": torch.tensor([1, 2]), "difficult": flags,
                                     "iscrowd": flags}  # fmt: skip


def test_the_papers_augmentation_moves_the_boxes_with_their_objects(tmp_path):
    """Random scaling and translation of up to 20 %, flips, exposure and saturation up to 1.5 (the VOC recipe's):
    after each draw the red object lies exactly in its box, and the boxes stay inside the image."""
    data = DetectionDataModule(cache_dir=str(tmp_path), scale_range=(0.8, 1.2), translate=0.2, exposure=1.5,
                               saturation=1.5)  # fmt: skip
    transform = data.transform(train=True)
    assert [type(t) for t in transform.transforms][:2] == [v2.RandomAffine, v2.RandomHorizontalFlip]
    assert any(isinstance(t, HSVJitter) for t in transform.transforms)
    mean, std = torch.tensor(data.hparams.mean).view(3, 1, 1), torch.tensor(data.hparams.std).view(3, 1, 1)
    torch.manual_seed(0)
    moved = 0
    for _ in range(12):
        image, target = transform(*red_square())
        rgb = (image * std + mean) * 255
        red = rgb[0] - rgb[1:].amax(0) > 60  # the object's hue (the border fill and the background are not red)
        ys, xs = red.nonzero(as_tuple=True)
        boxes = target["boxes"]
        assert (boxes >= 0).all() and (boxes <= 64).all()
        assert target["labels"][0] == 1  # the object is never pushed out entirely at 20 %
        found = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        torch.testing.assert_close(found, boxes[0], atol=1.0, rtol=0)
        moved += not torch.allclose(boxes[0], torch.tensor([16.0, 20, 40, 44]), atol=1)
    assert moved >= 10
    plain = DetectionDataModule(cache_dir=str(tmp_path), hflip=False).transform(train=True)  # the default: all off
    assert not any(isinstance(t, (HSVJitter, v2.RandomAffine)) for t in plain.transforms)


def test_hsv_jitter_scales_value_and_saturation_as_the_hsv_colour_space_does():
    rgb = torch.rand(3, 6, 6)
    rgb[:, 0, 0] = torch.tensor([0.9, 0.1, 0.05])  # saturated: S' capped at 1
    rgb[:, 0, 1] = 0.5  # grey: stays grey
    jitter = HSVJitter(exposure=1.5, saturation=1.5)
    for exposure, saturation in ((1.4, 0.7), (0.7, 1.5), (1.0, 1.0)):
        out = jitter.transform(tv_tensors.Image(rgb), {"exposure": exposure, "saturation": saturation})
        for y, x in ((0, 0), (0, 1), (3, 4), (5, 2)):
            h, s, v = colorsys.rgb_to_hsv(*rgb[:, y, x].tolist())
            expected = colorsys.hsv_to_rgb(h, min(s * saturation, 1), min(v * exposure, 1))
            torch.testing.assert_close(out[:, y, x], torch.tensor(expected), atol=1e-5, rtol=0)
    torch.manual_seed(0)
    factors = [jitter.make_params([])["exposure"] for _ in range(400)]
    assert min(factors) >= 1 / 1.5 and max(factors) <= 1.5 and 0.4 < sum(f > 1 for f in factors) / 400 < 0.6
    with pytest.raises(ValueError, match=r"exposure and saturation .* >= 1 \(1 = off\), got 0.5 and 1.5"):
        DetectionDataModule(exposure=0.5, saturation=1.5)
