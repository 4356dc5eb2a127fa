"""COCO documents from labelled slices, their checks, detections as COCO results, AP."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pycocotools import mask as mask_utils

from tomoloop.labels.masks import InstanceMasks
from tomoloop.metrics.coco import instance_scores
from tomoloop.particles.instances import (
    CocoDocumentError,
    Detections,
    check_coco,
    coco_from_slices,
    detected_particles,
    detection_results,
    instance_uncertainty,
    mask_iou,
    match,
    particle_category,
    particle_disagreement,
)

label_slices = hnp.arrays(
    np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 2)
)


@settings(max_examples=60, deadline=None)
@given(st.lists(label_slices, min_size=1, max_size=3))
def test_every_instance_phase_pixel_is_covered_exactly_once(slices):
    document = coco_from_slices(
        slices, [f"{i}.png" for i in range(len(slices))], ["a", "b", "c"], [1, 2]
    )
    for i, labels in enumerate(slices):
        painted = np.zeros(labels.shape, np.int64)
        count = np.zeros(labels.shape, np.int64)
        anns = [a for a in document["annotations"] if a["image_id"] == i + 1]
        for ann in anns:
            mask = mask_utils.decode(ann["segmentation"]).astype(bool)
            assert mask.sum() == ann["area"]
            painted[mask] = [1, 2][ann["category_id"] - 1]
            count += mask
        assert (count <= 1).all()
        assert np.array_equal(painted, np.where(np.isin(labels, [1, 2]), labels, 0))
        n_components = sum(
            cv2.connectedComponents((labels == v).view(np.uint8), connectivity=8)[0] - 1
            for v in (1, 2)
        )
        assert len(anns) == n_components
    assert [c["name"] for c in document["categories"]] == ["b", "c"]


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(bool, st.tuples(st.integers(0, 4), st.integers(1, 10), st.integers(1, 10))))
def test_detection_results_decode_to_the_detected_masks(masks):
    n = len(masks)
    detections = Detections(
        masks, np.linspace(0.1, 0.9, n), np.zeros(n, np.int64), np.zeros((n, 4))
    )
    results = detection_results(detections, image_id=7)
    assert len(results) == n
    for mask, result in zip(masks, results, strict=True):
        assert result["image_id"] == 7 and result["category_id"] == 1
        assert np.array_equal(mask_utils.decode(result["segmentation"]).astype(bool), mask)


def _discs() -> np.ndarray:
    labels = np.zeros((48, 48), np.uint8)
    for x, y in ((10, 10), (35, 12), (24, 34)):
        cv2.circle(labels, (x, y), 7, 1, -1)
    return labels


def test_ground_truth_as_detections_scores_ap_one_and_nothing_scores_zero():
    labels = _discs()
    document = coco_from_slices([labels], ["z.png"], ["pore", "particle"], [1])
    perfect = [{**a, "score": 1.0} for a in document["annotations"]]
    scores = instance_scores(document, perfect)
    assert scores["segm_AP"] == pytest.approx(1.0) and scores["bbox_AP50"] == pytest.approx(1.0)
    assert set(instance_scores(document, []).values()) == {0.0}


def test_half_the_particles_found_scores_between():
    document = coco_from_slices([_discs()], ["z.png"], ["pore", "particle"], [1])
    found = [{**a, "score": 1.0} for a in document["annotations"][:2]]
    assert 0.5 < instance_scores(document, found)["segm_AP"] < 0.8


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(annotations=[]), "has no annotations"),
        (lambda d: d["annotations"][0].update(category_id=9), "category_id 9"),
        (lambda d: d["annotations"][0].update(image_id=5), "refers to image 5"),
        (lambda d: d.update(categories=[]), "declares no categories"),
        (lambda d: d["images"][0].pop("file_name"), r"lacks \['file_name'\]"),
        (lambda d: d["images"][0].update(file_name=3), "lacks a string file_name"),
        (lambda d: d.update(images=["z.png"]), "'images' must be a list of JSON objects"),
    ],
)
def test_a_document_that_cannot_train_is_refused_with_the_reason(change, message):
    document = coco_from_slices([_discs()], ["z.png"], ["pore", "particle"], [1])
    change(document)
    with pytest.raises(CocoDocumentError, match=message):
        check_coco(document, "train.json")


def _dets(masks: list[np.ndarray], scores: list[float]) -> Detections:
    n = len(masks)
    return Detections(
        np.array(masks, bool).reshape(n, 8, 8),
        np.array(scores),
        np.zeros(n, np.int64),
        np.zeros((n, 4)),
    )


def _square(y: int, x: int, side: int = 3) -> np.ndarray:
    mask = np.zeros((8, 8), bool)
    mask[y : y + side, x : x + side] = True
    return mask


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(bool, st.tuples(st.integers(1, 4), st.just(5), st.just(5))))
def test_mask_iou_is_symmetric_bounded_and_one_with_itself(masks):
    iou = mask_iou(masks, masks)
    assert np.allclose(iou, iou.T) and (iou >= 0).all() and (iou <= 1 + 1e-6).all()
    nonempty = masks.reshape(len(masks), -1).any(1)
    assert np.allclose(np.diag(iou)[nonempty], 1.0)


def test_agreeing_flips_and_confident_detections_score_zero():
    found = _dets([_square(0, 0), _square(4, 4)], [1.0, 1.0])
    u = instance_uncertainty(found, [found, found])
    assert (u.confidence, u.disagreement, u.score) == (0.0, 0.0, 0.0)
    assert instance_uncertainty(_dets([], []), []).score == 0.0


def test_a_particle_missed_under_a_flip_counts_as_unmatched():
    found = _dets([_square(0, 0), _square(4, 4)], [0.8, 0.6])
    missed = _dets([_square(0, 0)], [0.8])
    ious, unmatched = match(found, missed)
    assert ious.tolist() == [1.0] and unmatched == 1
    u = instance_uncertainty(found, [missed])
    assert u.disagreement == pytest.approx(0.5)  # one of two instances unmatched
    assert u.confidence == pytest.approx(0.3) and u.score == pytest.approx(0.4)


def test_a_shifted_mask_counts_one_minus_its_iou():
    a, b = _dets([_square(0, 0, 4)], [1.0]), _dets([_square(0, 1, 4)], [1.0])
    u = instance_uncertainty(a, [b])
    assert u.disagreement == pytest.approx(1 - 12 / 20)


def test_particle_disagreement_is_one_minus_dice():
    a, b = _square(0, 0, 4), _square(0, 2, 4)  # 16 pixels each, 8 shared
    assert particle_disagreement(a, b) == pytest.approx(1 - 2 * 8 / 32)
    assert particle_disagreement(a, a) == 0.0
    assert particle_disagreement(a, np.zeros_like(a)) == 1.0
    assert particle_disagreement(np.zeros_like(a), np.zeros_like(a)) == 0.0


def test_the_particle_category_is_named_when_a_model_finds_several():
    assert particle_category(["nmc"], None) == 0
    assert particle_category(["nmc", "cbd"], "cbd") == 1
    with pytest.raises(CocoDocumentError, match="name the particle phase with --phase"):
        particle_category(["nmc", "cbd"], None)
    with pytest.raises(CocoDocumentError, match="--phase pore: the model finds nmc"):
        particle_category(["nmc"], "pore")


@settings(max_examples=60, deadline=None)
@given(label_slices)
def test_drawn_components_give_the_document_connected_components_give(labels):
    names, values = ["a", "b", "c"], [1, 2]
    masks, classes = [], []
    for v in values:
        n, components = cv2.connectedComponents((labels == v).view(np.uint8), connectivity=8)
        masks += [components == k for k in range(1, n)]
        classes += [v] * (n - 1)
    drawn = InstanceMasks(
        np.array(masks, bool).reshape(-1, *labels.shape), np.array(classes), tuple(values)
    )
    assert coco_from_slices([labels], ["0.png"], names, values, drawn=[drawn]) == (
        coco_from_slices([labels], ["0.png"], names, values)
    )


def test_touching_particles_a_person_split_stay_two_instances():
    labels = np.zeros((8, 10), np.uint8)
    labels[2:6, 1:9] = 1  # one component: two particles touching at column 5
    left, right, binder = np.zeros((3, 8, 10), bool)
    left[2:6, 1:5], right[2:6, 5:9], binder[0, 0] = True, True, True
    drawn = InstanceMasks(np.stack([left, right, binder]), np.array([1, 1, 2]), (1, 2))
    files = ["0.png", "1.png"]
    document = coco_from_slices(
        [labels, labels], files, ["pore", "nmc", "cbd"], [1], drawn=[drawn, None]
    )
    by_image = [[a for a in document["annotations"] if a["image_id"] == i] for i in (1, 2)]
    assert [a["area"] for a in by_image[0]] == [16, 16]  # cbd is not an instance phase here
    assert [a["bbox"] for a in by_image[0]] == [[1.0, 2.0, 4.0, 4.0], [5.0, 2.0, 4.0, 4.0]]
    assert [a["area"] for a in by_image[1]] == [32]  # no drawing: the connected component
    assert [a["id"] for a in document["annotations"]] == [1, 2, 3]


def test_detections_become_phase_instances_best_first():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 0, 0], masks[1, 3, 3] = True, True
    found = Detections(masks, np.array([0.4, 0.9]), np.array([0, 1]), np.zeros((2, 4)))
    particles = detected_particles(found, ["nmc", "cbd"], ("pore", "nmc", "cbd"))
    np.testing.assert_array_equal(particles.classes, [2, 1])
    np.testing.assert_array_equal(particles.masks, masks[::-1])
    assert particles.covers == (1, 2)
    with pytest.raises(CocoDocumentError, match="finds 'crack', which is not a phase"):
        detected_particles(found, ["nmc", "crack"], ("pore", "nmc", "cbd"))


def test_classes_a_drawing_does_not_cover_keep_their_connected_components():
    labels = np.zeros((6, 8), np.uint8)
    labels[1:4, 1:7] = 1  # nmc: one component, drawn as two particles
    labels[5, 0:3] = 2  # cbd: nobody drew it
    halves = np.zeros((2, 6, 8), bool)
    halves[0, 1:4, 1:4], halves[1, 1:4, 4:7] = True, True
    drawn = InstanceMasks(halves, np.array([1, 1]), covers=(1,))
    document = coco_from_slices([labels], ["0.png"], ["pore", "nmc", "cbd"], [1, 2], drawn=[drawn])
    found = sorted((a["category_id"], a["area"]) for a in document["annotations"])
    assert found == [(1, 9), (1, 9), (2, 3)]
    with pytest.raises(CocoDocumentError, match=r"drawn particles are \(6, 8\), the label"):
        coco_from_slices([labels[:5]], ["0.png"], ["pore", "nmc", "cbd"], [1], drawn=[drawn])


def test_ignore_regions_of_a_coco_file_are_no_instances(tmp_path):
    from tomoloop.services.maskrcnn import has_instances

    ignore = {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": {}}
    particle = {**ignore, "id": 2, "iscrowd": 0}
    only_ignored, with_particle = tmp_path / "a.json", tmp_path / "b.json"
    only_ignored.write_text(json.dumps({"annotations": [ignore]}))
    with_particle.write_text(json.dumps({"annotations": [ignore, particle]}))
    assert not has_instances(only_ignored)
    assert has_instances(with_particle)
    assert not has_instances(None)
