"""The detectors' error analysis at test: Hoiem et al.'s categories on boxes placed by hand, YOLO's top-N breakdown,
the detection confusion matrix, the mistakes kept to be shown, proposal recall against the number of proposals, and
the pictures a tiny detector's test writes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from lit_models import DetectionDataModule, FasterRCNN
from lit_models.detection.error_analysis import ErrorAnalysis
from lit_models.detection.errors import BACKGROUND, CORRECT, LOCALIZATION, OTHER, SIMILAR, categorise, similar_pairs
from lit_models.detection.mistakes import Mistakes, match_any_class
from lit_models.detection.proposal_recall import ProposalRecall
from lit_models.metrics import evaluation_targets
from lit_models.pictures import TrainingPictures

NAMES = ["background", "cat", "dog", "car"]
CAT, DOG, CAR = 1, 2, 3


def boxes(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


# One image: a cat, a dog, a car, a difficult cat and a second car; then the detections, best first, by hand.
TRUTH = {
    "boxes": boxes([0, 0, 20, 20], [40, 0, 60, 20], [0, 40, 20, 60], [40, 40, 60, 60], [70, 0, 90, 20]),
    "labels": torch.tensor([CAT, DOG, CAR, CAT, CAR]),
    "difficult": torch.tensor([False, False, False, True, False]),
}
FOUND = {
    "boxes": boxes(
        [0, 0, 20, 20],  # the cat: correct
        [0, 0, 20, 21],  # the cat again (IoU 0.95): a duplicate, localization
        [0, 0, 40, 40],  # around the cat (IoU 0.25): localization
        [40, 0, 60, 20],  # a "cat" on the dog: similar (cat and dog share a group)
        [0, 40, 20, 60],  # a "cat" on the car: other
        [70, 70, 90, 90],  # a "cat" on nothing: background
        [40, 40, 60, 60],  # the difficult cat: correct, as Hoiem et al. count it
        [40, 0, 60, 20],  # the dog, after the "cat" took its place in the class-blind matching
        [70, 0, 90, 20],  # the second car, scoring under the confusion matrix's 0.3
    ),
    "scores": torch.tensor([0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.2]),
    "labels": torch.tensor([CAT, CAT, CAT, CAT, CAT, CAT, CAT, DOG, CAR]),
}
CATEGORIES_BY_HAND = [CORRECT, LOCALIZATION, LOCALIZATION, SIMILAR, OTHER, BACKGROUND, CORRECT, CORRECT, CORRECT]


def shuffled(found: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The detections in another order (the categories follow the scores, not the order given)."""
    order = torch.tensor([4, 0, 8, 2, 6, 1, 7, 3, 5])
    return {key: value[order] for key, value in found.items()}, order


def test_hand_placed_detections_get_their_categories():
    truth = evaluation_targets([TRUTH])[0]
    similar = similar_pairs([["cat", "dog"]], NAMES)
    found, order = shuffled(FOUND)
    categories, objects = categorise(found, truth, similar)
    assert categories.tolist() == [CATEGORIES_BY_HAND[i] for i in order.tolist()]
    assert objects[order.tolist().index(6)] == 3  # the difficult cat is the one the 0.65 detection found
    # Without the group, the cat on the dog is an error of another class like the cat on the car.
    plain, _ = categorise(FOUND, truth, similar_pairs([], NAMES))
    assert plain.tolist() == [OTHER if category == SIMILAR else category for category in CATEGORIES_BY_HAND]


def test_breakdown_counts_each_class_top_n_and_averages_the_classes():
    """Cats: 3 counted objects (the difficult one is not), so only the 3 best of the 8 cat detections count. Dogs:
    1 object, its 1 best detection is correct. Cars: 2 objects, 1 detection, correct."""
    analysis = ErrorAnalysis(len(NAMES), [["cat", "dog"]])
    analysis.use_classes(NAMES)
    second = {"boxes": boxes([0, 0, 30, 30], [60, 0, 90, 30]), "labels": torch.tensor([CAT, CAT])}
    found_second = {"boxes": boxes([50, 50, 60, 60]), "scores": torch.tensor([0.99]), "labels": torch.tensor([CAT])}
    images = [torch.zeros(3, 100, 100)] * 2
    analysis.update(images, (None, None), [FOUND, found_second], evaluation_targets([TRUTH, second]), 0.3)
    breakdown = analysis.breakdown.compute()
    # The second image's 0.99 background cat leads the cat ranking: background, correct, localization.
    assert breakdown.counts[CAT].tolist() == [1, 1, 0, 0, 1]
    assert breakdown.counts[DOG].tolist() == [1, 0, 0, 0, 0]
    assert breakdown.counts[CAR].tolist() == [1, 0, 0, 0, 0]
    expected = torch.tensor([(1 / 3 + 1 + 1) / 3, 1 / 9, 0, 0, 1 / 9])
    assert torch.allclose(breakdown.fractions, expected)
    assert analysis.scalars() == pytest.approx(dict(zip(
        [f"test/errors/{name}" for name in ("correct", "localization", "similar", "other", "background")],
        expected.tolist(), strict=True,
    )))  # fmt: skip
    # The cat's precision-recall curve leaves out the detection of the difficult cat: 7 of the 8 cat detections.
    recall, precision = breakdown.curves[CAT]
    assert recall.tolist() == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3])
    assert precision[:2].tolist() == pytest.approx([0, 1 / 2])
    assert breakdown.curves[0] is None


def test_confusion_matrix_matches_confident_detections_to_objects_of_any_class():
    truth = evaluation_targets([TRUTH])[0]
    matches = match_any_class(FOUND, truth, min_score=0.3)
    assert matches.missed.tolist() == [4]  # the second car: only a 0.2 detection covers it
    analysis = ErrorAnalysis(len(NAMES))
    analysis.use_classes(NAMES)
    analysis.update([torch.zeros(3, 100, 100)], (None, None), [FOUND], [truth], 0.3)
    # Rows true (background: a detection of no object), columns predicted (background: an object missed).
    assert analysis.confusion.compute().tolist() == [
        [0, 3, 1, 0],  # the duplicate, the loose box and the cat on nothing; the dog, whose object was taken
        [0, 1, 0, 0],  # the cat; the difficult cat's detection counts neither way
        [0, 1, 0, 0],  # the "cat" on the dog
        [1, 1, 0, 0],  # the second car missed; the "cat" on the first
    ]


def test_mistakes_keep_the_highest_scoring_false_positives_and_the_largest_misses():
    truth = evaluation_targets([TRUTH])[0]
    categories, _ = categorise(FOUND, truth, similar_pairs([["cat", "dog"]], NAMES))
    picture = torch.rand(3, 100, 100)
    mistakes = Mistakes(most=2)
    big_miss = {"boxes": boxes([10, 10, 90, 90]), "labels": torch.tensor([DOG]), "iscrowd": torch.tensor([0])}
    nothing = {"boxes": boxes(), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    mistakes.update([picture, picture], (None, None), [FOUND, nothing], [truth, big_miss],
                    [categories, torch.zeros(0, dtype=torch.long)], [torch.tensor([4]), torch.tensor([0])])  # fmt: skip
    false_positives, missed = mistakes.samples(NAMES)
    assert [sample.caption for sample in false_positives] == [
        "localization: cat 0.90\nIoU 0.95 with a cat",
        "localization: cat 0.85\nIoU 0.25 with a cat",
    ]
    assert [sample.caption for sample in missed] == ["missed dog\nno box near", "missed car\nbest: car 0.20, IoU 1.00"]
    assert false_positives[0].image.shape == (3, 100, 204)  # truth | the detection, 4 px apart


def test_proposal_recall_against_the_number_of_proposals():
    truth = [{"boxes": boxes([0, 0, 10, 10], [20, 20, 30, 30]), "labels": torch.tensor([1, 2])}]
    proposals = [boxes([50, 50, 60, 60], [0, 0, 10, 11], [20, 20, 30, 34], [20, 20, 30, 30])]
    metric = ProposalRecall()
    metric.update(proposals, truth)
    curve = metric.compute()
    # The first box is covered by the 2nd proposal (IoU 0.91), the second by the 3rd (IoU 0.71) and the 4th (1.0).
    assert curve.recall.tolist() == [[0, 0.5, 1, 1], [0, 0.5, 1, 1]]
    assert curve.at(2).tolist() == [0.5, 0.5] and curve.at(300).tolist() == [1, 1]


def test_similar_classes_must_name_the_data_classes():
    with pytest.raises(ValueError, match=r"names \['cats'\], not classes of the data \(background, cat, dog, car\)"):
        similar_pairs([["cats", "dog"]], NAMES)
    with pytest.raises(ValueError, match="the group \\['cat'\\]: a group needs two classes"):
        similar_pairs([["cat"]], NAMES)


@pytest.fixture(scope="module")
def tested(shapes_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Faster R-CNN fitted two steps and tested with the training pictures: its run folder."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data = DetectionDataModule(str(shapes_tree), batch_size=3, num_workers=0)
    sizes = {"width_mult": 0.125, "min_size": 64, "max_size": 64, "representation_size": 32, "anchor_sizes": [16, 32]}
    model = FasterRCNN(data.num_classes, backbone="resnet18", similar_classes=[["circle", "square"]], **sizes)
    logger = CSVLogger(str(tmp_path_factory.mktemp("errors")), name="tiny")
    trainer = pl.Trainer(max_steps=2, limit_val_batches=0, logger=logger, callbacks=[TrainingPictures(2)],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, data)
    trainer.test(model, data, verbose=False)
    torch.set_num_threads(threads)
    return Path(logger.log_dir)


def test_a_detector_test_logs_the_breakdown_and_proposal_recall(tested):
    with open(tested / "metrics.csv") as handle:
        row = [row for row in csv.DictReader(handle) if row.get("test/map_50")][-1]
    shares = [
        float(row[f"test/errors/{name}"]) for name in ("correct", "localization", "similar", "other", "background")
    ]
    assert sum(shares) == pytest.approx(1.0)
    # The RPN's recall with its first 10 proposals is at most its recall with all of them.
    assert float(row["test/proposal_recall_50@10"]) <= float(row["test/proposal_recall_50"])


def test_a_detector_test_draws_its_mistakes(tested):
    pictures = {path.name for path in (tested / "pictures").iterdir()}
    expected = ["errors", "confusion_matrix", "precision_recall", "false_positives", "missed", "proposal_recall"]
    assert {f"test_{name}.png" for name in expected} <= pictures


def shard_results(rank: int, world_size: int, init_file: str, out: str) -> None:
    """One DDP rank: its shard of the three hand-made images (rank 0: images 0 and 2, rank 1: image 1)."""
    torch.set_num_threads(1)  # a forked child must not use the parent's OpenMP pool (as DataLoader workers do)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    torch.save(analysed(list(range(rank, 3, world_size))), f"{out}.{rank}")
    torch.distributed.destroy_process_group()


def analysed(indices: list[int]) -> dict:
    """The breakdown, proposal recall and mistakes of some of three hand-made images (the second without the best
    cat detection, so that the shards differ)."""
    truth = evaluation_targets([TRUTH] * 3)
    found = [FOUND, {key: value[1:] for key, value in FOUND.items()}, FOUND]
    analysis = ErrorAnalysis(len(NAMES), [["cat", "dog"]], most=3)
    analysis.use_classes(NAMES)
    pictures = [torch.full((3, 100, 100), float(index)) for index in range(3)]
    for index in indices:
        analysis.update(
            pictures[index : index + 1], (None, None), found[index : index + 1], truth[index : index + 1], 0.3
        )
        analysis.proposal_recall.update([found[index]["boxes"]], [TRUTH])
    breakdown, recall = analysis.breakdown.compute(), analysis.proposal_recall.compute()
    false_positives, missed = analysis.mistakes.samples(NAMES)
    return {"counts": breakdown.counts, "fractions": breakdown.fractions, "recall": recall.recall,
            "shown": [sample.caption for sample in false_positives + missed]}  # fmt: skip


def test_ddp_ranks_with_uneven_shards_gather_the_whole_split(tmp_path):
    # Forked, so the two ranks start with this process's imports (no second start-up).
    torch.multiprocessing.start_processes(shard_results, args=(2, str(tmp_path / "init"), str(tmp_path / "out")),
                                          nprocs=2, start_method="fork")  # fmt: skip
    single = analysed([0, 1, 2])
    for rank in range(2):
        gathered = torch.load(tmp_path / f"out.{rank}", weights_only=False)
        assert torch.equal(gathered["counts"], single["counts"]) and torch.equal(gathered["recall"], single["recall"])
        assert gathered["shown"] == single["shown"]
