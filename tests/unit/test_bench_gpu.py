"""``bench/gpu.py``, the GPU run (issue 20, target 7), run here on the CPU at quick sizes: every
path prints its figure beside its CPU baseline and the run exits 0; a path that fails is named,
the others still run, and the run exits 1.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gpu.py"
PATHS = ["predict", "bald", "unet-train", "maskrcnn-train", "taufactor"]


def _run(out: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(BENCH), "--quick", "--out", str(out), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=1800)


def _lines(stdout: str) -> dict[str, str]:
    """Each path's line, by path name (words joined by one space)."""
    words = (line.split() for line in stdout.splitlines())
    return {w[0]: " ".join(w) for w in words if w and w[0] in PATHS}


@pytest.mark.slow
def test_the_quick_cpu_run_prints_every_figure_beside_its_baseline_and_exits_0(tmp_path):
    done = _run(tmp_path, "--device", "cpu")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = _lines(done.stdout)
    assert list(lines) == PATHS
    assert all("CPU baseline" in line and "FAILED" not in line for line in lines.values())
    assert "target ≥ 100 Mvox/s" in lines["predict"]
    assert "5 of 5 paths ran" in done.stdout
    document = json.loads((tmp_path / "gpu.json").read_text())
    assert [row["path"] for row in document["paths"]] == PATHS
    for row in document["paths"]:
        assert row["ok"] and row["device"]["value"] > 0 and row["cpu_baseline"]["value"] > 0
        assert row["ratio"] == pytest.approx(row["device"]["value"] / row["cpu_baseline"]["value"])


def test_a_failing_path_is_named_the_others_still_run_and_the_run_exits_1(tmp_path):
    # tiles of 24 px: the U-Net takes sides divisible by 16, so prediction raises
    done = _run(tmp_path, "--device", "cpu", "--paths", "predict,taufactor", "--tile", "24")
    assert done.returncode == 1
    lines = _lines(done.stdout)
    assert "FAILED: ValueError: input sides (24, 24) must be divisible by 16" in lines["predict"]
    assert "CPU baseline" in lines["taufactor"]
    assert "1 of 2 paths ran in" in done.stdout and "FAILED: predict" in done.stdout
    rows = json.loads((tmp_path / "gpu.json").read_text())["paths"]
    assert [(r["path"], r["ok"]) for r in rows] == [("predict", False), ("taufactor", True)]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_where_there_is_none_is_one_line_and_exit_2(tmp_path):
    done = _run(tmp_path, "--device", "cuda")
    assert done.returncode == 2
    assert "this machine has no CUDA GPU" in done.stderr and "--device cpu" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "gpu.json").exists()
