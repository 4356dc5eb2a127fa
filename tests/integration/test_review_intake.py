"""Review routing in the registry on both backends: annotations as Label Studio delivers
them (polls and webhooks alike) → reviews, agreements and tier-expert labels.
"""

import itertools
from dataclasses import replace

import numpy as np
import pytest

from tomoloop.active.review import ReviewPolicy
from tomoloop.adapters.labelstudio_registry import Intake, handle_annotation, review_key, task_key
from tomoloop.db.models import Tier
from tomoloop.db.registry import Registry
from tomoloop.labels.masks import decode_class_mask, encode_class_mask
from tomoloop.labels.studio_json import PulledAnnotation, brush_results

pytestmark = pytest.mark.integration
NAMES = ("pore", "nmc", "cbd")
SHOWN = np.random.default_rng(3).integers(0, 3, (8, 8)).astype(np.uint8)
_clock = itertools.count()


def _pulled(task: int, key: str, annotation: int, mask=None) -> PulledAnnotation:
    """An annotation as Label Studio serialises it; each call is a newer update."""
    return PulledAnnotation(
        task_id=task,
        task_key=key,
        annotation_id=annotation,
        result=[] if mask is None else brush_results(mask, NAMES),
        was_cancelled=mask is None,
        lead_time_s=9.0,
        author="1",
        updated_at=f"2026-11-30T07:{next(_clock):02d}:00Z",
    )


@pytest.fixture
def world(registry_url):
    """(registry, slice id, labelling task key, intake): one slice of a round whose task
    101 showed the prediction SHOWN; no QA sampling."""
    registry = Registry.from_url(registry_url)
    volume = registry.register_volume(
        "nmc-r", "/data/nmc-r.tif", "c" * 64, (4, 8, 8), "uint8", "pore=0,nmc=1,cbd=2"
    )
    slice_id = registry.register_slices(volume, "z", [2])[2]
    round_id = registry.open_round("ds", "entropy", None, [(slice_id, 0.5)])
    registry.set_round_tasks(round_id, {slice_id: 101}, {slice_id: encode_class_mask(SHOWN)})
    yield (
        registry,
        slice_id,
        task_key(slice_id, round_id),
        Intake("ds", NAMES, 7, ReviewPolicy(qa_rate=0)),
    )
    registry.engine.dispose()


def test_an_update_supersedes_the_open_review_and_is_routed_afresh(world):
    registry, _, key, intake = world
    rewritten, other = (SHOWN + 1) % 3, (SHOWN + 2) % 3
    first = _pulled(101, key, 1, rewritten)
    assert handle_annotation(registry, intake, first, "webhook") == "stored"
    assert handle_annotation(registry, intake, first, "poll") == "seen"
    (review,) = registry.reviews("ds")
    assert (review.reasons, review.model_iou, review.state) == ("model", 0.0, "queued")

    assert handle_annotation(registry, intake, _pulled(101, key, 1, SHOWN), "poll") == "stored"
    assert [r.state for r in registry.reviews("ds")] == ["superseded"]  # now agrees: no review
    assert handle_annotation(registry, intake, _pulled(101, key, 1, rewritten), "poll") == "stored"
    assert [r.state for r in registry.reviews("ds")] == ["superseded", "queued"]

    assert handle_annotation(registry, intake, _pulled(101, key, 2, other), "poll") == "stored"
    reviews = registry.reviews("ds")
    assert [r.reasons for r in reviews] == ["model", "model", "model,annotators"]
    summary = registry.review_summary("ds")
    assert summary["states"]["queued"] == 2 and summary["reasons"] == {
        "model": 2,
        "annotators": 1,
    }
    # one current pair of people (annotation 1's last version vs annotation 2), no pixel alike
    assert summary["agreement"]["annotators"] == {
        n: {"dice": 0.0, "pairs": 1} for n in NAMES if (NAMES.index(n) == SHOWN).any()
    }


def test_a_review_is_claimed_once_and_answered_forward_only(world):
    registry, slice_id, key, intake = world
    handle_annotation(registry, intake, _pulled(101, key, 1, (SHOWN + 1) % 3), "poll")
    (claimed,) = registry.claim_reviews("ds")
    assert registry.claim_reviews("ds") == []  # a second sync at once gets nothing
    registry.release_reviews([claimed.id])  # its push failed
    (again,) = registry.claim_reviews("ds")
    registry.set_review_tasks({again.id: 201})
    assert registry.review(again.id).state == "pending"

    review = review_key(slice_id, again.id)
    truth = SHOWN.copy()
    assert handle_annotation(registry, intake, _pulled(201, review, 9, truth), "poll") == "stored"
    settled = registry.review(again.id)
    assert settled.state == "corrected"
    best = {a.slice_id: a for a in registry.best_annotations()}[slice_id]
    assert (best.tier, best.id) == (Tier.EXPERT, settled.expert_annotation_id)
    np.testing.assert_array_equal(decode_class_mask(best.mask_rle), truth)

    kept = (SHOWN + 1) % 3  # the reviewer changes their mind: approve the annotator's label
    assert handle_annotation(registry, intake, _pulled(201, review, 9, kept), "poll") == "stored"
    newer = registry.review(again.id)
    assert newer.state == "approved" and newer.expert_annotation_id > settled.expert_annotation_id
    registry.resolve_review(again.id, "corrected", settled.expert_annotation_id)  # late, older
    assert registry.review(again.id).expert_annotation_id == newer.expert_annotation_id
    assert handle_annotation(registry, intake, _pulled(201, review, 10), "poll") == "skipped"
    assert registry.review(again.id).state == "approved"  # a skip never undoes an answer
    pairs = registry.review_summary("ds")["agreement"]["review"]
    assert {v["dice"] for v in pairs.values()} == {1.0}  # only the reviewer's current label


def test_skipping_a_review_and_naming_a_review_that_is_not_there(world):
    registry, slice_id, key, intake = world
    handle_annotation(registry, intake, _pulled(101, key, 1, (SHOWN + 1) % 3), "poll")
    (review,) = registry.claim_reviews("ds")
    registry.set_review_tasks({review.id: 301})
    skip = _pulled(301, review_key(slice_id, review.id), 11)
    assert handle_annotation(registry, intake, skip, "poll") == "skipped"
    assert registry.review(review.id).state == "skipped"
    ghost = _pulled(302, review_key(slice_id, review.id + 50), 12)
    assert handle_annotation(registry, intake, ghost, "poll") == "rejected"
    (event,) = registry.ls_events("rejected")
    assert f"no review with id {review.id + 50}" in event.reason
    elsewhere = _pulled(303, review_key(slice_id + 1, review.id), 13, SHOWN)
    assert handle_annotation(registry, intake, elsewhere, "poll") == "rejected"
    assert "is of slice" in registry.ls_events("rejected")[-1].reason
    assert registry.label_counts()["expert"] == 0  # nothing stored for either


@pytest.mark.parametrize(
    ("region", "reason"),
    [
        ({"y0": 2, "x0": 2}, "is no region of the slice"),
        ({"y0": 2, "x0": -1, "size": 4}, "is no region of the slice"),
        ({"y0": 8, "x0": 0, "size": 4}, "lies outside"),
    ],
)
def test_a_region_task_naming_no_region_of_its_slice_is_rejected_with_the_reason(
    world, region, reason
):
    registry, _, key, intake = world
    pulled = replace(_pulled(101, key, 1, SHOWN), region=region)
    assert handle_annotation(registry, intake, pulled, "poll") == "rejected"
    (event,) = registry.ls_events("rejected")
    assert reason in event.reason and registry.label_counts(None).get("annotator", 0) == 0


def test_a_region_task_keeps_only_the_region_of_what_was_painted(world):
    registry, slice_id, key, intake = world
    painted = (SHOWN + 1) % 3
    pulled = replace(_pulled(101, key, 1, painted), region={"y0": 6, "x0": 5, "size": 4})
    assert handle_annotation(registry, intake, pulled, "poll") == "stored"
    (stored,) = [a for a in registry.best_annotations() if a.slice_id == slice_id]
    expected = np.full((8, 8), 255, np.uint8)
    expected[6:, 5:] = painted[6:, 5:]
    np.testing.assert_array_equal(decode_class_mask(stored.mask_rle), expected)
    assert stored.labelled_px == 6
