"""The ingest flow, run by Prefect, against both registry backends."""

import numpy as np
import pytest
import tifffile

from tomoloop.db.registry import Registry, RegistryError
from tomoloop.errors import StackValidationError
from tomoloop.labels.masks import decode_class_mask

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
SPLITS = ("train", "val", "test")


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


def test_an_export_made_with_other_options_is_a_new_version_holding_it(
    tmp_path, home, registry_url, electrode_volume
):
    """The same labels ingested with other instance phases: a new version (same slices)
    holds the new COCO export, which training reads; no stored artifact is left
    unreferenced (it was: the new zip was stored, reported, and never used)."""
    from tomoloop.flows.ingest import ingest

    gray, labels = _stacks(tmp_path, electrode_volume)
    args = dict(gray=gray, labels=labels, name="d", phases="pore=0,nmc=1,cbd=2")
    nmc = ingest(**args, instance_phases=("nmc",))
    cbd = ingest(**args, instance_phases=("cbd",))
    assert (cbd["version"], cbd["annotations_added"]) == (2, 0)
    registry = Registry.from_url(registry_url)
    v1, v2 = registry.dataset("d", 1), registry.dataset("d", 2)
    assert v2.artifacts["coco"]["uri"] == cbd["coco_artifact"] != nmc["coco_artifact"]
    assert v1.artifacts["coco"]["uri"] == nmc["coco_artifact"] and v2.parent_id == v1.id
    assert registry.dataset_members(v1.id) == registry.dataset_members(v2.id)
    assert ingest(**args, instance_phases=("cbd",))["version"] == 2  # again: nothing new
    assert ingest(**args, instance_phases=("nmc",))["version"] == 1  # v1 holds that export
    held = [a["uri"] for v in registry.datasets() for a in v.artifacts.values()]
    assert _artifact_files(home) == sorted({uri.split("/")[-1] for uri in held})


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
    with pytest.raises(RegistryError, match="already used"):  # refused at register_volume
        ingest(gray=gray2, labels=labels2, name="nmc", phases="pore=0,nmc=1,cbd=2", add_to="nmc")
    assert _artifact_files(home) == before
    assert len(Registry.from_url(registry_url).volumes()) == 1


def _ends_volume():
    """(54, 12, 12) labels: pore and nmc in every slice, cbd only in z 0-13 and 47-53. Block
    shuffle 0 of 54 slices puts val at z 43-46 and test at 32-35, where it has no cbd."""
    volume = np.zeros((54, 12, 12), np.uint8)
    volume[:, :, 6:] = 1
    volume[:14, :4, :4] = volume[47:, :4, :4] = 2
    return volume


def _split_z(registry, version, volume_id):
    """{split: sorted z} of a volume's slices in a dataset version."""
    held = [m for m in registry.dataset_slices(version) if m.volume_id == volume_id]
    return {part: sorted(m.index for m in held if m.split == part) for part in SPLITS}


def _coco_split_z(home, uri):
    """{split: sorted z} of the images of a COCO zip artifact."""
    import json
    import zipfile

    with zipfile.ZipFile(home / "artifacts" / uri) as coco:
        return {
            part: sorted(i["index"] for i in json.loads(coco.read(f"{part}.json"))["images"])
            for part in SPLITS
        }


def test_a_phase_found_only_at_the_ends_of_the_stack_reaches_val_and_test_alike(
    tmp_path, home, registry_url
):
    """Ingest takes the first shuffle that gives every split its share of every phase, and
    the COCO export splits the slices as the registered dataset does."""
    import json
    import zipfile

    from tomoloop.flows.ingest import ingest

    volume = _ends_volume()
    gray, labels = _stacks(tmp_path, volume)
    done = ingest(gray=gray, labels=labels, name="ends", phases="pore=0,nmc=1,cbd=2")
    registry = Registry.from_url(registry_url)
    split_z = _split_z(registry, done["dataset_version_id"], done["volume_id"])
    assert all((volume[split_z[part]] == 2).any() for part in ("train", "val", "test"))
    assert registry.volume_split(done["volume_id"]) == split_z
    uri = registry.dataset_version(done["dataset_version_id"]).artifacts["coco"]["uri"]
    assert _coco_split_z(home, uri) == split_z
    with zipfile.ZipFile(home / "artifacts" / uri) as coco:
        for part in ("train", "val", "test"):
            document = json.loads(coco.read(f"{part}.json"))
            cbd = next(c["id"] for c in document["categories"] if c["name"] == "cbd")
            assert any(a["category_id"] == cbd for a in document["annotations"])


def test_a_volumes_slices_keep_their_split_whatever_labels_it_gets_later(
    tmp_path, home, registry_url, electrode_volume
):
    """A scan added unlabelled (shuffle 0) and labelled later, and a scan relabelled, keep
    the split their slices have, in the registry and in the COCO export alike: a slice
    never moves between splits (no test slice of one version trains the next)."""
    from tomoloop.flows.ingest import ingest

    phases = "pore=0,nmc=1,cbd=2"
    base, ends = tmp_path / "base", tmp_path / "ends"
    base.mkdir(), ends.mkdir()
    _stacks(base, electrode_volume)
    gray, labels = _stacks(ends, _ends_volume())
    ingest(gray=str(base / "gray.tif"), labels=str(base / "labels.tif"), name="base", phases=phases)
    unlabelled = ingest(gray=gray, labels=None, name="ends", phases=phases, add_to="base")
    registry = Registry.from_url(registry_url)
    first = _split_z(registry, unlabelled["dataset_version_id"], unlabelled["volume_id"])
    assert first["test"] == [32, 33, 34, 35]  # shuffle 0: no labels to balance
    labelled = ingest(gray=gray, labels=labels, name="ends", phases=phases, add_to="base")
    assert _split_z(registry, labelled["dataset_version_id"], labelled["volume_id"]) == first
    uri = registry.dataset_version(labelled["dataset_version_id"]).artifacts["coco:ends"]["uri"]
    assert _coco_split_z(home, uri) == first

    everywhere = _ends_volume()
    everywhere[:, :4, :4] = 2  # cbd in every slice: shuffle 0 qualifies
    solo = tmp_path / "solo"
    solo.mkdir()
    gray, labels = _stacks(solo, everywhere)
    v1 = ingest(gray=gray, labels=labels, name="solo", phases=phases)
    before = _split_z(registry, v1["dataset_version_id"], v1["volume_id"])
    assert before["test"] == [32, 33, 34, 35]
    tifffile.imwrite(solo / "labels-2.tif", _ends_volume())  # alone, it would be shuffled
    v2 = ingest(gray=gray, labels=str(solo / "labels-2.tif"), name="solo", phases=phases)
    assert v2["version"] == 2
    assert _split_z(registry, v2["dataset_version_id"], v2["volume_id"]) == before
    uri = registry.dataset_version(v2["dataset_version_id"]).artifacts["coco"]["uri"]
    assert _coco_split_z(home, uri) == before


@pytest.mark.slow  # > 40 s
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


def test_a_dataset_gains_a_volume_only_explicitly(tmp_path, home, registry_url, electrode_volume):
    from tomoloop.flows.ingest import ingest
    from tomoloop.services import Services, dataset_slices

    for folder, volume in (("a", electrode_volume), ("b", electrode_volume[:, ::-1].copy())):
        (tmp_path / folder).mkdir()
        _stacks(tmp_path / folder, volume)
    a = [str(tmp_path / "a" / f) for f in ("gray.tif", "labels.tif")]
    b = [str(tmp_path / "b" / f) for f in ("gray.tif", "labels.tif")]
    phases, split = "pore=0,nmc=1,cbd=2", (0.6, 0.2, 0.2)
    ingest(gray=a[0], labels=a[1], name="A", phases=phases, split=split)
    registry = Registry.from_url(registry_url)
    v1 = registry.dataset("A")
    stored = (len(registry.volumes()), len(registry.datasets()), _artifact_files(home))

    with pytest.raises(RegistryError, match=r"dataset 'A' holds volume 'A'.*--add-to A"):
        ingest(gray=b[0], labels=b[1], name="A", phases=phases, split=split)
    with pytest.raises(RegistryError, match=r"differ from pore=0,nmc=1,cbd=2, the phases of "):
        ingest(gray=b[0], labels=b[1], name="B", phases="pore=0,nmc=1,cbd=2,x=3", add_to="A")
    assert (len(registry.volumes()), len(registry.datasets()), _artifact_files(home)) == stored

    added = ingest(gray=b[0], labels=b[1], name="B", phases=phases, split=split, add_to="A")
    assert (added["dataset"], added["version"]) == ("A", 2)
    v2 = registry.dataset("A")
    assert v2.parent_id == v1.id
    assert [v.name for v in registry.dataset_volumes(v2.id)] == ["A", "B"]
    before, after = registry.dataset_members(v1.id), registry.dataset_members(v2.id)
    for split_name, ids in before.items():  # A's slices keep their split
        assert set(ids) <= set(after[split_name])
    new = {s: len(after[s]) - len(before[s]) for s in after}
    assert new["train"] > new["val"] > 0 and new["test"] > 0  # B split on its own
    assert set(v2.artifacts) == {"coco", "coco:B"}
    again = ingest(gray=b[0], labels=b[1], name="B", phases=phases, split=split, add_to="A")
    assert again["version"] == 2  # adding it twice changes nothing
    with pytest.raises(RegistryError, match=r"registered as volume 'B', not 'B2'.*--name B"):
        ingest(gray=b[0], labels=b[1], name="B2", phases=phases, split=split, add_to="A")

    relabelled = electrode_volume[:, ::-1].copy()
    relabelled[relabelled == 2] = 0  # new labels of B, and another --split asked for
    tifffile.imwrite(tmp_path / "b" / "labels-2.tif", relabelled)
    third = ingest(gray=b[0], labels=str(tmp_path / "b" / "labels-2.tif"), name="B",
                   phases=phases, split=(0.3, 0.3, 0.4), add_to="A")  # fmt: skip
    v3 = registry.dataset("A")
    assert third["version"] == 3 and v3.parent_id == v2.id

    def splits_of(version):
        return {s: sorted(p.slice_id for p in registry.pool(version.id, s)) for s in after}

    assert splits_of(v3) == splits_of(v2)  # every slice once, in the split it had
    b_volume = registry.volume_named("B").id
    masks = [m for m in registry.dataset_slices(v3.id) if m.volume_id == b_volume]
    assert masks and all(
        np.array_equal(decode_class_mask(m.mask_rle), relabelled[m.index]) for m in masks
    )
    assert v3.artifacts["coco:B"] != v2.artifacts["coco:B"]
    assert v3.artifacts["coco"] == v2.artifacts["coco"]

    def labels_of(version, volume):  # {z: class mask} of a volume's slices in a version
        held = registry.dataset_slices(version.id)
        return {m.index: decode_class_mask(m.mask_rle) for m in held if m.volume_id == volume}

    another = ingest(gray=b[0], labels=b[1], name="C", phases=phases, split=split)
    assert (another["dataset"], another["volume"]) == ("C", "B")  # a stack is one volume
    unlabelled = ingest(gray=b[0], labels=None, name="B", phases=phases, add_to="A")
    assert (unlabelled["version"], unlabelled["annotations_added"]) == (3, 0)  # labels kept
    assert all(np.array_equal(m, relabelled[z]) for z, m in labels_of(v3, b_volume).items())

    a_volume = registry.volume_named("A").id
    fixed = electrode_volume.copy()
    fixed[fixed == 1] = 2  # new labels of A, ingested as A's first scan was (no --add-to)
    tifffile.imwrite(tmp_path / "a" / "labels-2.tif", fixed)
    fourth = ingest(gray=a[0], labels=str(tmp_path / "a" / "labels-2.tif"), name="A",
                    phases=phases, split=split)  # fmt: skip
    v4 = registry.dataset("A")
    assert fourth["version"] == 4 and splits_of(v4) == splits_of(v3)  # B stays in A
    assert all(np.array_equal(m, fixed[z]) for z, m in labels_of(v4, a_volume).items())
    assert labels_of(v4, b_volume).keys() == labels_of(v3, b_volume).keys()
    assert v4.artifacts["coco"] != v3.artifacts["coco"]
    assert v4.artifacts["coco:B"] == v3.artifacts["coco:B"]

    services = Services.from_settings()
    try:  # training reads each slice from its own volume
        slices = dataset_slices(services, v2)
    finally:
        services.close()
    paths = {m.volume_path for m in registry.dataset_slices(v2.id)}
    assert paths == {str(tmp_path / "a" / "gray.tif"), str(tmp_path / "b" / "gray.tif")}
    assert sum(len(v) for v in slices.values()) == sum(len(v) for v in after.values())
    registry.engine.dispose()


def test_ingest_from_hdf5_and_a_slice_folder_keeps_the_source_it_reopens(
    tmp_path, monkeypatch, home, registry_url, electrode_volume
):
    import h5py

    from tomoloop.flows.ingest import add_gold, ingest
    from tomoloop.services import Services, dataset_slices
    from tomoloop.stacks.opener import open_stack

    with h5py.File(tmp_path / "scan.h5", "w") as h5:  # gray and labels in one file
        h5.create_dataset("exchange/data", data=(electrode_volume * 80 + 20).astype(np.uint8))
        h5.create_dataset("labels", data=electrode_volume)
    (tmp_path / "gold").mkdir()
    for i, plane in enumerate(electrode_volume):
        tifffile.imwrite(tmp_path / "gold" / f"z{i}.tif", plane)
    monkeypatch.chdir(tmp_path)  # relative sources become absolute in the registry
    args = dict(gray="scan.h5", labels="scan.h5:/labels", name="h5", phases="pore=0,nmc=1,cbd=2")
    first = ingest(**args)
    assert ingest(**args)["dataset_version_id"] == first["dataset_version_id"]  # same content
    registry = Registry.from_url(registry_url)
    volume = registry.volume(first["volume_id"])
    assert volume.path == f"{tmp_path / 'scan.h5'}:/exchange/data"
    with open_stack(volume.path) as gray:
        assert volume.sha256 == gray.content_sha256()
        np.testing.assert_array_equal(gray.slice("z", 3), electrode_volume[3] * 80 + 20)
    services = Services.from_settings()
    try:  # training reopens every slice from the registered source
        slices = dataset_slices(services, registry.dataset("h5"))
    finally:
        services.close()
    assert sum(len(v) for v in slices.values()) > 0
    assert add_gold("h5", "h5", "gold")["added"] > 0  # gold labels from a slice folder
    registry.engine.dispose()


def test_gold_labels_that_could_label_nothing_are_refused(
    tmp_path, home, registry_url, electrode_volume
):
    from tomoloop.flows.ingest import add_gold, ingest

    phases = "pore=0,nmc=1,cbd=2"
    for folder, volume in (("a", electrode_volume), ("b", electrode_volume[:, ::-1].copy())):
        (tmp_path / folder).mkdir()
        _stacks(tmp_path / folder, volume)
    a, b = (str(tmp_path / f / "gray.tif") for f in "ab")
    labels = str(tmp_path / "a" / "labels.tif")
    ingest(gray=a, labels=labels, name="solo", phases=phases, split=(1.0, 0.0, 0.0))
    ingest(gray=b, labels=str(tmp_path / "b" / "labels.tif"), name="other", phases=phases)
    registry = Registry.from_url(registry_url)
    versions = len(registry.datasets())
    with pytest.raises(RegistryError, match=r"volume 'other' is not in dataset solo@1, which "):
        add_gold("solo", "other", labels)  # a typo of --volume or --dataset
    with pytest.raises(RegistryError, match=r"solo@1 has no val or test slice of volume 'solo'"):
        add_gold("solo", "solo", labels)  # a train-only dataset: nothing to gild there
    assert add_gold("solo", "solo", labels, ("train",))["added"] == len(electrode_volume)
    assert len(registry.datasets()) == versions + 1

    from tomoloop.flows.train import train_semantic
    from tomoloop.training.data import DatasetError

    with pytest.raises(DatasetError, match=r"solo@2 has no val slices at all \(its --split"):
        train_semantic(registry.dataset("solo").id, "unet", device="cpu")

    tifffile.imwrite(b, (electrode_volume * 50).astype(np.uint8))  # a new scan, same file
    with pytest.raises(RegistryError, match=r"gray.tif is the file volume 'other' was regis"):
        ingest(gray=b, labels=labels, name="third", phases=phases, add_to="other")
    assert len(registry.volumes()) == 2
    registry.engine.dispose()
