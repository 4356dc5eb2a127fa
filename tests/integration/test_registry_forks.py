"""`Registry.fork`: a registry copied whole into another database, one dataset renamed; the
demo's random control runs its loop there. Both backends as the source, both as the fork."""

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from tomoloop.db.entities import NewAgreement, NewEvent
from tomoloop.db.models import Annotation, Base
from tomoloop.db.registry import NewAnnotation, NewMetric, Registry, RegistryError
from tomoloop.db.states import EventStatus, EventVia, ItemState, ReviewState
from tomoloop.labels.tiers import Tier
from tomoloop.names import NameRuleError

pytestmark = pytest.mark.integration


def _populated(url: str) -> Registry:
    """A registry with a row in every table and two datasets: ``nmc`` has two versions, a
    champion with a training run, metrics and slice scores, a candidate child of it, a
    label made in Label Studio (an event) that was reviewed with an agreement, and a
    closed region round; a stored label's JSON document is set, another's is NULL."""
    registry = Registry.from_url(url)
    volume = registry.register_volume(
        "scan-1", "/data/scan-1.tif", "a" * 64, (4, 8, 8), "uint8", "pore=0,nmc=1"
    )
    slices = list(registry.register_slices(volume, "z", range(4)).values())
    rle = {"size": [8, 8], "counts": "0" * 4, "classes": [0, 1]}
    registry.add_annotations(
        [NewAnnotation(s, Tier.AUTO, "rough", mask_uri=f"{s}.json", labelled_px=64) for s in slices]
        + [NewAnnotation(slices[2], Tier.MODEL, "self", mask_rle=rle, labelled_px=64)]
    )
    ids = [registry.annotation_id(s, Tier.AUTO, "rough") for s in slices]
    first = registry.freeze_dataset("nmc", {"train": ids[:2], "val": ids[2:3], "test": ids[3:]})
    champion = registry.register_model(
        "nmc", "unet", "torch", first.id, checkpoint_uri="m1.pt",
        metrics=[NewMetric("mIoU", 0.7, dataset_version_id=first.id)],
    )  # fmt: skip
    registry.start_training(champion, "cpu")
    registry.promote(champion)
    registry.record_scores(champion, {slices[1]: 0.5, slices[2]: 0.25}, "bald")
    round_id = registry.open_round("nmc", "bald", champion, [(slices[1], 0.5)], 16,
                                   {slices[1]: (0, 0, 4)})  # fmt: skip
    registry.set_round_tasks(round_id, {slices[1]: 101})
    painted = NewAnnotation(
        slices[1], Tier.ANNOTATOR, "ls", mask_uri="a.json", labelled_px=16,
        model_version_id=champion, ls_task_id=101, ls_annotation_id=7,
    )  # fmt: skip
    registry.add_annotations([painted])
    label = registry.annotation_id(slices[1], Tier.ANNOTATOR, "ls")
    registry.record_ls_event(NewEvent("7@now", EventVia.WEBHOOK, "ANNOTATION_CREATED", 1, 101, 7,
                                      EventStatus.STORED, annotation_id=label))  # fmt: skip
    registry.resolve_task(101, ItemState.ANNOTATED)
    registry.close_round(round_id)
    registry.add_review(label, "nmc", ["model"], 0.5)
    registry.add_annotations([NewAnnotation(slices[1], Tier.EXPERT, "review", mask_uri="e.json",
                                            labelled_px=16)])  # fmt: skip
    expert = registry.annotation_id(slices[1], Tier.EXPERT, "review")
    (review,) = registry.reviews("nmc")
    registry.resolve_review(review.id, ReviewState.CORRECTED, expert)
    registry.add_agreements([NewAgreement(slices[1], "nmc", label, expert, "review", "nmc", 0.9)])
    second = registry.freeze_dataset("nmc", {"train": [expert, ids[0]], "val": ids[2:3],
                                             "test": ids[3:]})  # fmt: skip
    registry.register_model("nmc", "unet", "torch", second.id, parent_id=champion)
    registry.freeze_dataset("other", {"train": ids[:1]})
    return registry


def _rows(registry: Registry) -> dict[str, list[dict]]:
    """Every row of every table, by primary key, with dataset names left out and times as
    UTC (SQLite hands them back without their zone)."""
    from tomoloop.db.registry.forks import DATASET_NAME_COLUMNS

    renamed = {(c.table.name, c.key) for c in DATASET_NAME_COLUMNS}
    out = {}
    with registry.engine.connect() as read:
        for table in Base.metadata.sorted_tables:
            rows = read.execute(select(table).order_by(*table.primary_key.columns)).mappings()
            out[table.name] = [
                {k: _utc(v) for k, v in row.items() if (table.name, k) not in renamed}
                for row in rows
            ]
    return out


def _utc(value):
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value


def _check_fork(source: Registry, fork: Registry) -> None:
    """The fork holds every row of the source, value for value, ``nmc`` named
    ``nmc-random`` there, and what happens in the fork afterwards never reaches the
    source."""
    before = _rows(source)
    assert all(before.values())  # a row in every table
    assert _rows(fork) == before
    with fork.engine.connect() as read:  # a SQL NULL stays NULL, not JSON null
        nulls = read.scalar(select(func.count()).where(Annotation.mask_rle.is_(None)))
    with source.engine.connect() as read:
        assert nulls == read.scalar(select(func.count()).where(Annotation.mask_rle.is_(None)))
    assert nulls == 6
    for version in (1, 2):
        old, new = source.dataset("nmc", version), fork.dataset("nmc-random", version)
        assert (new.id, new.content_hash) == (old.id, old.content_hash)
    assert fork.champion("nmc-random").id == source.champion("nmc").id
    assert {m.name for m in fork.models()} == {"nmc-random"}
    ((round_, _),) = fork.rounds()
    assert round_.dataset == "nmc-random"
    assert [r.dataset for r in fork.reviews("nmc-random")] == ["nmc-random"]
    summary = fork.review_summary("nmc-random")
    assert summary == {**source.review_summary("nmc"), "dataset": "nmc-random"}
    assert fork.dataset("other").id == source.dataset("other").id
    with pytest.raises(RegistryError, match="no dataset 'nmc'"):
        fork.dataset("nmc")
    # the fork goes on by itself: new ids follow the copied ones, the source sees nothing
    third = fork.freeze_dataset("nmc-random", {"train": [1]})
    assert third.version == 3 and third.id == max(d.id for d in source.datasets()) + 1
    model = fork.register_model("nmc-random", "unet", "torch", third.id)
    fork.promote(model)
    assert model == max(m.id for m in source.models()) + 1
    assert _rows(source) == before
    with pytest.raises(RegistryError, match="no dataset 'nmc-random'"):
        source.dataset("nmc-random")


def test_a_fork_holds_every_row_under_the_new_name_and_goes_its_own_way(registry_url, tmp_path):
    source = _populated(registry_url)
    fork = source.fork(f"sqlite:///{tmp_path / 'fork' / 'registry.sqlite'}", "nmc", "nmc-random")
    _check_fork(source, fork)


def test_a_fork_into_postgresql_moves_its_id_sequences_past_the_copied_rows(
    tmp_path, postgres_server
):
    from tomoloop.adapters.local_postgres import create_database, drop_database
    from tomoloop.db.engine import make_engine, upgrade

    source = _populated(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = create_database(postgres_server, name)
    upgrade(make_engine(url))  # a server registry is migrated by `tomoloop db upgrade`
    fork = source.fork(url, "nmc", "nmc-random")
    try:
        _check_fork(source, fork)
    finally:
        fork.engine.dispose()
        drop_database(postgres_server, name)


def test_a_fork_is_refused_before_anything_is_created(registry_url, tmp_path):
    source = _populated(registry_url)
    path = tmp_path / "fork.sqlite"
    refusals = [
        ("nope", "nmc-random", RegistryError, "no dataset 'nope' to fork"),
        ("nmc", "other", RegistryError, "dataset 'other' exists already"),
        ("nmc", "nmc@2", NameRuleError, "fork name"),
    ]
    for dataset, name, error, message in refusals:
        with pytest.raises(error, match=message):
            source.fork(f"sqlite:///{path}", dataset, name)
        assert not path.exists()
    taken = f"sqlite:///{tmp_path / 'taken.sqlite'}"
    before = _rows(_populated(taken))
    with pytest.raises(RegistryError, match="holds rows already: fork into a new database"):
        source.fork(taken, "nmc", "nmc-random")
    assert _rows(Registry.from_url(taken)) == before  # untouched


def test_a_dataset_with_work_open_in_label_studio_is_not_forked(tmp_path):
    source = _populated(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    (scan,) = source.volumes()
    slice_id = next(iter(source.register_slices(scan.id, "z", [3]).values()))
    source.open_round("nmc", "random", None, [(slice_id, 0.0)])
    path = tmp_path / "fork.sqlite"
    with pytest.raises(RegistryError, match=r"has open rounds \[2\] and 0 unanswered reviews"):
        source.fork(f"sqlite:///{path}", "nmc", "nmc-random")
    assert not path.exists()


def test_every_column_holding_a_dataset_name_is_renamed_by_a_fork():
    """A new table with a ``dataset`` column must join ``DATASET_NAME_COLUMNS``, or a fork
    would leave its rows under the original's name."""
    from tomoloop.db.registry.forks import DATASET_NAME_COLUMNS

    named = {
        f"{c.table.name}.{c.name}"
        for t in Base.metadata.sorted_tables
        for c in t.columns
        if c.name == "dataset"
    }
    renamed = {f"{c.table.name}.{c.name}" for c in DATASET_NAME_COLUMNS}
    assert named | {"dataset_versions.name", "model_versions.name"} == renamed
