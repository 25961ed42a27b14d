"""Object detection: the Detector loop and one module per detector."""

from lit_models.detection.base import Detector
from lit_models.detection.fast_rcnn import FastRCNN
from lit_models.detection.faster_rcnn import FasterRCNN
from lit_models.detection.rcnn import RCNN
from lit_models.detection.sppnet import SPPNet
from lit_models.detection.yolo import YOLOv1

__all__ = ["RCNN", "Detector", "FastRCNN", "FasterRCNN", "SPPNet", "YOLOv1"]
