"""A dataset of two scans: the second added without labels, scores per volume and pooled,
and rounds on "the new scan" under a per-volume quota (SQLite registry, Prefect)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from tomoloop.db.registry import Registry, RegistryError

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]

PHASES, SPLIT = "pore=0,nmc=1,cbd=2", (0.6, 0.2, 0.2)
TRAIN = {"epochs": 2, "patch": 32, "batch": 4, "patches_per_epoch": 16, "overlap": 8}
NET = {"base": 4, "depth": 2}


@pytest.fixture(scope="module")
def scans(tmp_path_factory, prefect_harness):
    """Scan ``first`` (labelled) as dataset ``cell``, then scan ``second`` (the electrode
    mirrored, other contrast) added to it without labels; yields (registry, folder, the
    second ingest's result) with the environment set for the module."""
    from tomoloop.db.engine import make_engine, upgrade
    from tomoloop.flows.ingest import ingest

    folder = tmp_path_factory.mktemp("scans")
    url = f"sqlite:///{folder / 'r.sqlite'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    labels = _electrode()
    second = labels[:, ::-1].copy()
    rng = np.random.default_rng(0)
    stacks = {
        "first": (labels * 80 + 20 + rng.normal(0, 4, labels.shape), labels),
        "second": (second * 60 + 50 + rng.normal(0, 8, labels.shape), second),
    }
    for name, (gray, truth) in stacks.items():
        tifffile.imwrite(folder / f"{name}.tif", np.clip(gray, 0, 255).astype(np.uint8))
        tifffile.imwrite(folder / f"{name}-labels.tif", truth)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOMOLOOP_HOME", str(folder / "home"))
        patch.setenv("TOMOLOOP_DATABASE_URL", url)
        ingest(gray=str(folder / "first.tif"), labels=str(folder / "first-labels.tif"),
               name="first", phases=PHASES, split=SPLIT)  # fmt: skip
        added = ingest(gray=str(folder / "second.tif"), labels=None, name="cell-2",
                       phases=PHASES, split=SPLIT, add_to="first")  # fmt: skip
        registry = Registry.from_url(url)
        yield registry, folder, added
        registry.engine.dispose()


def _electrode() -> np.ndarray:
    """(20, 40, 48) uint8 labels: pore 0, a particle 1 that grows along z, binder 2."""
    z, y, x = np.indices((20, 40, 48))
    labels = np.where((y - 16) ** 2 + (x - 18) ** 2 <= (4 + z // 2) ** 2, 1, 0)
    labels[:, 34:, :] = 2
    return labels.astype(np.uint8)


def _volume_of(registry: Registry, slice_ids) -> list[str]:
    names = {v.id: v.name for v in registry.volumes()}
    where = {p.slice_id: p.volume_id for p in registry.pool(registry.dataset("first").id)}
    return [names[where[s]] for s in slice_ids]


def test_a_scan_without_labels_joins_every_split_unlabelled(scans):
    from tomoloop.flows.ingest import ingest
    from tomoloop.services import Services, dataset_slices

    registry, folder, added = scans
    assert (added["dataset"], added["version"], added["slices"]) == ("first", 2, 20)
    assert added["coco_artifact"] is None and added["annotations_added"] == 0  # no label yet
    v1, v2 = registry.dataset("first", 1), registry.dataset("first", 2)
    assert [v.name for v in registry.dataset_volumes(v2.id)] == ["first", "cell-2"]
    counts = registry.dataset_counts(v2.id)
    unlabelled = {split: counts[split].get("unlabelled", 0) for split in counts}
    assert unlabelled["train"] > unlabelled["val"] > 0 and unlabelled["test"] > 0
    assert {split: c.get("auto") for split, c in counts.items()} == {
        split: sum(c.values()) for split, c in registry.dataset_counts(v1.id).items()
    }  # the first scan's labels, as before
    assert registry.dataset_labelled_px(v2.id) == registry.dataset_labelled_px(v1.id)
    second_test = [p for p in registry.pool(v2.id, "test") if p.volume_id == added["volume_id"]]
    assert len(second_test) == unlabelled["test"]
    assert {p.state for p in second_test} == {"free"}  # gold or a round can label them

    with Services.from_settings() as services:  # nothing to learn from or judge by there
        read = {s: len(v) for s, v in dataset_slices(services, v2).items()}
        assert read == {s: len(v) for s, v in dataset_slices(services, v1).items()}

    with pytest.raises(RegistryError, match="give --add-to DATASET"):
        ingest(gray=str(folder / "second.tif"), labels=None, name="alone", phases=PHASES)
    assert len(registry.volumes()) == 2


def test_label_export_writes_the_scan_nobody_labelled_all_unlabelled(scans, tmp_path):
    from tomoloop.services import Services
    from tomoloop.services.exports import export_labels

    registry, folder, _ = scans
    with Services.from_settings() as services:
        out = export_labels(services, registry.dataset("first", 2), tmp_path / "labels", "tiff")
    (first_out, second_out) = out["volumes"]
    assert (first_out["volume"], second_out["volume"], second_out["slices"]) == (
        "first", "cell-2", 0
    )  # fmt: skip
    first = tifffile.imread(tmp_path / "labels" / "first.tif")
    labelled = [z for z in range(len(first)) if (first[z] != out["unlabelled"]).all()]
    assert len(labelled) == first_out["slices"] > 0  # the slices between splits: unlabelled
    truth = tifffile.imread(folder / "first-labels.tif")
    assert (first[labelled] == truth[labelled]).all()
    second = tifffile.imread(tmp_path / "labels" / "cell-2.tif")
    assert second.shape == first.shape and (second == out["unlabelled"]).all()


@pytest.fixture(scope="module")
def model(scans):
    """A small U-Net trained on the dataset's second version (the first scan's labels)."""
    from tomoloop.flows.train import train_semantic

    _, _, added = scans
    return train_semantic(added["dataset_version_id"], "unet", config=TRAIN, options=NET,
                          device="cpu")  # fmt: skip


@pytest.mark.slow
def test_scores_per_volume_and_pooled_in_the_answer_and_the_registry(scans, model):
    from tomoloop.db.views import model_row
    from tomoloop.flows.ingest import add_gold
    from tomoloop.flows.train import evaluate_model

    registry, folder, _ = scans
    first, second = (registry.volume_named(n) for n in ("first", "cell-2"))
    assert model["volumes"]["cell-2"] == {
        "scored": False, "labelled_px": 0, "reason": "nobody labelled its test slices yet",
    }  # fmt: skip
    assert model["volumes"]["first"]["mIoU"] == model["mIoU"]
    rows = {(m.name, m.class_name): m.value for m in registry.metrics(model["model_version"])
            if m.split == "test"}  # fmt: skip
    assert rows[(f"volume:{first.id}/mIoU", "")] == rows[("mIoU", "")]
    assert rows[(f"volume:{first.id}/iou", "nmc")] == rows[("iou", "nmc")]
    assert not [name for name, _ in rows if name.startswith(f"volume:{second.id}/")]

    gold = add_gold("first", "cell-2", str(folder / "second-labels.tif"), ("test",))
    assert gold["added"] > 0
    judged = evaluate_model(model["model_version"], gold["dataset_version"], "test", "cpu")
    own = judged["volumes"]
    assert own["first"]["scored"] and own["cell-2"]["scored"]
    pixels = own["first"]["labelled_px"] + own["cell-2"]["labelled_px"]
    assert judged["pixel_accuracy"] == pytest.approx(
        sum(own[n]["pixel_accuracy"] * own[n]["labelled_px"] for n in own) / pixels
    )  # pooled: every labelled pixel of both scans once
    assert own["first"]["mIoU"] == model["mIoU"]  # the same slices and labels as before

    shown = model_row(registry, registry.model(model["model_version"]))["metrics"]
    version = gold["dataset_version"]
    assert shown[f"test/volume:cell-2/mIoU@{version}"] == own["cell-2"]["mIoU"]
    assert shown["test/volume:first/mIoU"] == model["mIoU"]
    assert (
        shown[f"test/volume:cell-2/iou/nmc@{version}"] == own["cell-2"]["per_class"]["nmc"]["iou"]
    )


@pytest.mark.slow
def test_rounds_keep_the_per_volume_quota_and_stay_on_the_named_scan(scans, model):
    from tomoloop.flows.loop import al_round

    registry, _, _ = scans
    registry.promote(model["model_version"])
    ask = {"strategy": "entropy", "min_gap": 1, "cost_aware": False, "push": False,
           "device": "cpu"}  # fmt: skip
    both = al_round("first", budget=6, per_volume=2, **ask)
    chosen = _volume_of(registry, [c["slice"] for c in both["chosen"]])
    assert sorted(chosen) == ["cell-2", "cell-2", "first", "first"]  # 6 without the quota

    new_scan = al_round("first", budget=3, volumes=("cell-2",), **ask)
    chosen = _volume_of(registry, [c["slice"] for c in new_scan["chosen"]])
    assert chosen == ["cell-2"] * 3

    with pytest.raises(RegistryError, match="'third' is not in dataset first@"):
        al_round("first", budget=3, volumes=("third",), **ask)


@pytest.mark.slow
def test_a_bald_round_chooses_alike_whatever_the_process_drew_before(scans, model):
    """MC-dropout's masks come from torch's generator: a round of one model and --seed must
    choose the same slices in a fresh CLI process and deep inside a long-running flow."""
    import torch

    from tomoloop.active.requests import RoundRequest
    from tomoloop.services import Services, score_and_choose, strategy_for

    registry, _, _ = scans
    registry.promote(model["model_version"])
    asked = RoundRequest.of("bald", 4, 1, "slice", 32, None, None, None, ())
    chooser = strategy_for("bald", None, asked.unit)
    rounds = []
    with Services.from_settings() as services:
        for before in (1, 2):
            torch.manual_seed(before)  # what other work left in the generator
            _, choice = score_and_choose(
                services, "first", chooser, asked, None, 4, None, False, 0, torch.device("cpu")
            )
            rounds.append([(c.slice_id, c.score) for c in choice.chosen])
    assert len(rounds[0]) == 4 and rounds[0] == rounds[1]
