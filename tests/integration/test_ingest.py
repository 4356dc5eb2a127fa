"""The ingest flow, run by Prefect, against both registry backends."""

import numpy as np
import pytest
import tifffile

from tomoloop.db.registry import Registry
from tomoloop.errors import StackValidationError
from tomoloop.masks import decode_class_mask

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture
def home(tmp_path, monkeypatch, registry_url):
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", registry_url)
    return tmp_path / "home"


def _stacks(tmp_path, volume):
    gray, labels = tmp_path / "gray.tif", tmp_path / "labels.tif"
    tifffile.imwrite(gray, (volume * 80 + 20).astype(np.uint8))
    tifffile.imwrite(labels, volume)
    return str(gray), str(labels)


def _artifact_files(home):
    return sorted(p.name for p in (home / "artifacts").rglob("*") if p.is_file())


def test_ingest_registers_everything_and_twice_changes_nothing(
    tmp_path, monkeypatch, home, registry_url, electrode_volume
):
    from tomoloop.flows.ingest import ingest

    _stacks(tmp_path, electrode_volume)
    monkeypatch.chdir(tmp_path)  # stacks named relative to where the command runs
    args = dict(
        gray="gray.tif",
        labels="labels.tif",
        name="nmc-demo",
        phases="pore=0,nmc=1,cbd=2",
        voxel_size=(0.5, 0.5, 0.5),
        instance_phases=("nmc",),
    )
    first = ingest(**args)
    assert first["version"] == 1 and first["slices"] == 20 and first["annotations_added"] == 20
    registry = Registry.from_url(registry_url)
    assert registry.volume(first["volume_id"]).path == str(tmp_path / "gray.tif")  # absolute
    best = registry.best_annotations(first["volume_id"])
    assert len(best) == 20
    np.testing.assert_array_equal(decode_class_mask(best[7].mask_rle), electrode_volume[7])
    members = registry.dataset_members(first["dataset_version_id"])
    assert sum(len(v) for v in members.values()) < 20  # split gaps leave slices out
    files = _artifact_files(home)
    assert files == [first["coco_artifact"].split("/")[1]]

    second = ingest(**args)
    assert second["dataset_version_id"] == first["dataset_version_id"]
    assert second["annotations_added"] == 0
    assert len(registry.volumes()) == 1 and _artifact_files(home) == files


def test_failed_ingest_leaves_no_rows_and_no_artifacts(
    tmp_path, home, registry_url, electrode_volume
):
    from tomoloop.flows.ingest import ingest

    electrode_volume[12, 0, 0] = 7  # undeclared
    gray, labels = _stacks(tmp_path, electrode_volume)
    with pytest.raises(StackValidationError, match="z=12"):
        ingest(gray=gray, labels=labels, name="bad", phases="pore=0,nmc=1,cbd=2")
    assert Registry.from_url(registry_url).volumes() == []
    assert _artifact_files(home) == []


def test_a_registry_refusal_after_the_export_removes_the_new_artifact(
    tmp_path, home, registry_url, electrode_volume
):
    from tomoloop.db.registry import RegistryError
    from tomoloop.flows.ingest import ingest

    gray, labels = _stacks(tmp_path, electrode_volume)
    ingest(gray=gray, labels=labels, name="nmc", phases="pore=0,nmc=1,cbd=2")
    before = _artifact_files(home)
    other = tmp_path / "other"
    other.mkdir()
    gray2, labels2 = _stacks(other, electrode_volume[::-1].copy())
    with pytest.raises(RegistryError, match="already used"):
        ingest(gray=gray2, labels=labels2, name="nmc", phases="pore=0,nmc=1,cbd=2")
    assert _artifact_files(home) == before
    assert len(Registry.from_url(registry_url).volumes()) == 1


def test_two_concurrent_ingests_of_one_volume_leave_one(
    tmp_path, home, registry_url, electrode_volume
):
    import json
    import os
    import subprocess
    import sys

    gray, labels = _stacks(tmp_path, electrode_volume)
    runs = []
    for k in range(2):
        env = {**os.environ, "PREFECT_HOME": str(tmp_path / f"prefect-{k}")}
        runs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tomoloop.cli",
                    "ingest",
                    gray,
                    "--labels",
                    labels,
                    "--name",
                    "nmc",
                    "--phases",
                    "pore=0,nmc=1,cbd=2",
                    "--json",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    results = []
    for run in runs:
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr[-2000:]
        results.append(json.loads(stdout))
    assert results[0]["dataset_version_id"] == results[1]["dataset_version_id"]
    assert sorted(r["annotations_added"] for r in results) == [0, 20]
    registry = Registry.from_url(registry_url)
    assert len(registry.volumes()) == 1 and len(registry.datasets()) == 1
    assert len(registry.best_annotations()) == 20
