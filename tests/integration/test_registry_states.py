"""Every state column refuses a state its enum does not name, on SQLite and PostgreSQL,
and accepts every one it does; migration 0007 (the last CHECK) round-trips over stored rows."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from tomoloop.active.review import AGREEMENT_KINDS
from tomoloop.db.engine import current_revision, downgrade, upgrade
from tomoloop.db.entities import NewAgreement
from tomoloop.db.registry import NewAnnotation, Registry
from tomoloop.db.states import (
    EventStatus,
    EventVia,
    ItemState,
    Kind,
    ReviewState,
    RoundStatus,
    RunStatus,
    Stage,
)
from tomoloop.errors import TomoloopError
from tomoloop.labels import SPLIT_NAMES, Tier

pytestmark = pytest.mark.integration

# (table, column, the values its CHECK allows)
STATE_COLUMNS = [
    ("training_runs", "status", [s.value for s in RunStatus]),
    ("al_rounds", "status", [s.value for s in RoundStatus]),
    ("round_items", "state", [s.value for s in ItemState]),
    ("reviews", "state", [s.value for s in ReviewState]),
    ("ls_events", "status", [s.value for s in EventStatus]),
    ("ls_events", "via", [s.value for s in EventVia]),
    ("model_versions", "stage", [s.value for s in Stage]),
    ("annotations", "kind", [s.value for s in Kind]),
    ("agreements", "kind", list(AGREEMENT_KINDS)),
    ("dataset_members", "split", list(SPLIT_NAMES)),
]


def _event(registry: Registry, key: str, via: str = "poll") -> None:
    with registry.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO ls_events (key, via, action, ls_project_id, ls_task_id, "
                "ls_annotation_id, status, reason, received_at) VALUES "
                "(:key, :via, 'ANNOTATION', 1, 2, 3, 'stored', '', CURRENT_TIMESTAMP)"
            ),
            {"key": key, "via": via},
        )


def _one_row_each(registry: Registry) -> None:
    """One row in every table with a state column."""
    volume = registry.register_volume(
        "nmc-1", "/data/nmc-1.tif", "a" * 64, (4, 8, 8), "uint8", "pore=0,nmc=1"
    )
    slice_id = registry.register_slices(volume, "z", [0])[0]
    registry.add_annotations([NewAnnotation(slice_id, tier, f"src:{tier.label}") for tier in Tier])
    annotator = registry.annotation_id(slice_id, Tier.ANNOTATOR, "src:annotator")
    expert = registry.annotation_id(slice_id, Tier.EXPERT, "src:expert")
    data = registry.freeze_dataset("nmc", {"train": [annotator]})
    model = registry.register_model("nmc", "unet", "torch", data.id)
    registry.start_training(model, "cpu")
    registry.open_round("nmc", "entropy", model, [(slice_id, 0.5)])
    registry.add_review(annotator, "nmc", ["qa"], None)
    registry.add_agreements(
        [
            NewAgreement(
                slice_id=slice_id, dataset="nmc", annotation_a_id=annotator,
                annotation_b_id=expert, kind="review", class_name="nmc", dice=1.0,
            )
        ]
    )  # fmt: skip
    _event(registry, "3@t")


@pytest.fixture
def stocked(registry_url):
    registry = Registry.from_url(registry_url)
    _one_row_each(registry)
    yield registry
    registry.engine.dispose()


@pytest.mark.parametrize(("table", "column", "allowed"), STATE_COLUMNS)
def test_a_state_column_refuses_an_unknown_state_and_takes_every_known_one(
    stocked, table, column, allowed
):
    engine = stocked.engine
    refused = pytest.raises(IntegrityError, match=f"ck_{table}_{column}|CHECK constraint")
    with refused, engine.begin() as connection:
        connection.execute(text(f"UPDATE {table} SET {column} = 'bogus'"))
    for value in allowed:
        with engine.begin() as connection:
            connection.execute(text(f"UPDATE {table} SET {column} = :v"), {"v": value})


def test_migration_0007_round_trips_over_stored_rows_and_refuses_an_unknown_via(stocked):
    engine = stocked.engine
    before = {t: _count(engine, t) for t in ("annotations", "ls_events", "reviews")}
    downgrade(engine, "0006")
    _event(stocked, "4@t", via="carrier-pigeon")  # no CHECK at 0006
    with pytest.raises(TomoloopError, match=r"came by \['carrier-pigeon'\]"):
        upgrade(engine)
    assert current_revision(engine) == "0006"
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM ls_events WHERE via = 'carrier-pigeon'"))
    upgrade(engine, "0007")
    assert current_revision(engine) == "0007"
    assert {t: _count(engine, t) for t in before} == before
    checks = inspect(engine).get_check_constraints("ls_events")
    assert "ck_ls_events_via" in {c["name"] for c in checks}
    with pytest.raises(IntegrityError):
        _event(stocked, "5@t", via="carrier-pigeon")
    assert [e.key for e in stocked.ls_events()] == ["3@t"]  # the registry reads it as before


def _count(engine, table: str) -> int:
    with engine.connect() as connection:
        return connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
