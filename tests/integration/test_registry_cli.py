"""`tomoloop registry ...` and `tomoloop coco export` as a scientist runs them."""

import json
import os
import subprocess
import sys

import pytest
import tifffile
from pycocotools.coco import COCO

from tomoloop.adapters.artifacts import ArtifactStore
from tomoloop.coco.convert import CocoOptions, convert_stack
from tomoloop.db.models import Tier
from tomoloop.db.registry import NewAnnotation, NewMetric, Registry
from tomoloop.labels.phases import PhaseMap
from tomoloop.stacks.archive import zip_folder
from tomoloop.stacks.opener import open_stack

pytestmark = pytest.mark.integration


@pytest.fixture
def populated(tmp_path, registry_url, monkeypatch, electrode_volume):
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", registry_url)
    tifffile.imwrite(tmp_path / "labels.tif", electrode_volume)
    with open_stack(tmp_path / "labels.tif") as labels:
        convert_stack(
            labels,
            tmp_path / "coco",
            PhaseMap.parse("pore=0,nmc=1,cbd=2"),
            CocoOptions(split=(0.6, 0.2, 0.2)),
        )
    store = ArtifactStore(str(tmp_path / "home" / "artifacts"))
    coco = store.put_file(zip_folder(tmp_path / "coco", tmp_path / "coco.zip"))
    registry = Registry.from_url(registry_url)
    volume = registry.register_volume(
        "nmc-1",
        "/d/nmc.tif",
        "e" * 64,
        (20, 40, 48),
        "uint8",
        "pore=0,nmc=1,cbd=2",
        (0.5, 0.5, 0.5),
    )
    slices = registry.register_slices(volume, "z", range(4))
    registry.add_annotations([NewAnnotation(s, Tier.AUTO, "auto") for s in slices.values()])
    registry.add_annotations([NewAnnotation(slices[0], Tier.EXPERT, "ls:1")])
    ids = [a.id for a in registry.best_annotations()]
    data = registry.freeze_dataset(
        "nmc",
        {"train": ids[:3], "test": ids[3:]},
        {"coco": {"uri": coco.key, "sha256": coco.sha256}},
    )
    model = registry.register_model(
        "unet", "unet", "torch", data.id, metrics=[NewMetric("mIoU", 0.91)]
    )
    registry.promote(model)
    return {"volume": volume, "dataset": data, "model": model, "store": store, "coco": coco}


def tomoloop(*args):
    result = subprocess.run(
        [sys.executable, "-m", "tomoloop.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result


def test_listings_print_one_json_list_each(populated):
    volumes = json.loads(tomoloop("registry", "volumes", "--json").stdout)
    assert volumes == [
        {
            "id": populated["volume"],
            "name": "nmc-1",
            "sha256": "e" * 64,
            "shape": [20, 40, 48],
            "voxel_size": [0.5, 0.5, 0.5],
            "phases": "pore=0,nmc=1,cbd=2",
        }
    ]
    (dataset,) = json.loads(tomoloop("registry", "datasets", "--json").stdout)
    assert dataset["version"] == 1
    assert dataset["counts"] == {"train": {"expert": 1, "auto": 2}, "test": {"auto": 1}}
    (model,) = json.loads(tomoloop("registry", "models", "--json").stdout)
    assert (model["stage"], model["metrics"]) == ("champion", {"test/mIoU": 0.91})
    assert json.loads(tomoloop("registry", "rounds", "--json").stdout) == []
    lineage = json.loads(tomoloop("registry", "lineage", populated["model"], "--json").stdout)
    assert lineage[0]["annotations_by_tier"] == {"auto": 3, "expert": 1}
    shown = json.loads(tomoloop("registry", "show", "dataset", "nmc@1", "--json").stdout)
    assert shown[0]["id"] == populated["dataset"].id
    by_id = json.loads(
        tomoloop("registry", "show", "dataset", populated["dataset"].id, "--json").stdout
    )
    assert by_id == shown
    people = tomoloop("registry", "models")
    assert people.returncode == 0 and "champion" in people.stdout


def test_coco_export_unpacks_a_verified_dataset(tmp_path, populated):
    result = tomoloop("coco", "export", "--dataset", "nmc", "--out", tmp_path / "x", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["files"] > 3
    COCO(str(tmp_path / "x" / "train.json"))
    assert (tmp_path / "x" / "masks").is_dir()


def test_coco_export_refuses_an_altered_artifact(tmp_path, populated):
    path = tmp_path / "home" / "artifacts" / populated["coco"].key
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    result = tomoloop("coco", "export", "--dataset", "nmc@1", "--out", tmp_path / "y")
    assert result.returncode == 2 and "altered" in result.stderr
    assert not (tmp_path / "y").exists()


def test_unknown_ids_are_clear_errors(populated):
    result = tomoloop("registry", "show", "model", "999")
    assert result.returncode == 2 and "no model version with id 999" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- first run, bad databases


def _refused(result, *fragments: str) -> str:
    """The error of a refused command: exit 2, no traceback, the fragments in its text
    (lines rejoined: stderr may be wrapped)."""
    said = " ".join(result.stderr.split())
    assert result.returncode == 2, said
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in said, said
    return said


def test_read_only_commands_on_a_fresh_home_see_an_empty_registry_and_create_nothing(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TOMOLOOP_DATABASE_URL", raising=False)
    assert tomoloop("registry", "volumes", "--json").stdout.strip() == "[]"
    _refused(tomoloop("registry", "show", "dataset", "nmc"), "no dataset 'nmc'")
    assert json.loads(tomoloop("db", "current", "--json").stdout)["revision"] is None
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", f"sqlite:///{tmp_path / 'd' / 'e' / 'r.sqlite'}")
    assert tomoloop("registry", "datasets", "--json").stdout.strip() == "[]"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url, message",
    [
        ("notaurl", "'notaurl' is not a database URL"),
        ("mysql://me:secret@db.example/reg", "'mysql' registries are not supported"),
        ("oracle+cx_oracle://me:secret@db/reg", "'oracle' registries are not supported"),
    ],
)
def test_unusable_database_urls_are_one_line(tmp_path, monkeypatch, url, message):
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", url)
    commands = (
        ("registry", "volumes"),
        ("db", "upgrade"),
        ("registry", "refresh", "--dataset", "x"),
    )
    for args in commands:
        said = _refused(tomoloop(*args), message, "postgresql+psycopg://")
        assert "secret" not in said
    assert list(tmp_path.iterdir()) == []


def test_a_registry_in_memory_is_refused_for_it_would_keep_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    for url in ("sqlite://", "sqlite:///:memory:"):
        monkeypatch.setenv("TOMOLOOP_DATABASE_URL", url)
        for args in (("registry", "volumes", "--json"), ("db", "upgrade")):
            _refused(tomoloop(*args), "is a registry in memory", "sqlite:////abs/path")
    assert list(tmp_path.iterdir()) == []


def test_a_home_that_is_a_file_is_named_not_taken_for_an_empty_registry(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("TOMOLOOP_HOME", str(home))
    monkeypatch.delenv("TOMOLOOP_DATABASE_URL", raising=False)
    for args in (("registry", "volumes", "--json"), ("db", "current"), ("db", "upgrade")):
        _refused(tomoloop(*args), f"the registry {home / 'registry.sqlite'} cannot be used")
    assert home.read_text() == "not a folder"


@pytest.mark.parametrize("damage", ["random bytes", "truncated"])
def test_a_corrupt_sqlite_registry_is_one_line_and_left_as_it_is(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path))
    monkeypatch.delenv("TOMOLOOP_DATABASE_URL", raising=False)
    path = tmp_path / "registry.sqlite"
    assert tomoloop("db", "upgrade").returncode == 0
    data = path.read_bytes()
    path.write_bytes(os.urandom(20_000) if damage == "random bytes" else data[: len(data) // 2])
    spoilt = path.read_bytes()
    for args in (("registry", "volumes"), ("registry", "refresh", "--dataset", "x")):
        _refused(tomoloop(*args), str(path), "restore it from a backup")
    assert path.read_bytes() == spoilt


def test_db_upgrade_to_an_unknown_revision_is_refused_before_anything_is_made(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TOMOLOOP_DATABASE_URL", raising=False)
    _refused(tomoloop("db", "upgrade", "--revision", "9999"), "--revision '9999'", "0001")
    _refused(tomoloop("db", "downgrade", "--revision", "nope"), "--revision 'nope'")
    assert not (tmp_path / "home").exists()


def test_registry_runs_marks_a_killed_run_failed(populated):
    import subprocess as sp

    from tomoloop.processes import ProcessId, this_process

    registry = Registry.from_url(os.environ["TOMOLOOP_DATABASE_URL"])
    child = sp.Popen([sys.executable, "-c", "pass"])
    child.wait()  # killed mid-training: its process is gone
    me = this_process()
    run = registry.start_training(populated["model"], "cpu", ProcessId(me.host, child.pid, 1.0))
    registry.engine.dispose()
    result = tomoloop("registry", "runs", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = [r for r in json.loads(result.stdout) if r["id"] == run]
    assert row["status"] == "failed" and f"process {child.pid}" in row["failure"]
