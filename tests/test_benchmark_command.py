"""``lit-models benchmark``: a table of throughput and latency per backend and batch size, for a checkpoint and for a
recipe's untrained network; a backend that cannot run is a cell saying why, not a crash. (torch.compile takes ~30 s
for a tiny net on this CPU: its timing is exercised by the command, its failure reporting here.)"""

from __future__ import annotations

import pytest
import torch
from conftest import make_image_tree, run_cli
from families import fit_and_save

from lit_models import ImageFolderDataModule, ResNet
from lit_models.benchmark import batch_of, benchmark, prepare
from lit_models.export import TOLERANCE, compare, run_torch
from lit_models.nets.detection_graph import DetectionGraph
from lit_models.nets.yolo import YOLOv1Net


def table_rows(report: str) -> dict[str, list[str]]:
    """The table's rows by their batch size: the cells of the backends' columns."""
    rows = [line.strip("|").split("|") for line in report.splitlines() if line.startswith("| ") and "batch" not in line]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows}


def test_a_checkpoint_in_eager_and_onnxruntime_from_the_command_line(tmp_path, one_thread):
    torch.manual_seed(0)
    make_image_tree(tmp_path / "data", {"train": 3, "val": 1})
    data = ImageFolderDataModule(str(tmp_path / "data"), image_size=32, batch_size=4, num_workers=0)
    checkpoint = fit_and_save(ResNet(num_classes=3, depth=18, width_mult=0.125), data, tmp_path)
    result = run_cli("benchmark", str(checkpoint), "--batch_size", "4", "--iterations", "3", "--warmup", "1",
                     "--device", "cpu", "--backends", "eager", "onnx", cwd=tmp_path)  # fmt: skip
    assert "synthetic random tensors of 3 x 32 x 32" in result.stdout
    assert "| batch | PyTorch eager | ONNX (onnxruntime) |" in result.stdout
    rows = table_rows(result.stdout)
    assert list(rows) == ["1", "4"]
    assert all(" images/s, " in cell and " ms (p90 " in cell for cells in rows.values() for cell in cells)


def test_a_recipe_untrained_with_a_backend_that_cannot_run(monkeypatch, one_thread):
    def no_compiler(model):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", no_compiler)
    report = benchmark("quickstart", batch_size=2, iterations=2, warmup=1, device="cpu", backends=["eager", "compile"])
    assert report.startswith("ResNet (quickstart)") and "3 x 28 x 28 per sample" in report
    for eager, compiled in table_rows(report).values():
        assert " images/s, " in eager and compiled == "cannot run: no C++ compiler found"


def test_a_detector_graph_is_exported_for_the_batch_it_runs_at(one_thread, tmp_path):
    net = YOLOv1Net(4, backbone="resnet18", width_mult=0.125, image_size=64, representation_size=32, head_channels=64)
    graph = DetectionGraph(net.eval(), net.box_detections_per_img, uses_proposals=False)
    example = (torch.randn(1, 3, 64, 64),)
    three = batch_of(example, 3)
    found = prepare("onnx", graph, example, torch.device("cpu"), tmp_path)(three)
    assert [array.shape[0] for array in found] == [3, 3, 3, 3]
    assert compare(found, run_torch(graph, three)) < TOLERANCE


@pytest.mark.parametrize(("option", "value"), [("iterations", 0), ("batch_size", 0), ("warmup", -1), ("threads", 0)])
def test_bad_numbers_are_refused_by_name(option, value):
    with pytest.raises(ValueError, match=f"--{option} must be >= "):
        benchmark("quickstart", **{option: value})
