"""Instance labels in the registry on both backends: particles drawn in a dataset's
instance project → instance annotations, kept apart from the semantic labels, taken into
dataset versions beside them.
"""

import itertools

import numpy as np
import pytest

from tomoloop.adapters.labelstudio_registry import Intake, handle_annotation, review_key, task_key
from tomoloop.db.models import Kind, Tier
from tomoloop.db.registry import NewAnnotation, Registry
from tomoloop.labels.masks import InstanceMasks, decode_instances, encode_class_mask
from tomoloop.labels.studio_json import PulledAnnotation, instance_results

pytestmark = pytest.mark.integration
NAMES = ("pore", "nmc", "cbd")
AUTO = np.zeros((8, 8), np.uint8)
AUTO[2:6, 1:7] = 1  # one component: two particles touching
_clock = itertools.count()


def _particles(split_at: int) -> InstanceMasks:
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 2:6, 1:split_at], masks[1, 2:6, split_at:7] = True, True
    return InstanceMasks(masks, np.array([1, 1]), (1,))


def _pulled(task: int, key: str, annotation: int, particles=None, result=None, phases=("nmc",)):
    """An annotation of an instance task asking for ``phases`` as Label Studio serialises
    it; each call is a newer update."""
    if result is None and particles is not None:
        result = instance_results(particles, NAMES)
    return PulledAnnotation(
        task_id=task,
        task_key=key,
        annotation_id=annotation,
        result=result or [],
        was_cancelled=result is None,
        lead_time_s=40.0,
        author="2",
        updated_at=f"2026-11-30T08:{next(_clock):02d}:00Z",
        particle_phases=phases,
    )


@pytest.fixture
def world(registry_url):
    """(registry, volume id, slice id, its instance task key, instance intake): two slices
    with auto labels in dataset ``ds-i`` (train, test); the train slice in an open round."""
    registry = Registry.from_url(registry_url)
    volume = registry.register_volume(
        "nmc-i", "/data/nmc-i.tif", "d" * 64, (4, 8, 8), "uint8", "pore=0,nmc=1,cbd=2"
    )
    slices = registry.register_slices(volume, "z", [1, 2])
    registry.add_annotations(
        [
            NewAnnotation(s, Tier.AUTO, "auto:d", mask_rle=encode_class_mask(AUTO))
            for s in slices.values()
        ]
    )
    ids = [a.id for a in registry.best_annotations(volume)]
    registry.freeze_dataset("ds-i", {"train": ids[:1], "test": ids[1:]})
    round_id = registry.open_round("ds-i", "disagreement", None, [(slices[1], 0.5)])
    registry.set_round_tasks(round_id, {slices[1]: 201})
    intake = Intake("ds-i", NAMES, 9, kind=Kind.INSTANCE)
    yield registry, volume, slices[1], task_key(slices[1], round_id), intake
    registry.engine.dispose()


def test_drawn_particles_are_stored_exactly_beside_the_semantic_label(world):
    registry, volume, _, key, intake = world
    first = _pulled(301, key, 11, _particles(4))
    assert handle_annotation(registry, intake, first, "poll") == "stored"
    assert handle_annotation(registry, intake, first, "webhook") == "seen"
    (event,) = registry.ls_events("stored")
    drawn = registry.annotation(event.annotation_id)
    assert (drawn.kind, Tier(drawn.tier), drawn.ls_annotation_id) == (
        "instance",
        Tier.ANNOTATOR,
        11,
    )
    back = decode_instances(drawn.mask_rle)
    np.testing.assert_array_equal(back.masks, _particles(4).masks)
    np.testing.assert_array_equal(back.classes, [1, 1])
    assert back.covers == (1,)

    # the semantic side does not change: best label, round item, active-learning pool
    assert [Tier(a.tier) for a in registry.best_annotations(volume)] == [Tier.AUTO] * 2
    assert registry.label_counts(volume)["annotator"] == 0
    assert [i.state for i in registry.round_items(registry.open_rounds("ds-i")[0])] == ["pending"]
    assert [p.state for p in registry.pool(registry.dataset("ds-i").id)] == ["pending"]

    v2 = registry.refresh_dataset("ds-i")
    assert v2.version == 2
    assert registry.dataset_counts(v2.id) == {
        "train": {"auto": 1, "instances": 1},
        "test": {"auto": 1},
    }
    members = {m.split: m for m in registry.dataset_slices(v2.id)}
    assert (
        members["train"].instances_rle == drawn.mask_rle and members["test"].instances_rle is None
    )
    assert Tier(members["train"].tier) == Tier.AUTO  # the semantic member is still the auto label

    # an update of the drawing in Label Studio is a newer label; the newest one is taken
    assert (
        handle_annotation(registry, intake, _pulled(301, key, 11, _particles(5)), "poll")
        == "stored"
    )
    v3 = registry.refresh_dataset("ds-i")
    newest = {m.split: m for m in registry.dataset_slices(v3.id)}["train"].instances_rle
    np.testing.assert_array_equal(decode_instances(newest).masks, _particles(5).masks)
    assert registry.refresh_dataset("ds-i").id == v3.id

    model = registry.register_model("ds-i", "maskrcnn", "detectron2", v3.id)
    assert registry.lineage(model).annotations_by_tier == {"auto": 2, "instances": 1}


def test_skips_reviews_and_unknown_labels_in_an_instance_project(world):
    registry, _, slice_id, key, intake = world
    assert handle_annotation(registry, intake, _pulled(301, key, 12), "poll") == "skipped"
    assert [i.state for i in registry.round_items(registry.open_rounds("ds-i")[0])] == ["pending"]

    drawn = _pulled(302, review_key(slice_id, 1), 13, _particles(4))
    assert handle_annotation(registry, intake, drawn, "poll") == "rejected"
    bad = instance_results(_particles(4), NAMES)
    bad[1]["value"]["brushlabels"] = ["crack"]
    assert (
        handle_annotation(registry, intake, _pulled(301, key, 14, result=bad), "poll") == "rejected"
    )
    untold = _pulled(301, key, 15, _particles(4), phases=())  # a task tomoloop did not push
    assert handle_annotation(registry, intake, untold, "poll") == "rejected"
    reasons = [e.reason for e in registry.ls_events("rejected")]
    assert "instance labels are not reviewed" in reasons[0]
    assert "['crack'] is not one of the phases" in reasons[1]
    assert "push instance tasks with `tomoloop push --instance-model`" in reasons[2]
    assert registry.refresh_dataset("ds-i").version == 1  # nothing was stored

    # a task asking for cbd particles, answered with nmc ones: kept, covering only cbd
    binder = _pulled(301, key, 16, _particles(4), phases=("cbd",))
    assert handle_annotation(registry, intake, binder, "poll") == "stored"
    (event,) = registry.ls_events("stored")
    stored = decode_instances(registry.annotation(event.annotation_id).mask_rle)
    assert (stored.covers, stored.classes.tolist()) == ((2,), [1, 1])


def test_a_webhook_from_the_instance_project_stores_an_instance_label(world, registry_url):
    from fastapi.testclient import TestClient

    from tomoloop.adapters.http import create_app
    from tomoloop.adapters.labelstudio_registry import instances_title
    from tomoloop.config import Settings

    registry, volume, _, key, _ = world
    app = create_app(Settings(database_url=registry_url, webhook_secret="k"))
    body = {
        "action": "ANNOTATION_CREATED",
        "annotation": {
            "id": 21,
            "result": instance_results(_particles(4), NAMES),
            "updated_at": "2026-11-30T09:00:00Z",
        },
        "task": {"id": 301, "data": {"key": key, "particle_phases": ["nmc"]}},
        "project": {"id": 9, "title": instances_title("ds-i")},
    }
    with TestClient(app) as client:
        answer = client.post("/webhooks/labelstudio", json=body, headers={"X-Tomoloop-Secret": "k"})
    assert answer.json() == {"status": "stored"}
    (event,) = registry.ls_events("stored")
    label = registry.annotation(event.annotation_id)
    assert label.kind == Kind.INSTANCE
    np.testing.assert_array_equal(decode_instances(label.mask_rle).masks, _particles(4).masks)
    assert [Tier(a.tier) for a in registry.best_annotations(volume)] == [Tier.AUTO] * 2
