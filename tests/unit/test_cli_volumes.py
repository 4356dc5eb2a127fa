"""The commands of datasets of many volumes refuse what cannot work with one line and exit
code 2, before any flow starts."""

import json
import subprocess
import sys

import numpy as np
import tifffile


def _tomoloop(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tomoloop.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_a_volume_without_labels_needs_a_dataset_to_join(tmp_path):
    tifffile.imwrite(tmp_path / "scan.tif", np.zeros((4, 8, 8), np.uint8))
    result = _tomoloop(
        "ingest", str(tmp_path / "scan.tif"), "--name", "alone", "--phases", "pore=0,nmc=1",
        "--json",
    )  # fmt: skip
    assert result.returncode == 2
    document = json.loads(result.stdout)
    assert document["error"] == (
        "--labels LABELS is missing: a volume without labels can only join an existing "
        "dataset (--add-to DATASET)"
    )
    assert result.stderr == f"error: {document['error']}\n"


def test_a_dataset_to_join_that_does_not_exist_is_named_first(tmp_path, monkeypatch):
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TOMOLOOP_DATABASE_URL", raising=False)
    tifffile.imwrite(tmp_path / "scan.tif", np.zeros((4, 8, 8), np.uint8))  # too short to split
    result = _tomoloop(
        "ingest", str(tmp_path / "scan.tif"), "--name", "second", "--phases", "pore=0,nmc=1",
        "--add-to", "nosuch",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "error: no dataset 'nosuch': `tomoloop registry datasets` lists them; "
        "`tomoloop ingest` makes one\n"
    )
    assert not (tmp_path / "home").exists()  # nothing made for a refused command


def test_a_loop_with_a_per_volume_quota_of_zero_is_refused():
    result = _tomoloop("loop", "--dataset", "d", "--per-volume", "0", "--volume", "scan2")
    assert result.returncode == 2
    assert result.stderr == "error: per-volume budget 0 must be at least 1\n"
