"""benchmarks/gpu.py: without a GPU it says so and exits 0; its CPU mode runs every measurement (raw loop, Lightning
in bf16-mixed and fp32, the ImageFolder loader) and reports each target's ratio."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_says_so_and_exits_0(monkeypatch, capsys):
    gpu = load_script()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main([]) == 0
    assert "no GPU found" in capsys.readouterr().out


def test_the_cpu_mode_measures_every_run_and_reports_the_targets(tmp_path, one_thread):
    gpu = load_script()
    size = {**gpu.TINY, "steps": 1, "warmup": 1, "images": 20, "workers": 0}
    seconds = gpu.measure(size, torch.device("cpu"), rounds=1, folder=tmp_path)
    assert set(seconds) == {"raw", "lightning", "lightning fp32", "lightning + ImageFolder", "loader alone"}
    assert all(len(times) == 1 and times[0] > 0 for times in seconds.values())
    assert len(list((tmp_path / "train").rglob("*.jpg"))) == 20
    table = gpu.report(seconds, size, "CPU")
    for ratio, target in gpu.TARGETS.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {ratio} |"))
        assert f">= {target}x" in row and row.rstrip(" |").endswith(("met", "missed"))
