"""Object detection data: the PASCAL VOC layout, COCO JSON annotations, or the embedded shapes.

Annotations are parsed eagerly by ``setup`` in the main process (VOC XML files are small, a COCO split is one
JSON file), so every annotation problem stops the run before training starts, naming its file; only image
decoding happens in the DataLoader workers, with ``FileDataset``'s error carrying. Boxes are kept as 0-based
``xyxy`` floats in pixels, as torchvision's detection models expect.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torchvision import tv_tensors
from torchvision.ops import remove_small_boxes
from torchvision.transforms import v2

from lit_models.datamodules.base import (
    AnnotatedImagesDataModule,
    FileDataset,
    check_fractions,
    collate_metadata,
    default_cache_dir,
)
from lit_models.datamodules.box_annotations import (
    Sample,
    coco_annotation_candidates,
    coco_categories,
    coco_split,
    find_coco_annotations,
    find_coco_images,
    missing_coco_annotations,
    read_json,
    voc_split,
)
from lit_models.datamodules.files import DataError, decode_rgb
from lit_models.datamodules.proposals import DEFAULT_K, ProposalCache, ProposalMode, proposal_stats
from lit_models.datamodules.shards import read_shards
from lit_models.datamodules.sources import shapes
from lit_models.datamodules.spec import DataSpec
from lit_models.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD
from lit_models.datamodules.voc_layout import VOC_CLASS_NAMES, read_class_names

Format = Literal["auto", "voc", "coco"]
ROLES = ("train", "val", "test", "predict")
# The roles each Trainer entry point reads, so prepare_data computes only their proposals.
STAGE_ROLES = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ transforms, dataset


def detection_transform(
    image_size: int | None,
    hflip: bool = True,
    scale_range: tuple[float, float] = (1.0, 1.0),
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    translate: float = 0.0,
    exposure: float = 1.0,
    saturation: float = 1.0,
) -> v2.Compose:
    """Joint training transform of (tv_tensors.Image uint8, targets dict with tv_tensors.BoundingBoxes) -> same,
    normalised.

    Zoom by s in scale_range and shift by up to ``translate`` of each side within the same canvas (``RandomAffine``,
    the uncovered border in the mean colour: YOLO v1's "random scaling and translations of up to 20%"), random
    horizontal flip, resize to image_size x image_size (if set), exposure and saturation scaled in HSV by up to
    ``exposure`` and ``saturation`` (:class:`HSVJitter`), then ``SanitizeBoundingBoxes`` drops boxes under 1 px
    together with their labels, difficult and iscrowd flags (the affine has clipped them to the image). Region
    proposals (``proposals`` in the targets dict, BoundingBoxes) move with the image; those under 1 px after the
    geometry are dropped. Evaluation: the resize only (``DetectionDataModule.transform``), no box is dropped.
    """
    geometry: list[v2.Transform] = []
    if tuple(scale_range) != (1.0, 1.0) or translate > 0:
        fill = tuple(round(255 * channel) for channel in mean)
        geometry.append(v2.RandomAffine(degrees=0, translate=(translate, translate), scale=scale_range, fill=fill))
    if hflip:
        geometry.append(v2.RandomHorizontalFlip())
    if image_size:
        geometry.append(v2.Resize((image_size, image_size), antialias=True))
    to_float = v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)
    colour = [HSVJitter(exposure, saturation)] if exposure > 1 or saturation > 1 else []
    return v2.Compose([*geometry, to_float, *colour, v2.Normalize(mean, std), SanitizeTargets()])


class HSVJitter(v2.Transform):
    """YOLO v1's colour augmentation (§2.2: "randomly adjust the exposure and saturation of the image by up to a
    factor of 1.5 in the HSV color space"), on float RGB images in [0, 1]; boxes pass through.

    Each factor is drawn as the reference Darknet code draws it: f uniform in [1, max], then f or 1/f with even
    odds. Value (exposure) becomes min(f V, 1) and saturation min(f S, 1), hue kept: computed on RGB directly,
    since at a fixed hue and value every channel lies (V - c) = S V k below the brightest one, k fixed by the hue.
    """

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, exposure: float = 1.5, saturation: float = 1.5) -> None:
        """Set the largest factors.

        Args:
            exposure: Largest factor of the HSV value, either way (1: unchanged).
            saturation: Largest factor of the HSV saturation, either way (1: unchanged).
        """
        super().__init__()
        if not (exposure >= 1 and saturation >= 1):
            raise ValueError(f"exposure and saturation are factors >= 1 (1 = off), got {exposure} and {saturation}")
        self.exposure, self.saturation = exposure, saturation

    @staticmethod
    def factor(largest: float) -> float:
        scale = 1 + (largest - 1) * torch.rand(()).item()
        return scale if torch.rand(()).item() < 0.5 else 1 / scale

    def make_params(self, flat_inputs: list[Any]) -> dict[str, float]:
        return {"exposure": self.factor(self.exposure), "saturation": self.factor(self.saturation)}

    def transform(self, inpt: Any, params: dict[str, float]) -> Any:
        value = inpt.amax(-3, keepdim=True)  # ... x 1 x H x W: V
        spread = value - inpt.amin(-3, keepdim=True)  # S x V
        # S' / S = min(f, 1 / S): a grey pixel (S = 0) stays grey, a saturated one stays at S = 1.
        ratio = torch.minimum(torch.full_like(value, params["saturation"]), value / spread.clamp(min=1e-6))
        out = value - ratio * (value - inpt)
        gain = (params["exposure"] * value).clamp(max=1) / value.clamp(min=1e-6)  # V' / V
        return tv_tensors.wrap((out * gain).clamp(0, 1), like=inpt)


def sanitized_fields(inputs: tuple[Any, dict[str, Any]]) -> tuple[torch.Tensor, ...]:
    """What SanitizeBoundingBoxes filters along with the boxes (a module function, so it pickles to workers)."""
    targets = inputs[1]
    return targets["labels"], targets["difficult"], targets["iscrowd"]


class DropSmallProposals:
    """Drops region proposals under 1 px (a zoom can squash them against the border); no-op without proposals."""

    def __call__(self, *inputs: Any) -> Any:
        if len(inputs) < 2 or "proposals" not in inputs[1]:
            return inputs if len(inputs) > 1 else inputs[0]
        image, fields = inputs
        proposals = fields["proposals"]
        kept = tv_tensors.wrap(proposals[remove_small_boxes(proposals, 1.0)], like=proposals)
        return image, {**fields, "proposals": kept}


class SanitizeTargets(DropSmallProposals):
    """``SanitizeBoundingBoxes`` on the ground truth, with the proposals held aside: it would filter every
    BoundingBoxes in the sample with the ground truth's mask."""

    def __init__(self) -> None:
        self.sanitize = v2.SanitizeBoundingBoxes(labels_getter=sanitized_fields)

    def __call__(self, image: Any, fields: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        proposals = {"proposals": fields["proposals"]} if "proposals" in fields else {}
        image, kept = self.sanitize(image, {k: v for k, v in fields.items() if k != "proposals"})
        return super().__call__(image, {**kept, **proposals})


class DetectionDataset(FileDataset):
    """(image, targets, id) samples decoded on access into {"image", "target", "name"} (no target to predict)."""

    def __init__(
        self, samples: list[Sample], transform: Callable, skip_corrupt: bool, proposals: ProposalCache | None = None
    ) -> None:
        super().__init__(samples, skip_corrupt)
        self.transform = transform
        self.proposals = proposals

    def load(self, sample: Sample) -> dict[str, Any]:
        image_path, targets, image_id = sample
        image = tv_tensors.Image(decode_rgb(image_path))
        size = tuple(image.shape[-2:])
        item: dict[str, Any] = {"name": image_id, "orig_size": size}
        # Region proposals (R x 4, the file's pixels) are transformed with the image, into the model's pixels.
        proposals = {}
        if self.proposals is not None:
            boxes = torch.from_numpy(self.proposals.load(image_path))
            proposals["proposals"] = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=size)
        if targets is None:
            if not proposals:
                item["image"] = self.transform(image).as_subclass(torch.Tensor)
                return item
            image, fields = self.transform(image, proposals)
            item["image"] = image.as_subclass(torch.Tensor)
            item["proposals"] = fields["proposals"].as_subclass(torch.Tensor)
            return item
        if tuple(targets["size"]) != size:
            raise DataError(
                f"image {image_path} is {size[1]}x{size[0]} pixels but its annotation says "
                f"{targets['size'][1]}x{targets['size'][0]}; fix the annotation's size or the image."
            )
        fields = {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(targets["boxes"]), format="XYXY", canvas_size=size),
            "labels": torch.from_numpy(targets["labels"]),
            "difficult": torch.from_numpy(targets["difficult"]),
            "iscrowd": torch.from_numpy(targets["iscrowd"]),
            **proposals,
        }
        image, fields = self.transform(image, fields)
        target = {key: value.as_subclass(torch.Tensor) for key, value in fields.items()}
        if proposals:
            item["proposals"] = target.pop("proposals")
        item["image"] = image.as_subclass(torch.Tensor)
        item["target"] = {**target, "image_id": image_id, "orig_size": size}
        return item


def collate_detection(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Images stacked when they share one size (else a list), targets as a list of dicts, names."""
    batch = collate_metadata(samples)
    if batch["errors"]:
        return batch
    images = [s["image"] for s in samples]
    same_size = all(image.shape == images[0].shape for image in images)
    batch["image"] = torch.stack(images) if same_size else images
    if "target" in samples[0]:
        batch["target"] = [s["target"] for s in samples]
    if "proposals" in samples[0]:
        batch["proposals"] = [s["proposals"] for s in samples]
    batch["name"] = [s["name"] for s in samples]
    batch["orig_size"] = [s["orig_size"] for s in samples]
    return batch


# ------------------------------------------------------------------------------------------------- DataModule


def detect_format(root: Path) -> Literal["voc", "coco"]:
    if (root / "Annotations").is_dir() and (root / "ImageSets" / "Main").is_dir():
        return "voc"
    if find_coco_annotations(root, "train") is not None:
        return "coco"
    raise DataError(
        f"{root} is neither a VOC layout (Annotations/, JPEGImages/, ImageSets/Main/train.txt) nor COCO: "
        + missing_coco_annotations(root, "train")
    )


class DetectionDataModule(AnnotatedImagesDataModule):
    """Images with labelled boxes, from a VOC-layout folder, COCO JSON files or the embedded shapes.

    ``num_classes`` (background included) and ``class_names`` are known after ``__init__``. Batches are dicts:
    ``image`` (N x 3 x H x W when the images share one size, else a list of 3 x H x W tensors), ``target`` (one
    dict per image: ``boxes`` N x 4 float xyxy in 0-based pixels, ``labels`` int64 1..K, ``difficult`` and
    ``iscrowd`` bool, ``image_id`` str, ``orig_size`` (H, W) before transforms), ``name``, ``path`` and
    ``orig_size`` (each image file's H, W, to map predictions back to its pixels); prediction batches have no
    ``target``.

    Bad annotations stop ``setup`` with a DataError naming the file: unparsable XML or JSON, a class name not in
    the class list, a degenerate box (x2 <= x1 or y2 <= y1), a listed image that does not exist. A box that
    extends beyond its image is clipped to the image and logged as a warning naming the file (real annotations,
    COCO's float boxes especially, overshoot by rounding; dropping such objects would lose real ground truth);
    one lying entirely outside is an error.
    """

    def __init__(
        self,
        root: str | None = None,
        format: Format = "auto",
        class_names: list[str] | None = None,
        annotations: dict[str, str] | None = None,
        images: dict[str, str] | None = None,
        image_size: int | None = None,
        hflip: bool = True,
        scale_range: tuple[float, float] = (1.0, 1.0),
        translate: float = 0.0,
        exposure: float = 1.0,
        saturation: float = 1.0,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        splits: dict[str, str | None] | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        skip_corrupt: bool = False,
        predict_dir: str | None = None,
        cache_dir: str | None = None,
        proposals: ProposalMode | None = None,
        max_proposals: int = 2000,
        proposal_width: int | None = 500,
        proposal_k: int = DEFAULT_K,
        proposal_dir: str | None = None,
    ) -> None:
        """Configure the data.

        Args:
            root: A PASCAL VOC folder (Annotations/, JPEGImages/, ImageSets/Main/{train,val,test}.txt, e.g.
                VOCdevkit/VOC2012) or a COCO export, whose split files are found in the common layouts:
                annotations/instances_<split>[<year>].json (COCO's own, images in <split><year>/),
                annotations/<split>.json, <split>/_annotations.coco.json (Roboflow's, "valid" for val),
                <split>/annotations.json, <split>.json, annotations_<split>.json. None uses the embedded shapes
                scenes (generated once into ``cache_dir``, read as VOC).
            format: "voc", "coco", or "auto" (VOC when both are present).
            class_names: Class names, background first. VOC default: root/class_names.txt, else VOC's 21 classes.
                COCO default: "background" then the categories' names in id order (given names must be as many).
            annotations: COCO annotation file per split, e.g. {"train": ".../train.json", "val": ...}, for a layout
                not found by itself; implies COCO (root defaults to the train file's folder). A split left out is
                then absent (val is held out of train).
            images: COCO image folder per split (default: the first of root, the annotation file's folder,
                <split>/, images/<split>/, <split>/images/, <split><year>/, images/ that holds the split's first
                image).
            image_size: Resize every image to image_size x image_size (YOLO); None keeps each image's size (Faster
                R-CNN resizes inside the model).
            hflip: Random horizontal flips in training.
            scale_range: Training zoom by a factor drawn from this range, the image keeping its size (objects grow
                or shrink, the border is cut or filled with the mean colour); (1, 1) disables it.
            translate: Training shift by up to this fraction of the width and height (YOLO v1: 0.2).
            exposure: Training exposure (HSV value) scaled by a random factor up to this either way (YOLO v1: 1.5);
                1 disables it.
            saturation: Training HSV saturation scaled by a random factor up to this either way (YOLO v1: 1.5); 1
                disables it.
            mean: Per-channel normalisation mean (ImageNet's by default).
            std: Per-channel normalisation standard deviation.
            batch_size: Training batch size per device.
            eval_batch_size: Validation/test/predict batch size per device (default: batch_size).
            num_workers: DataLoader worker processes per device.
            splits: The list each role reads, when not its own name: e.g. {"train": "trainval", "val": null} trains on
                VOC 2007's trainval.txt and holds val_fraction of it out (val.txt is part of trainval).
            val_fraction: Share of train held out for validation when the data has no val split.
            split_seed: Seed of that held-out split.
            skip_corrupt: Replace undecodable images with the next readable one and log them, instead of stopping.
            predict_dir: Folder of images (any depth) for ``predict``; default: the test split, else val.
            cache_dir: Where the embedded shapes are generated (default $LIT_MODELS_CACHE or ~/.cache/lit_models).
            proposals: Selective-search region proposals in every batch (``proposals``: R x 4 per image, in the
                model's pixels), for R-CNN, SPPNet and Fast R-CNN: "fast" or "quality" (Uijlings et al.'s two
                modes), computed once per image by ``prepare_data`` and cached; None for detectors without them.
            max_proposals: The first (highest-ranked) proposals kept per image (R-CNN: about 2,000).
            proposal_width: Images are resized to this width for the search and the boxes scaled back (R-CNN's
                wrapper: 500 px); None searches the image as it is.
            proposal_k: The search's segmentation threshold k, in pixels of the searched image: smaller gives more
                and smaller boxes (Uijlings et al.: 50; see ``proposals.selective_search``).
            proposal_dir: Where the proposal cache lives (default: root/proposals, beside the dataset); one
                sub-folder per setting.
        """
        super().__init__()
        self.save_hyperparameters()
        check_fractions(val_fraction, scale_range)
        if not 0 <= translate < 1:
            raise ValueError(f"translate is a fraction of the image side in [0, 1), got {translate}")
        if not (exposure >= 1 and saturation >= 1):
            raise ValueError(
                f"exposure and saturation are the largest factors either way, >= 1 (1 = off), got {exposure} and "
                f"{saturation}: YOLO v1 uses 1.5 for both"
            )
        if not set(splits or {}) <= {"train", "val", "test"}:
            raise ValueError(f"data.splits maps the roles train, val and test to list names, got {splits}")
        if format not in ("auto", "voc", "coco"):
            raise ValueError(f"format must be 'auto', 'voc' or 'coco', got {format!r}")
        if proposals not in (None, "fast", "quality"):
            raise ValueError(f"proposals must be 'fast', 'quality' or null, got {proposals!r}")
        if max_proposals < 1 or (proposal_width is not None and proposal_width < 16) or proposal_k < 1:
            raise ValueError(
                f"max_proposals and proposal_k must be >= 1 and proposal_width >= 16 px or null, got "
                f"{max_proposals}, {proposal_k} and {proposal_width}"
            )
        self.annotation_files = {split: Path(path).expanduser() for split, path in (annotations or {}).items()}
        self.image_dirs = {split: Path(path).expanduser() for split, path in (images or {}).items()}
        self._coco_cache: dict[Path, dict[str, Any]] = {}  # the train file, read for its categories, until setup
        self.label_of: dict[int, int] = {}  # COCO category id -> contiguous label 1..K
        self.embedded = root is None and not annotations
        if self.embedded:
            self.root = (Path(cache_dir) if cache_dir else default_cache_dir()) / "shapes"
            self.format = "voc"
            self.class_names = list(class_names or shapes.CLASS_NAMES)
        else:
            if root is None:
                if "train" not in self.annotation_files:
                    raise DataError(f"data.annotations {annotations} names no train file.")
                root = str(self.annotation_files["train"].parent)
            self.root = Path(root).expanduser()
            if not self.root.is_dir():
                raise DataError(
                    f"data root {self.root} does not exist or is not a folder. Pass --data.root a VOC folder "
                    "(Annotations/, JPEGImages/, ImageSets/Main/) or a COCO export (or name its files with "
                    "--data.annotations), or leave both out for the embedded shapes."
                )
            self.shards = read_shards(self.root, "detection", class_names)
            if self.shards is not None and proposals:
                raise DataError(f"{self.root} holds prepared shards; region proposals are computed from the image "
                                "files and read with them: give data.root the files for the R-CNN family.")  # fmt: skip
            if self.shards is not None:  # prepared shards: no format to recognise, their class names
                self.format, self.class_names = format, self.shards.class_names
            else:
                self.format = "coco" if annotations else detect_format(self.root) if format == "auto" else format
                if self.format == "voc":
                    self.class_names = read_class_names(self.root, class_names, VOC_CLASS_NAMES)
                else:
                    self.class_names = self.coco_class_names(class_names)
        self.num_classes = len(self.class_names)
        self.collate_fn = collate_detection
        self.proposal_cache = None
        if proposals:
            folder = Path(proposal_dir).expanduser() if proposal_dir else self.root / "proposals"
            self.proposal_cache = ProposalCache(folder, self.root, proposals, max_proposals, proposal_width, proposal_k)

    def coco_class_names(self, given: list[str] | None) -> list[str]:
        path = self.coco_file("train")
        if path is None:
            raise DataError(missing_coco_annotations(self.root, "train"))
        self._coco_cache[path] = data = read_json(path)
        categories = coco_categories(data, path)
        self.label_of = {category: label for label, (category, _) in enumerate(categories, 1)}
        names = ["background", *(name for _, name in categories)]
        if given:
            if len(given) != len(names):
                raise DataError(
                    f"data.class_names has {len(given)} names but {path} has {len(names) - 1} categories plus "
                    f"background ({names}); give one name per category, background first."
                )
            return [str(name) for name in given]
        return names

    def coco_file(self, split: str) -> Path | None:
        if split in self.annotation_files:
            path = self.annotation_files[split]
            if not path.is_file():
                raise DataError(f"data.annotations names {path} for {split}, which does not exist.")
            return path
        return None if self.annotation_files else find_coco_annotations(self.root, split)

    def prepare_data(self) -> None:
        """Generate the embedded scenes if needed; compute the missing region proposals of the roles this run
        reads (``fit``: train and val). Called without a Trainer, it computes every role's: call
        ``compute_proposals(roles)`` to choose."""
        super().prepare_data()
        if self.proposal_cache is not None:
            # Only the roles this run reads: `fit` does not pay for the test images' proposals.
            function = "predict" if self.predict_only else self.trainer.state.fn if self.trainer is not None else None
            self.compute_proposals(STAGE_ROLES.get(getattr(function, "value", function), ROLES))

    def compute_proposals(self, roles: tuple[str, ...] = ROLES) -> dict[str, Any]:
        """Compute the missing proposals of the images these roles read, then report their recall.

        Returns {role: ProposalStats} for the annotated roles (logged too): recall at IoU 0.5 bounds every
        proposal-based detector's recall.
        """
        if self.proposal_cache is None:
            raise ValueError("data.proposals is null: set it to 'fast' or 'quality' to compute region proposals")
        samples = {role: self.role_samples(role) for role in roles}
        images = list(dict.fromkeys(str(path) for listed in samples.values() for path, _, _ in listed))
        # A one-off job that nothing else runs beside (DDP's other ranks wait for it): every core.
        computed = self.proposal_cache.compute(images, workers=len(os.sched_getaffinity(0)))
        log.info(
            "region proposals: %d of %d images computed, the rest read from %s",
            computed,
            len(images),
            self.proposal_cache.directory,
        )
        report = {}
        for role, listed in samples.items():
            annotated = [(path, targets) for path, targets, _ in listed if targets is not None]
            if annotated:
                found = [self.proposal_cache.load(path) for path, _ in annotated]
                report[role] = proposal_stats(found, [targets["boxes"] for _, targets in annotated])
                log.info("region proposals, %s: %s", role, report[role])
        return report

    def role_samples(self, role: str) -> list[Sample]:
        """What a role reads: its list (val held out of train when absent), or the predict images."""
        if role == "predict":
            return self.predict_samples([] if self.hparams.predict_dir else self.role_samples("val"))
        listed = self.listed(role)
        if listed is None and role == "val":
            return self.split_off_validation(self.listed("train") or [])[1]
        return listed or []

    @property
    def spec(self) -> DataSpec:
        size = self.hparams.image_size
        return self.image_spec("detection", size, "resize" if size else "keep", self.hparams.proposals)

    def transform(self, train: bool) -> Callable:
        """The joint training transform of image and boxes, or the evaluation one (``spec.preprocess()``, then the
        proposals that the resize squashed below a pixel dropped)."""
        hp = self.hparams
        if not train:
            return v2.Compose([self.spec.preprocess(), DropSmallProposals()])
        return detection_transform(
            hp.image_size,
            hp.hflip,
            tuple(hp.scale_range),
            tuple(hp.mean),
            tuple(hp.std),
            hp.translate,
            hp.exposure,
            hp.saturation,
        )

    def split_location(self, split: str) -> Path:
        if self.format == "voc":
            return self.root / "ImageSets" / "Main" / f"{split}.txt"
        return self.annotation_files.get(split) or Path(coco_annotation_candidates(self.root, split)[0])

    def missing_split(self, split: str) -> str:
        if self.format == "voc" or split in self.annotation_files:
            return super().missing_split(split)
        if self.annotation_files:
            return f"data.annotations names no {split} file."
        return missing_coco_annotations(self.root, split)

    def list_split(self, split: str, annotated: bool = True) -> list[Sample] | None:
        if self.format == "voc":
            return voc_split(self.root, split, self.class_names, annotated)
        path = self.coco_file(split)
        if path is None:
            return None
        data = self._coco_cache.get(path) or read_json(path)
        file_names = [str(entry.get("file_name")) for entry in data["images"] if isinstance(entry, dict)]
        image_dir = self.image_dirs.get(split) or find_coco_images(self.root, split, path, file_names)
        return coco_split(path, data, image_dir, self.label_of, annotated)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self._coco_cache.clear()  # the split lists are built: the parsed JSON is not needed any more

    def dataset(self, samples: list[Sample], train: bool = False) -> DetectionDataset:
        return DetectionDataset(samples, self.transform(train), self.hparams.skip_corrupt, self.proposal_cache)

    # --- R-CNN's feature cache (lit_models.detection.feature_cache) reads the training images unaugmented.
    def evaluation_dataset(self, role: str) -> DetectionDataset:
        """A role's images (after ``setup``), in order, with the evaluation transform: no flips, zoom or shift."""
        return self.dataset(self.split_dataset(role, 1).samples)

    # The seeded hold-out is the same as segmentation's (it only uses root, val_fraction and split_seed).
