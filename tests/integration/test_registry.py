"""The registry on both backends: a SQLite file and a real PostgreSQL server."""

import contextlib
import json
import logging
import multiprocessing
import threading
import time
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import inspect, text, update
from sqlalchemy.exc import IntegrityError

from tomoloop.db.engine import current_revision, downgrade, make_engine, upgrade
from tomoloop.db.models import Kind, ModelVersion, RoundItem, Tier, TrainingRun, utcnow
from tomoloop.db.registry import NewAnnotation, NewMetric, Registry, RegistryError

pytestmark = pytest.mark.integration


def _volume(registry, name="nmc-1", sha="a" * 64, shape=(10, 8, 8)):
    return registry.register_volume(
        name, f"/data/{name}.tif", sha, shape, "uint8", "pore=0,nmc=1,cbd=2", (0.5, 0.5, 0.5)
    )


def _check_names(engine, table):
    return {c["name"] for c in inspect(engine).get_check_constraints(table)}


def test_migrations_upgrade_from_empty_and_downgrade_a_step(registry_url):
    engine = make_engine(registry_url)
    assert current_revision(engine) == "0008"
    tables = {"volumes", "slices", "annotations", "round_items", "ls_events", "reviews"}
    assert tables | {"agreements"} <= set(inspect(engine).get_table_names())
    assert "ck_ls_events_via" in _check_names(engine, "ls_events")
    assert "ck_round_items_region" in _check_names(engine, "round_items")
    downgrade(engine)
    assert current_revision(engine) == "0007"
    assert "region_size" not in {c["name"] for c in inspect(engine).get_columns("round_items")}
    assert "ck_round_items_region" not in _check_names(engine, "round_items")
    downgrade(engine)
    assert current_revision(engine) == "0006"
    assert "ck_ls_events_via" not in _check_names(engine, "ls_events")
    downgrade(engine)
    assert current_revision(engine) == "0005"
    assert "labelled_px" not in {c["name"] for c in inspect(engine).get_columns("annotations")}
    downgrade(engine)
    assert current_revision(engine) == "0004"
    assert "pid" not in {c["name"] for c in inspect(engine).get_columns("training_runs")}
    downgrade(engine)
    assert current_revision(engine) == "0003"
    assert "kind" not in {c["name"] for c in inspect(engine).get_columns("annotations")}
    downgrade(engine)
    assert current_revision(engine) == "0002"
    assert not {"reviews", "agreements"} & set(inspect(engine).get_table_names())
    columns = {c["name"] for c in inspect(engine).get_columns("round_items")}
    assert "prediction_rle" not in columns and "annotation_seconds" in columns
    downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(engine)
    assert current_revision(engine) == "0008"
    engine.dispose()


def test_round_regions_migrate_over_stored_rounds_and_block_a_lossy_downgrade(registry_url):
    from tomoloop.errors import TomoloopError

    registry = Registry.from_url(registry_url)
    slices = registry.register_slices(_volume(registry), "z", [0, 4, 8])
    downgrade(registry.engine, "0007")
    with registry.engine.begin() as connection:  # a slice round stored before regions
        connection.execute(
            text(
                "INSERT INTO al_rounds (dataset, strategy, budget, status, created_at) "
                "VALUES ('nmc', 'bald', 1, 'open', CURRENT_TIMESTAMP)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO round_items (round_id, slice_id, score, rank, state) "
                "SELECT max(id), :slice, 0.5, 1, 'pending' FROM al_rounds"
            ),
            {"slice": slices[0]},
        )
    upgrade(registry.engine)
    (old,) = registry.round_items(registry.open_rounds("nmc")[0])
    assert (old.slice_id, old.region) == (slices[0], None)

    regional = registry.open_round(
        "nmc", "bald", None, [(slices[4], 0.9), (slices[8], 0.7)], 100, {slices[4]: (2, 3, 5)}
    )
    items = {i.slice_id: i.region for i in registry.round_items(regional)}
    assert items == {slices[4]: (2, 3, 5), slices[8]: None}
    assert [i.slice_id for i in registry.region_items("nmc")] == [slices[4]]
    pixels = registry.round_pixels()
    assert pixels[regional] == ("region", 0) and pixels[old.round_id] == ("slice", 0)
    for partial in ("region_y0 = 1, region_x0 = NULL", "region_size = 0"):
        with pytest.raises(IntegrityError), registry.engine.begin() as connection:
            connection.execute(
                text(f"UPDATE round_items SET {partial} WHERE round_id = :r"), {"r": regional}
            )
    with pytest.raises(TomoloopError, match=r"holds 1 region items.*stay at 0008"):
        downgrade(registry.engine, "0007")
    assert current_revision(registry.engine) == "0008"
    assert {i.slice_id: i.region for i in registry.round_items(regional)} == items
    registry.engine.dispose()


def test_instance_labels_migrate_over_stored_labels_and_block_a_lossy_downgrade(registry_url):
    from tomoloop.errors import TomoloopError
    from tomoloop.labels.masks import InstanceMasks, encode_instances

    registry = Registry.from_url(registry_url)
    slices = registry.register_slices(_volume(registry), "z", [0, 1])
    registry.add_annotations([NewAnnotation(s, Tier.AUTO, "auto:x") for s in slices.values()])
    ids = [a.id for a in registry.best_annotations()]
    v1 = registry.freeze_dataset("nmc", {"train": ids})
    downgrade(registry.engine, "0003")  # labels and dataset members survive both ways
    upgrade(registry.engine)
    assert [(a.id, a.kind) for a in registry.best_annotations()] == [(i, "semantic") for i in ids]
    assert registry.dataset_members(v1.id)["train"] == ids

    drawn = InstanceMasks(np.ones((1, 8, 8), bool), np.array([1]), (1,))
    registry.add_annotations(
        [
            NewAnnotation(
                slices[0],
                Tier.ANNOTATOR,
                "ls:1",
                mask_rle=encode_instances(drawn),
                kind=Kind.INSTANCE,
            )
        ]
    )
    with pytest.raises(TomoloopError, match=r"holds 1 instance labels.*stay at 0004"):
        downgrade(registry.engine, "0003")
    assert current_revision(registry.engine) == "0008"  # all steps undone, or none
    assert registry.refresh_dataset("nmc").version == 2
    registry.engine.dispose()


def _sparse_region(shape=(8, 8), rows=2):
    """A class-index mask labelled in its first ``rows`` rows only (class 1 there)."""
    from tomoloop.labels.phases import IGNORE

    mask = np.full(shape, IGNORE, np.uint8)
    mask[:rows] = 1
    return mask


def test_labelled_pixels_are_counted_on_insert_and_summed_per_dataset_and_lineage(registry_url):
    from tomoloop.labels.masks import encode_class_mask

    registry = Registry.from_url(registry_url)
    slices = registry.register_slices(_volume(registry), "z", [0, 1, 2])
    dense = encode_class_mask(np.zeros((8, 8), np.uint8))
    registry.add_annotations(
        [NewAnnotation(slices[i], Tier.AUTO, "auto:x", mask_rle=dense) for i in range(3)]
        + [
            NewAnnotation(
                slices[1], Tier.ANNOTATOR, "ls:1", mask_rle=encode_class_mask(_sparse_region())
            )
        ]
        + [
            NewAnnotation(
                slices[2],
                Tier.ANNOTATOR,
                "ls:2",
                mask_uri="m",
                mask_sha256="0" * 64,
                labelled_px=24,
            )
        ]
    )
    by_slice = {a.slice_id: a.labelled_px for a in registry.best_annotations()}
    assert by_slice == {slices[0]: 64, slices[1]: 16, slices[2]: 24}
    best = {a.slice_id: a.id for a in registry.best_annotations()}
    data = registry.freeze_dataset(
        "nmc", {"train": [best[slices[0]], best[slices[1]]], "test": [best[slices[2]]]}
    )
    assert registry.dataset_labelled_px(data.id) == {"train": 64 + 16, "test": 24}
    model = registry.register_model("nmc", "unet", "torch", data.id)
    assert registry.lineage(model).labelled_px == 104

    with pytest.raises(RegistryError, match="no inline mask and no labelled_px"):
        registry.add_annotations(
            [NewAnnotation(slices[0], Tier.EXPERT, "file", mask_uri="m", mask_sha256="0" * 64)]
        )
    assert len(registry.best_annotations()) == 3 and registry.best_labels()[slices[0]][1] == 0
    registry.engine.dispose()


def test_the_migration_counts_the_labelled_pixels_of_stored_labels(registry_url):
    from sqlalchemy import text

    from tomoloop.labels.masks import encode_class_mask

    registry = Registry.from_url(registry_url)
    volume = _volume(registry, shape=(10, 8, 6))
    (z0,) = registry.register_slices(volume, "z", [0]).values()
    (y0,) = registry.register_slices(volume, "y", [0]).values()
    (x0,) = registry.register_slices(volume, "x", [0]).values()
    downgrade(registry.engine, "0005")  # labels stored before the column existed
    sparse = encode_class_mask(_sparse_region((8, 6), rows=3))
    with registry.engine.begin() as connection:
        for slice_id, tier, mask in [(z0, 0, None), (y0, 0, None), (x0, 0, None), (z0, 2, sparse)]:
            connection.execute(
                text(
                    "INSERT INTO annotations (slice_id, tier, source, author, mask_rle, "
                    "created_at, kind) VALUES (:s, :t, 'src', '', :m, :c, 'semantic')"
                ),
                {"s": slice_id, "t": tier, "m": mask and json.dumps(mask), "c": utcnow()},
            )
    upgrade(registry.engine)
    counts = {(a.slice_id, a.tier): a.labelled_px for a in _all_annotations(registry)}
    assert counts == {(z0, 0): 48, (y0, 0): 60, (x0, 0): 80, (z0, 2): 18}
    registry.engine.dispose()


def _all_annotations(registry):
    from sqlalchemy import select

    from tomoloop.db.models import Annotation

    with registry.session() as s:
        return list(s.scalars(select(Annotation)))


def test_volume_registration_is_idempotent_by_content(registry_url):
    registry = Registry.from_url(registry_url)
    first = _volume(registry)
    assert _volume(registry) == first
    assert _volume(registry, name="renamed") == first  # same content, same volume
    with pytest.raises(RegistryError, match="already used by another stack"):
        _volume(registry, sha="b" * 64)
    with pytest.raises(RegistryError, match=r"'nmc-1' .* --phases pore=0,nmc=1,cbd=2, not"):
        registry.register_volume("nmc-1", "/data/nmc-1.tif", "a" * 64, (10, 8, 8), "uint8",
                                 "pore=0,nmc=1,binder=5")  # fmt: skip
    assert [v.name for v in registry.volumes()] == ["nmc-1"]
    assert registry.volume(first).voxel_z_um == 0.5


def _register(url, name, sha, out):
    out.put(_volume(Registry.from_url(url), name=name, sha=sha))


def test_two_processes_registering_one_volume_leave_one(registry_url):
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = [
        context.Process(target=_register, args=(registry_url, f"v{k}", "c" * 64, out))
        for k in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    ids = {out.get(timeout=5), out.get(timeout=5)}
    assert len(ids) == 1
    assert len(Registry.from_url(registry_url).volumes()) == 1


def test_slices_and_annotations_are_idempotent_and_higher_tiers_win(registry_url):
    registry = Registry.from_url(registry_url)
    volume = _volume(registry)
    slices = registry.register_slices(volume, "z", range(5))
    assert registry.register_slices(volume, "z", [4, 3]) == {3: slices[3], 4: slices[4]}
    auto = [NewAnnotation(slices[i], Tier.AUTO, "auto:labels") for i in range(5)]
    assert registry.add_annotations(auto) == 5
    assert registry.add_annotations(auto) == 0  # same natural keys: nothing new
    assert (
        registry.add_annotations(
            [
                NewAnnotation(slices[1], Tier.ANNOTATOR, "ls:1/10", author="ann", lead_time_s=42.0),
                NewAnnotation(slices[2], Tier.ANNOTATOR, "ls:1/11"),
                NewAnnotation(slices[2], Tier.EXPERT, "ls:2/12"),
                NewAnnotation(slices[3], Tier.MODEL, "model:1"),
            ]
        )
        == 4
    )
    best = {a.slice_id: Tier(a.tier) for a in registry.best_annotations(volume)}
    assert best == {
        slices[0]: Tier.AUTO,
        slices[1]: Tier.ANNOTATOR,
        slices[2]: Tier.EXPERT,
        slices[3]: Tier.MODEL,
        slices[4]: Tier.AUTO,
    }
    assert registry.label_counts(volume) == {"auto": 2, "model": 1, "annotator": 1, "expert": 1}
    other = NewAnnotation(slices[4], Tier.AUTO, "auto:other")
    assert registry.add_annotations([*auto[:2], other, other]) == 1  # stored ones skipped
    assert registry.best_annotations(volume)[4].id == registry.annotation_id(
        slices[4], Tier.AUTO, "auto:other"
    )


def test_a_batch_failing_half_way_stores_none_of_it(registry_url):
    # rows are made as they are sent (on PostgreSQL inside the COPY): a bad one late in a
    # batch must still leave nothing of the batch behind
    registry = Registry.from_url(registry_url)
    volume = _volume(registry)
    slices = registry.register_slices(volume, "z", range(3))
    mask = {"size": [2, 2], "classes": {}}
    good = [NewAnnotation(slices[i], Tier.AUTO, "auto:x", mask_rle=mask) for i in range(2)]
    not_json = NewAnnotation(slices[2], Tier.AUTO, "auto:x", mask_rle={"size": {2}})
    with pytest.raises(TypeError):
        registry.add_annotations([*good, not_json])
    assert registry.best_annotations(volume) == []
    assert registry.add_annotations(good) == 2


def test_dataset_versions_are_content_hashed_and_chained(registry_url):
    registry = Registry.from_url(registry_url)
    slices = registry.register_slices(_volume(registry), "z", range(4))
    registry.add_annotations([NewAnnotation(s, Tier.AUTO, "auto") for s in slices.values()])
    ids = [a.id for a in registry.best_annotations()]
    v1 = registry.freeze_dataset(
        "nmc",
        {"train": ids[:2], "val": ids[2:3], "test": ids[3:]},
        {"coco": {"uri": "ab/x.json", "sha256": "0" * 64}},
    )
    again = registry.freeze_dataset("nmc", {"test": ids[3:], "val": ids[2:3], "train": ids[:2]})
    assert again.id == v1.id and v1.version == 1
    v2 = registry.freeze_dataset("nmc", {"train": ids[:3], "val": [], "test": ids[3:]})
    assert (v2.version, v2.parent_id) == (2, v1.id)
    assert registry.dataset("nmc").id == v2.id and registry.dataset("nmc", 1).id == v1.id
    assert registry.dataset_members(v1.id) == {"train": ids[:2], "val": ids[2:3], "test": ids[3:]}
    with pytest.raises(RegistryError, match="no dataset"):
        registry.dataset("nmc", 7)


def test_the_same_members_with_other_artifacts_are_a_new_version(registry_url):
    registry = Registry.from_url(registry_url)
    slices = registry.register_slices(_volume(registry), "z", range(3))
    registry.add_annotations([NewAnnotation(s, Tier.AUTO, "auto") for s in slices.values()])
    members = {"train": [a.id for a in registry.best_annotations()]}
    nmc, cbd = ({"coco": {"uri": f"ab/{n}.zip", "sha256": n * 64}} for n in "01")
    v1 = registry.freeze_dataset("nmc", members, nmc)
    assert registry.freeze_dataset("nmc", members).id == v1.id  # no artifacts: any will do
    v2 = registry.freeze_dataset("nmc", members, cbd)
    assert (v2.version, v2.parent_id, v2.artifacts) == (2, v1.id, cbd)
    assert v2.content_hash != v1.content_hash
    assert registry.dataset_members(v2.id) == registry.dataset_members(v1.id)
    assert registry.freeze_dataset("nmc", members, cbd).id == v2.id
    assert registry.freeze_dataset("nmc", members, nmc).id == v1.id


def test_lineage_both_ways(registry_url):
    registry = Registry.from_url(registry_url)
    slices = registry.register_slices(_volume(registry), "z", range(3))
    registry.add_annotations([NewAnnotation(s, Tier.AUTO, "auto") for s in slices.values()])
    registry.add_annotations([NewAnnotation(slices[0], Tier.EXPERT, "ls:1")])
    best = registry.best_annotations()
    data = registry.freeze_dataset("nmc", {"train": [a.id for a in best]})
    parent = registry.register_model("unet", "unet", "torch", None)
    child = registry.register_model(
        "unet",
        "unet",
        "torch",
        data.id,
        config={"lr": 1e-3},
        parent_id=parent,
        metrics=[NewMetric("mIoU", 0.8), NewMetric("IoU", 0.7, class_name="cbd")],
    )
    lineage = registry.lineage(child)
    assert lineage.ancestors == [parent] and lineage.dataset_version_id == data.id
    assert lineage.annotations_by_tier == {"auto": 2, "expert": 1}
    assert len(lineage.volume_ids) == 1
    assert registry.models_trained_on(best[0].id) == [child]
    assert [(m.name, m.class_name, m.value) for m in registry.metrics(child)] == [
        ("mIoU", "", 0.8),
        ("IoU", "cbd", 0.7),
    ]


def test_promotion_keeps_exactly_one_champion(registry_url):
    registry = Registry.from_url(registry_url)
    a, b, c = (registry.register_model("unet", "unet", "torch", None) for _ in range(3))
    registry.promote(a)
    registry.promote(b)
    assert registry.champion("unet").id == b and registry.model(a).stage == "retired"
    with pytest.raises(IntegrityError, match=r"(?i)unique"), registry.session() as s:
        s.execute(update(ModelVersion).where(ModelVersion.id == c).values(stage="champion"))
    assert registry.champion("unet").id == b
    outcomes: dict[int, object] = {}

    def promote(model_id):
        try:
            registry.promote(model_id)
            outcomes[model_id] = "promoted"
        except Exception as exc:  # a thread's exception is lost unless kept for the assert
            outcomes[model_id] = exc

    racers = [threading.Thread(target=promote, args=(m,)) for m in (a, c)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    lost = {m: o for m, o in outcomes.items() if o != "promoted"}
    assert len(outcomes) == 2 and len(lost) <= 1
    for model_id, exc in lost.items():
        assert isinstance(exc, RegistryError) and f"model {model_id} was not promoted" in str(exc)
    champions = [m for m in (a, b, c) if registry.model(m).stage == "champion"]
    assert len(champions) == 1 and champions[0] in set(outcomes) - set(lost)


def test_top_unlabelled_skips_labelled_and_pending_slices(registry_url):
    registry = Registry.from_url(registry_url)
    slices = registry.register_slices(_volume(registry), "z", range(10))
    model = registry.register_model("unet", "unet", "torch", None)
    registry.record_scores(model, {slices[i]: float(i) for i in range(10)}, "entropy")
    registry.record_scores(model, {slices[0]: 100.0})  # re-scoring replaces
    registry.add_annotations(
        [
            NewAnnotation(slices[9], Tier.ANNOTATOR, "ls:1"),  # labelled by a person: skipped
            NewAnnotation(slices[8], Tier.AUTO, "auto"),  # auto labels do not count
        ]
    )
    with registry.session() as s:
        from tomoloop.db.models import ALRound

        round_ = ALRound(dataset="nmc", strategy="entropy", budget=2, model_version_id=model)
        s.add(round_)
        s.flush()
        s.add_all(
            [
                RoundItem(round_id=round_.id, slice_id=slices[7], score=7, rank=1),
                RoundItem(
                    round_id=round_.id, slice_id=slices[6], score=6, rank=2, state="annotated"
                ),
            ]
        )
    top = registry.top_unlabelled(model, 3)
    assert top == [(slices[0], 100.0), (slices[8], 8.0), (slices[6], 6.0)]


def test_atomic_block_commits_all_or_nothing(registry_url):
    registry = Registry.from_url(registry_url)
    with pytest.raises(RuntimeError, match="ingest failed"), registry.atomic():
        volume = _volume(registry)
        registry.register_slices(volume, "z", range(3))
        raise RuntimeError("ingest failed half-way")
    assert registry.volumes() == []
    with registry.atomic():
        volume = _volume(registry)
        slices = registry.register_slices(volume, "z", range(3))
        registry.add_annotations([NewAnnotation(s, Tier.AUTO, "auto") for s in slices.values()])
    assert registry.label_counts(volume)["auto"] == 3
    with pytest.raises(RuntimeError, match="refresh failed"), registry.atomic():
        registry.add_annotations([NewAnnotation(s, Tier.EXPERT, "gold") for s in slices.values()])
        raise RuntimeError("refresh failed")  # labels added first in the block: not kept
    assert registry.label_counts(volume) == {"auto": 3, "model": 0, "annotator": 0, "expert": 0}


def test_migrations_match_the_models(registry_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tomoloop.db.models import Base

    engine = make_engine(registry_url)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()


def test_round_items_follow_their_tasks_and_a_skip_never_undoes_an_annotation(registry_url):
    registry = Registry.from_url(registry_url)
    slices = registry.register_slices(_volume(registry), "z", [1, 2])
    round_id = registry.open_round("nmc", "entropy", None, [(slices[2], 0.9), (slices[1], 0.4)])
    assert [(i.slice_id, i.rank, i.state) for i in registry.round_items(round_id)] == [
        (slices[2], 1, "pending"),
        (slices[1], 2, "pending"),
    ]
    registry.set_round_tasks(round_id, {slices[2]: 501, slices[1]: 502})
    registry.resolve_task(501, "annotated", 12.0)
    registry.resolve_task(501, "skipped")  # a second person skips the same task
    registry.resolve_task(502, "skipped")
    states = {i.ls_task_id: (i.state, i.annotation_seconds) for i in registry.round_items(round_id)}
    assert states == {501: ("annotated", 12.0), 502: ("skipped", None)}
    assert registry.rounds()[0][1] == {"annotated": 1, "skipped": 1}


def test_model_rows_keep_numbers_measured_on_other_dataset_versions_apart(registry_url):
    from tomoloop.db.views import model_row

    registry = Registry.from_url(registry_url)
    own = registry.freeze_dataset("a", {"train": []}).id
    other = registry.freeze_dataset("b", {"train": []}).id
    model = registry.register_model(
        "unet", "unet", "torch", own, metrics=[NewMetric("mIoU", 0.8, dataset_version_id=own)]
    )
    registry.add_metrics(
        model,
        [
            NewMetric("mIoU", 0.6, dataset_version_id=own, step=3),  # a curve point
            NewMetric("mIoU", 0.7, dataset_version_id=other),
        ],
    )
    metrics = model_row(registry, registry.model(model))["metrics"]
    assert metrics == {"test/mIoU": 0.8, f"test/mIoU@{other}": 0.7}


def test_the_pool_refreshed_versions_lead_times_and_closing_rounds(registry_url):
    registry = Registry.from_url(registry_url)
    volume = _volume(registry)
    slices = registry.register_slices(volume, "z", range(6))
    registry.add_annotations([NewAnnotation(slices[i], Tier.AUTO, "auto:x") for i in range(6)])
    ids = {a.slice_id: a.id for a in registry.best_annotations(volume)}
    members = {"train": [ids[slices[i]] for i in range(4)], "val": [], "test": [ids[slices[5]]]}
    v1 = registry.freeze_dataset("nmc", members)
    assert [p.state for p in registry.pool(v1.id)] == ["free"] * 4
    assert [p.index for p in registry.pool(v1.id, "test")] == [5]

    round_id = registry.open_round("nmc", "bald", None, [(slices[1], 0.9), (slices[2], 0.5)])
    registry.set_round_tasks(round_id, {slices[1]: 101, slices[2]: 102})
    registry.add_annotations([NewAnnotation(slices[1], Tier.ANNOTATOR, "ls:1@t", lead_time_s=30)])
    registry.resolve_task(101, "annotated", 30.0)
    assert [p.state for p in registry.pool(v1.id)] == ["free", "labelled", "pending", "free"]
    assert registry.close_round(round_id) == {"pending": 1, "annotated": 1, "skipped": 0}
    assert registry.al_round(round_id).status == "open"
    registry.resolve_task(102, "skipped")
    assert registry.close_round(round_id)["pending"] == 0
    assert registry.al_round(round_id).status == "closed"
    assert registry.lead_times("nmc") == {slices[1]: 30.0}
    assert registry.lead_times("other") == {}

    v2 = registry.refresh_dataset("nmc")
    assert (v2.version, v2.parent_id) == (2, v1.id)
    assert registry.dataset_counts(v2.id) == {
        "train": {"auto": 3, "annotator": 1},
        "test": {"auto": 1},
    }
    assert registry.refresh_dataset("nmc").id == v2.id  # nothing new: the same version
    slice_6 = registry.register_slices(volume, "z", [6])[6]  # not in the dataset: stays out
    registry.add_annotations([NewAnnotation(slice_6, Tier.EXPERT, "gold:x")])
    assert registry.refresh_dataset("nmc").id == v2.id
    assert registry.new_labels("nmc") == 1  # slice 1's label; no model trained yet
    registry.add_annotations([NewAnnotation(slices[1], Tier.ANNOTATOR, "ls:1@t2")])
    assert registry.new_labels("nmc") == 1  # a corrected label supersedes, never adds
    model = registry.register_model("nmc", "unet", "torch", registry.refresh_dataset("nmc").id)
    assert model and registry.new_labels("nmc") == 0  # the newest model trained on it


def test_an_event_is_recorded_once_and_the_second_record_says_so(registry_url):
    from tomoloop.db.entities import NewEvent

    registry = Registry.from_url(registry_url)

    def event() -> NewEvent:
        return NewEvent(
            key="17@2026-11-30T03:00:00Z", via="webhook", action="ANNOTATION",
            ls_project_id=1, ls_task_id=4, ls_annotation_id=17, status="stored",
        )  # fmt: skip

    assert registry.record_ls_event(event()) is True
    assert registry.record_ls_event(event()) is False
    assert [e.key for e in registry.ls_events()] == ["17@2026-11-30T03:00:00Z"]


def _late_proxy(port: int, target: tuple[str, int], delay: float) -> threading.Thread:
    """A TCP proxy to ``target`` that starts listening on ``port`` only after ``delay`` s
    (a database server coming back while a flow waits for it)."""
    import socket

    def pump(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def serve() -> None:
        time.sleep(delay)
        with socket.create_server(("127.0.0.1", port)) as server:
            server.settimeout(30)
            while True:
                try:
                    client, _ = server.accept()
                except TimeoutError:
                    return
                upstream = socket.create_connection(target)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=pump, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("registry_url", ["postgresql"], indirect=True)
def test_a_database_back_within_the_retries_is_reached(registry_url, caplog):
    import socket

    from sqlalchemy.engine import make_url

    url = make_url(registry_url)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _late_proxy(port, (url.host, url.port), delay=1.2)
    late = url.set(port=port).render_as_string(hide_password=False)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tomoloop.db"):
        assert Registry.from_url(late).volumes() == []
    assert 1.2 <= time.monotonic() - started < 10
    retries = [r for r in caplog.records if "registry database unreachable" in r.message]
    assert 1 <= len(retries) <= 3 and "attempt 1 of 5" in retries[0].message


def test_an_unreachable_database_fails_after_its_retries(caplog):
    from sqlalchemy.exc import OperationalError

    engine = make_engine("postgresql+psycopg://u:secret@127.0.0.1:1/x", connect_attempts=3)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tomoloop.db"), pytest.raises(OperationalError):
        Registry(engine).volumes()
    assert time.monotonic() - started >= 1.5  # waited 0.5 + 1 s
    assert len(caplog.records) == 2 and "secret" not in caplog.text


# ---------------------------------------------------------------- schema on first use


def test_the_embedded_registry_is_created_at_head_on_first_use(tmp_path):
    from tomoloop.db.engine import revisions

    url = f"sqlite:///{tmp_path / 'new' / 'registry.sqlite'}"
    registry = Registry.from_url(url)
    assert current_revision(registry.engine) == revisions()[-1]
    assert _volume(registry) == registry.volumes()[0].id
    downgrade(registry.engine, revisions()[-2])
    registry.engine.dispose()
    again = Registry.from_url(url)  # an embedded registry behind the head is migrated
    assert current_revision(again.engine) == revisions()[-1]
    again.engine.dispose()


def test_a_server_registry_behind_the_head_names_db_upgrade(registry_url):
    from tomoloop.db.engine import revisions
    from tomoloop.errors import RegistryDatabaseError

    if registry_url.startswith("sqlite"):
        pytest.skip("the embedded registry migrates itself")
    engine = make_engine(registry_url)
    downgrade(engine, revisions()[-2])
    with pytest.raises(RegistryDatabaseError, match=r"revision .*needs .*`tomoloop db upgrade`"):
        Registry.from_url(registry_url)
    assert current_revision(engine) == revisions()[-2]  # not migrated behind anyone's back
    downgrade(engine, "base")
    with pytest.raises(RegistryDatabaseError, match=r"\(empty\).*`tomoloop db upgrade`"):
        Registry.from_url(registry_url)
    engine.dispose()


def test_names_are_checked_before_any_write_with_one_message_on_both_backends(registry_url):
    from tomoloop.names import NameRuleError

    registry = Registry.from_url(registry_url)
    slices = registry.register_slices(_volume(registry), "z", [0])
    registry.add_annotations([NewAnnotation(slices[0], Tier.AUTO, "auto:x")])
    ids = [a.id for a in registry.best_annotations()]
    long = "n" * 300
    for write in (
        lambda: registry.freeze_dataset(long, {"train": ids}),
        lambda: _volume(registry, name=long, sha="b" * 64),
        lambda: registry.register_model(long, "unet", "torch", None),
        lambda: registry.freeze_dataset("nmc@2", {"train": ids}),
    ):
        with pytest.raises(NameRuleError, match=r"(300 characters long|holds '@'): a name"):
            write()
    assert registry.datasets() == [] and registry.models() == []
    assert [v.name for v in registry.volumes()] == ["nmc-1"]
    registry.engine.dispose()


def test_ids_beyond_the_integer_range_are_unknown_ids_on_both_backends(registry_url):
    registry = Registry.from_url(registry_url)
    huge = 10**23
    for lookup, what in (
        (registry.model, "model version"),
        (registry.volume, "volume"),
        (registry.dataset_version, "dataset version"),
        (registry.al_round, "active-learning round"),
    ):
        with pytest.raises(RegistryError, match=f"no {what} with id {huge}"):
            lookup(huge)
    with pytest.raises(RegistryError, match="no dataset 'nmc@"):
        registry.dataset("nmc", huge)
    registry.engine.dispose()


# ---------------------------------------------------------------- killed runs


def test_runs_whose_process_is_gone_are_marked_failed_with_the_reason(registry_url):
    import os
    import subprocess
    import sys

    from tomoloop.processes import ProcessId, gone_reason, this_process

    registry = Registry.from_url(registry_url)
    model = registry.register_model("nmc", "unet", "torch", None)
    me = this_process()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a process that ran and is gone (its pid is free)
    dead = ProcessId(me.host, child.pid, me.started)
    reused = ProcessId(me.host, os.getpid(), me.started - 3600)  # our pid, another start
    elsewhere = ProcessId("another-host", 1, 0.0)
    runs = {
        "alive": registry.start_training(model, "cpu", me),
        "dead": registry.start_training(model, "cpu", dead),
        "reused": registry.start_training(model, "cpu", reused),
        "silent elsewhere": registry.start_training(model, "cpu", elsewhere),
    }
    registry.update_training(runs["silent elsewhere"], "running")
    with registry.session() as s:  # its last heartbeat: 20 minutes ago
        s.execute(
            update(TrainingRun)
            .where(TrainingRun.id == runs["silent elsewhere"])
            .values(heartbeat_at=utcnow() - timedelta(minutes=20))
        )
    marked = registry.fail_gone_runs(gone_reason)
    assert set(marked) == {runs["dead"], runs["reused"], runs["silent elsewhere"]}
    by_id = {r.id: r for r in registry.runs()}
    assert by_id[runs["alive"]].status == "running"
    assert "is gone" in by_id[runs["dead"]].failure
    assert "pid was reused" in by_id[runs["reused"]].failure
    assert "no heartbeat on another-host" in by_id[runs["silent elsewhere"]].failure
    assert all(by_id[runs[k]].ended_at is not None for k in ("dead", "reused"))
    assert registry.fail_gone_runs(gone_reason) == {}  # once
    assert registry.beat(runs["alive"]) and not registry.beat(runs["dead"])
    registry.engine.dispose()
