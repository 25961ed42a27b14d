"""``lit_models.FasterRCNN``: the region-proposal-network detector on the Detector loop, trained jointly or in the
paper's 4 alternating steps."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from lit_models.datamodules.files import DataError
from lit_models.detection.base import Detector
from lit_models.detection.proposal_recall import RECALL_IOUS, ProposalRecall
from lit_models.drawing import displayable, draw_boxes, side_by_side
from lit_models.nets.faster_rcnn import FasterRCNNNet
from lit_models.pictures import Sample
from lit_models.stages import InitError, ParameterMapping, SourceModel, read_source

log = logging.getLogger(__name__)

# Hyperparameters a proposal network or a carried RPN must share with this net: anchors mean boxes, not shapes.
RPN_ARGUMENTS = ("backbone", "width_mult", "batch_norm", "anchor_sizes", "aspect_ratios")


def rpn_settings(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The ``RPN_ARGUMENTS`` of a module's hyperparameters, the net's defaults filling those not given."""
    defaults = inspect.signature(FasterRCNNNet).parameters
    settings = {name: hparams.get(name, defaults[name].default) for name in RPN_ARGUMENTS}
    return {name: list(value) if isinstance(value, (list, tuple)) else value for name, value in settings.items()}


class FasterRCNN(Detector):
    """Faster R-CNN (Ren et al. 2015): RPN proposals into a Fast R-CNN head.

    Defaults are the paper's VGG-16 model (shorter side 600, anchors 128/256/512 x 1:2, 1:1, 2:1, 12000/2000
    proposals before/after NMS in training and 6000/300 in test, 256 anchors and 128 RoIs sampled per image,
    RoI max pooling to 7x7, a 4096-wide head, NMS 0.3 at test). See :mod:`lit_models.nets.faster_rcnn` for the
    deviations, and configs/detection/ for the paper's VOC recipe and a CPU-sized one.

    Training is end to end by default (the paper's approximate joint training). Its 4-step alternating training
    (§3.2) is a chain of four runs (detection/faster_rcnn_4step_*): (1) ``train_parts="rpn"``; (2)
    ``train_parts="detector"`` with a fresh trunk and ``proposals_from`` step 1; (3) ``train_parts="rpn"``,
    ``freeze_trunk``, initialised from step 2 (its trunk and detector head; the RPN starts fresh, as in the reference
    code); (4) ``train_parts="detector"``, ``freeze_trunk``, from step 3. The result is one trunk under both the RPN
    and the detector, step 2's, bit for bit.

    Validation and test log the proposal recall of the RPN whose proposals the detector sees
    (``{stage}/proposal_recall_50`` and ``_70``, at the test number of proposals) beside mAP; test also logs it with
    fewer proposals and draws it against their number (:mod:`lit_models.detection.error_analysis`). An RPN-only
    step (``train_parts="rpn"``) trains no detector head, so it logs recall alone and picks its checkpoints by
    ``val/proposal_recall_50``.
    """

    def build_net(self, num_classes: int, proposals_from: str | None = None, **net_args: Any) -> FasterRCNNNet:
        """``net_args``: :class:`lit_models.nets.faster_rcnn.FasterRCNNNet`'s arguments.

        Args:
            proposals_from: A Faster R-CNN checkpoint whose RPN (with its own trunk) proposes regions for this net's
                detector, fixed: the 4-step scheme's step 2 (needs ``train_parts="detector"``). It is read when
                ``fit`` starts, unless resuming; the proposal network is then part of this model's checkpoints, so
                test and predict do not need the file.
        """
        if proposals_from and net_args.get("train_parts") != "detector":
            raise ValueError(
                f"proposals_from={proposals_from!r} gives a detector-only step its proposals (the 4-step scheme's "
                f"step 2), but train_parts is {net_args.get('train_parts', 'all')!r}: set model.train_parts to "
                "detector, or leave proposals_from out."
            )
        net = FasterRCNNNet(num_classes, **net_args)
        if proposals_from:
            net.add_proposer()
        self.proposals_from = proposals_from
        if net.train_parts == "rpn":
            self.monitor = "val/proposal_recall_50"
        self.val_recall = ProposalRecall()  # test's is the error analysis's
        return net

    def on_fit_start(self) -> None:
        if self.net.train_parts == "rpn":
            rank_zero_info("train_parts='rpn': the detector head is not trained in this run; validation measures the "
                           "RPN's proposal recall (val/proposal_recall_50, _70), not mAP.")  # fmt: skip
        if self.proposals_from and self.trainer.ckpt_path is None:  # a resumed run has its proposer in its checkpoint
            self.load_proposer(self.proposals_from)

    def load_proposer(self, path: str) -> SourceModel:
        """Copy the proposal network of the Faster R-CNN checkpoint ``path`` into this net's proposer: its separate
        proposer if it has one, else its own trunk and RPN."""
        try:
            source = read_source(path)
        except DataError as error:
            raise DataError(f"model.proposals_from: {error} Give the last.ckpt of a Faster R-CNN run whose RPN is to "
                            "propose (the 4-step scheme's step 1).") from None  # fmt: skip
        self.check_rpn_source(source, "proposals_from")
        if any(key.startswith("net.proposer.") for key in source.state):
            sources = {"net.": None, "net.proposer.": "net.proposer."}
        else:
            sources = {"net.": None, "net.backbone.": "net.proposer.backbone.", "net.rpn.": "net.proposer.rpn."}
        target = {key: value for key, value in self.state_dict().items() if key.startswith("net.proposer.")}
        filled = ParameterMapping(sources).apply(source.state, target, source.describe())
        self.net.proposer.load_state_dict({key.removeprefix("net.proposer."): v for key, v in filled.items()})
        log.info("Proposals for %s's detector come from %s.", type(self).__name__, source.describe())
        return source

    def check_rpn_source(self, source: SourceModel, what: str) -> None:
        """Raise InitError where ``source`` is not a Faster R-CNN whose RPN works on this net's trunk and anchors."""
        if source.model != type(self).__name__:
            raise InitError(f"{what}: {type(self).__name__} takes a {type(self).__name__} checkpoint; "
                            f"{source.describe()} is another model.")  # fmt: skip
        theirs, mine = rpn_settings(source.hparams), rpn_settings(self.hparams)
        differ = [f"{name} {theirs[name]} (this model: {mine[name]})" for name in RPN_ARGUMENTS
                  if theirs[name] != mine[name]]  # fmt: skip
        if differ:
            raise InitError(f"{what}: {source.describe()} has {', '.join(differ)}; its RPN only works on the same "
                            "trunk and anchors: set them alike.")  # fmt: skip

    def init_mapping(self, source: SourceModel) -> ParameterMapping:
        """From a Faster R-CNN checkpoint (the 4-step scheme's steps 3 and 4, or fine-tuning): the trunk and the
        detector head as they are. Its RPN comes too, unless a separate proposer proposed for it (a step-2
        checkpoint): that net's own RPN was never trained, and the proposer's was trained on another trunk's features,
        so the RPN starts fresh, as step 3 of the reference code does (py-faster-rcnn's stage-2 RPN starts from
        the untrained RPN layers its stage-1 Fast R-CNN carried). A source's proposer is left out."""
        self.check_rpn_source(source, "init_from")
        sources: dict[str, str | None] = {"net.proposer.": None}
        new = ["net.proposer."] if self.net.proposer is not None else []  # read from proposals_from at fit start
        if any(key.startswith("net.proposer.") for key in source.state):
            sources["net.rpn."] = None
            new.append("net.rpn.")
        return ParameterMapping(sources, tuple(new))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.val_recall.update(*self.proposals_and_truth(batch))
        if self.net.train_parts != "rpn":
            super().validation_step(batch, batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.error_analysis.proposal_recall.update(*self.proposals_and_truth(batch))
        if self.net.train_parts != "rpn":
            super().test_step(batch, batch_idx)

    def proposals_and_truth(self, batch: Any) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
        images, targets = self.split(batch)
        return self.net.propose(images), targets

    def on_validation_epoch_end(self) -> None:
        recall = self.val_recall.compute().final
        for iou, value in zip(RECALL_IOUS, recall, strict=True):
            self.log(f"val/proposal_recall_{round(iou * 100)}", value, prog_bar=iou == RECALL_IOUS[0])
        self.val_recall.reset()
        if self.net.train_parts != "rpn":
            super().on_validation_epoch_end()

    def on_test_epoch_end(self) -> None:
        if self.net.train_parts != "rpn":
            super().on_test_epoch_end()
        else:  # the proposal recall alone
            self.log_dict(self.error_analysis.scalars())

    @torch.no_grad()
    def show(self, batch: Any, count: int, most: int = 10) -> list[Sample]:
        """Detections as the Detector draws them; in an RPN-only step, which has no trained head to show, the RPN's
        ``most`` best proposals beside the true boxes."""
        if self.net.train_parts != "rpn":
            return super().show(batch, count, most)
        images, targets = self.split(batch)
        images = images[:count]
        pictures = displayable(images, *self.image_statistics())
        shown = []
        for index, (picture, boxes) in enumerate(zip(pictures, self.net.propose(images), strict=True)):
            drawn = draw_boxes(picture, boxes, torch.zeros(len(boxes), dtype=torch.long), [""], most=most, width=1)
            if targets is not None:
                truth = draw_boxes(picture, targets[index]["boxes"], targets[index]["labels"], self.display_names,
                                   width=1)  # fmt: skip
                drawn = side_by_side(truth, drawn)
            shown.append(Sample(image=drawn, caption=f"truth | the RPN's {most} best proposals"))
        return shown

    def on_predict_start(self) -> None:
        if self.net.train_parts == "rpn":
            rank_zero_warn("this model comes from an RPN-only run (train_parts='rpn'), which trained no detector head: "
                           "its detections are only as good as the head it was initialised with.")  # fmt: skip
