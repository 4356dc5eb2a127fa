"""`tomoloop db gc`: artifacts no registry row refers to (a run killed between storing
and committing) and temporary leftovers go; referenced and fresh files never do."""

import json
import os
import subprocess
import sys
import time

import pytest

from tomoloop.adapters.artifacts import ArtifactStore
from tomoloop.db.models import Tier
from tomoloop.db.registry import NewAnnotation, Registry

pytestmark = pytest.mark.integration

DAY_AGO = time.time() - 86400


def tomoloop(*args):
    return subprocess.run(
        [sys.executable, "-m", "tomoloop.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def age(root, key: str) -> None:
    os.utime(root / key, (DAY_AGO, DAY_AGO))


@pytest.fixture
def store(tmp_path, registry_url, monkeypatch):
    """A registry referring to one artifact from each column that holds keys, all a day
    old, beside a day-old orphan, a fresh orphan, a day-old temporary leftover and a file
    the store does not write; yields (root, keys by role)."""
    root = tmp_path / "artifacts"
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", registry_url)
    monkeypatch.setenv("TOMOLOOP_ARTIFACTS_URL", str(root))
    artifacts = ArtifactStore(str(root))
    mask, coco, checkpoint, curve, orphan, fresh = (
        artifacts.put_bytes(f"content {i}".encode(), suffix)
        for i, suffix in enumerate([".json", ".zip", ".pt", ".png", ".pt", ".pt"])
    )
    registry = Registry.from_url(registry_url)
    volume = registry.register_volume(
        "v", "/d/v.tif", "e" * 64, (4, 8, 8), "uint8", "pore=0,nmc=1", None
    )
    slices = registry.register_slices(volume, "z", range(2))
    registry.add_annotations(
        [
            NewAnnotation(s, Tier.AUTO, "auto", mask.key, mask.sha256, labelled_px=64)
            for s in slices.values()
        ]
    )
    ids = [a.id for a in registry.best_annotations()]
    dataset = registry.freeze_dataset(
        "nmc", {"train": ids}, {"coco": {"uri": coco.key, "sha256": coco.sha256}}
    )
    model = registry.register_model("unet", "unet", "torch", dataset.id)
    run = registry.start_training(model, "cpu")
    registry.update_training(run, "finished", 1, curve.key, (checkpoint.key, checkpoint.sha256))
    registry.engine.dispose()
    temporary = f"{orphan.key}.tmp-{'0' * 32}"
    (root / temporary).write_bytes(b"half written")
    (root / "notes.txt").write_text("not the store's")
    for key in [mask.key, coco.key, checkpoint.key, curve.key, orphan.key, temporary]:
        age(root, key)
    os.utime(root / "notes.txt", (DAY_AGO, DAY_AGO))
    referenced = [mask.key, coco.key, checkpoint.key, curve.key]
    return root, {"referenced": referenced, "orphan": orphan, "temporary": temporary,
                  "fresh": fresh.key}


def test_dry_run_lists_old_orphans_and_leftovers_and_removes_nothing(store):
    root, keys = store
    before = sorted(p for p in root.rglob("*"))
    result = tomoloop("db", "gc", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    listed = {row["key"]: row["bytes"] for row in document["would_remove"]}
    assert listed == {keys["orphan"].key: keys["orphan"].size, keys["temporary"]: 12}
    assert document["bytes"] == keys["orphan"].size + 12
    assert sorted(p for p in root.rglob("*")) == before


def test_delete_removes_only_old_unreferenced_files(store):
    root, keys = store
    result = tomoloop("db", "gc", "--delete", "--json")
    assert result.returncode == 0, result.stderr
    removed = {row["key"] for row in json.loads(result.stdout)["removed"]}
    assert removed == {keys["orphan"].key, keys["temporary"]}
    assert not (root / keys["orphan"].key).exists() and not (root / keys["temporary"]).exists()
    for key in [*keys["referenced"], keys["fresh"], "notes.txt"]:
        assert (root / key).exists(), key
    again = json.loads(tomoloop("db", "gc", "--delete", "--json").stdout)
    assert again == {"removed": [], "bytes": 0}


def test_a_grace_longer_than_the_files_age_keeps_them(store):
    result = tomoloop("db", "gc", "--grace", "2d", "--json")
    assert json.loads(result.stdout) == {"would_remove": [], "bytes": 0}


def test_people_get_the_files_and_one_summary_line(store):
    root, keys = store
    result = tomoloop("db", "gc")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        f"{keys['orphan'].key}  {keys['orphan'].size:,} B",
        f"{keys['temporary']}  12 B",
    ]
    assert lines[2].startswith("would remove 2 unreferenced file(s)")
    assert lines[2].endswith("run again with --delete to remove them")
    assert (root / keys["orphan"].key).exists()


def test_a_registry_that_refers_to_nothing_never_empties_the_store(tmp_path, monkeypatch):
    """TOMOLOOP_DATABASE_URL unset or wrong beside a shared store: --delete is refused."""
    root = tmp_path / "shared"
    artifact = ArtifactStore(str(root)).put_bytes(b"someone's checkpoint", ".pt")
    age(root, artifact.key)
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOMOLOOP_ARTIFACTS_URL", str(root))
    listed = json.loads(tomoloop("db", "gc", "--json").stdout)["would_remove"]
    assert [row["key"] for row in listed] == [artifact.key]
    result = tomoloop("db", "gc", "--delete")
    said = " ".join(result.stderr.split())
    assert result.returncode == 2 and "Traceback" not in said
    assert "TOMOLOOP_DATABASE_URL" in said and "nothing was removed" in said
    assert (root / artifact.key).exists()
    assert not (tmp_path / "home").exists()  # the absent registry was only read


def test_a_bad_grace_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    result = tomoloop("db", "gc", "--grace", "soon")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--grace 'soon'" in result.stderr and "1h" in result.stderr
