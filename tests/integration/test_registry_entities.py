"""What the registry returns is a frozen copy of a row: a caller cannot change the registry
by assigning to it, and each entity carries exactly its table's columns."""

from __future__ import annotations

import dataclasses

import pytest

from tomoloop.db import entities, models
from tomoloop.db.registry import NewAnnotation, Registry
from tomoloop.db.states import ItemState, ReviewState, RoundStatus, RunStatus, Stage
from tomoloop.labels import Tier

pytestmark = pytest.mark.integration

ENTITIES = [
    (entities.Volume, models.Volume),
    (entities.Slice, models.Slice),
    (entities.Annotation, models.Annotation),
    (entities.DatasetVersion, models.DatasetVersion),
    (entities.ModelVersion, models.ModelVersion),
    (entities.TrainingRun, models.TrainingRun),
    (entities.Metric, models.Metric),
    (entities.ALRound, models.ALRound),
    (entities.RoundItem, models.RoundItem),
    (entities.Review, models.Review),
    (entities.LabelStudioEvent, models.LabelStudioEvent),
]


@pytest.mark.parametrize(("entity", "table"), ENTITIES, ids=lambda c: c.__name__)
def test_an_entity_carries_its_tables_columns(entity, table):
    assert [f.name for f in dataclasses.fields(entity)] == [c.key for c in table.__table__.columns]


def _stocked(registry: Registry) -> dict[str, object]:
    """One returned entity of each kind (and the ids to read them again)."""
    volume = registry.register_volume(
        "nmc-1", "/data/nmc-1.tif", "a" * 64, (4, 8, 8), "uint8", "pore=0,nmc=1"
    )
    slice_id = registry.register_slices(volume, "z", [0])[0]
    registry.add_annotations([NewAnnotation(slice_id, Tier.ANNOTATOR, "ls:1")])
    annotation = registry.annotation_id(slice_id, Tier.ANNOTATOR, "ls:1")
    data = registry.freeze_dataset("nmc", {"train": [annotation]})
    model = registry.register_model("nmc", "unet", "torch", data.id)
    registry.promote(model)
    registry.start_training(model, "cpu")
    round_id = registry.open_round("nmc", "entropy", model, [(slice_id, 0.5)])
    registry.add_review(annotation, "nmc", ["qa"], None)
    slice_, volume_row = registry.slice_volumes([slice_id])[slice_id]
    return {
        "volume": volume_row,
        "slice": slice_,
        "annotation": registry.annotation(annotation),
        "dataset": data,
        "model": registry.champion("nmc"),
        "run": registry.runs()[0],
        "round": registry.al_round(round_id),
        "item": registry.round_item(round_id, slice_id),
        "review": registry.reviews("nmc")[0],
    }


def test_returned_entities_are_frozen_and_assigning_changes_nothing(registry_url):
    registry = Registry.from_url(registry_url)
    returned = _stocked(registry)
    for what, field, value in [
        ("volume", "path", "/elsewhere.tif"),
        ("slice", "index", 3),
        ("annotation", "tier", Tier.EXPERT),
        ("dataset", "version", 9),
        ("model", "stage", Stage.RETIRED),
        ("run", "status", RunStatus.FINISHED),
        ("round", "status", RoundStatus.CLOSED),
        ("item", "state", ItemState.ANNOTATED),
        ("review", "state", ReviewState.APPROVED),
    ]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(returned[what], field, value)
    again = _stocked_again(registry, returned)
    assert again == {k: returned[k] for k in again}  # the registry is as it was
    registry.engine.dispose()


def _stocked_again(registry: Registry, returned: dict) -> dict[str, object]:
    """The same entities read afresh."""
    slice_id = returned["slice"].id
    return {
        "volume": registry.volume(returned["volume"].id),
        "annotation": registry.annotation(returned["annotation"].id),
        "model": registry.model(returned["model"].id),
        "run": registry.training_runs(returned["model"].id)[0],
        "round": registry.al_round(returned["round"].id),
        "item": registry.round_item(returned["round"].id, slice_id),
        "review": registry.review(returned["review"].id),
    }


def test_states_come_back_as_their_enums_and_equal_their_strings(registry_url):
    registry = Registry.from_url(registry_url)
    returned = _stocked(registry)
    assert returned["model"].stage is Stage.CHAMPION and returned["model"].stage == "champion"
    assert returned["run"].status is RunStatus.RUNNING
    assert returned["item"].state is ItemState.PENDING and returned["item"].state == "pending"
    assert returned["review"].state is ReviewState.QUEUED
    assert returned["annotation"].tier is Tier.ANNOTATOR
    registry.engine.dispose()
