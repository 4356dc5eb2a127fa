"""Detectron2 Mask R-CNN on CPU: a tiny net trains, predicts into COCOeval, resumes, and
bad inputs are refused with the reason.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tomoloop.adapters import detectron2 as d2
from tomoloop.metrics.coco import instance_scores
from tomoloop.particles.instances import (
    CocoDocumentError,
    Detections,
    coco_from_slices,
    detection_results,
    instance_uncertainty,
)
from tomoloop.paths import PathConfinementError

TINY = d2.MaskRCNNConfig(
    depth=18,
    norm="FrozenBN",
    iterations=12,
    lr=1e-3,
    batch=2,
    min_size=64,
    max_size=64,
    checkpoint_every=1000,
    score_threshold=0.0,
)


def disc_slices(n: int, seed: int = 0, side: int = 64) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Grey slices (bright discs on dark, noisy) and their particle labels (1)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(n):
        label = np.zeros((side, side), np.uint8)
        for _ in range(3):
            r = int(rng.integers(5, 9))
            x, y = (int(v) for v in rng.integers(r, side - r, 2))
            cv2.circle(label, (x, y), r, 1, -1)
        grey = np.where(label == 1, 180.0, 60.0) + rng.normal(0, 15, label.shape)
        images.append(np.clip(grey, 0, 255).astype(np.uint8))
        labels.append(label)
    return images, labels


def write_coco(folder: Path, images, labels) -> Path:
    names = [f"z{i:05d}.png" for i in range(len(images))]
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name, image in zip(names, images, strict=True):
        cv2.imwrite(str(folder / "images" / name), image)
    coco = folder / "train.json"
    coco.write_text(json.dumps(coco_from_slices(labels, names, ["pore", "particle"], [1])))
    return coco


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("maskrcnn")
    images, labels = disc_slices(6)
    coco = write_coco(folder, images, labels)
    outcome = d2.train(coco, folder / "images", TINY, folder / "run", torch.device("cpu"))
    return outcome


@pytest.mark.slow  # trains a network
def test_the_loss_falls(trained):
    losses = trained.losses
    assert len(losses) == TINY.iterations and trained.resumed_after == 0
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])


@pytest.mark.slow  # trains a network
def test_predictions_load_into_cocoeval(trained):
    net = d2.load(trained.checkpoint, torch.device("cpu"))
    assert net.categories == ["particle"]
    images, labels = disc_slices(2, seed=1)
    found = d2.predict(net, images)
    assert len(found) == 2 and all(d.masks.shape[1:] == (64, 64) for d in found)
    assert any(len(d) for d in found)
    truth = coco_from_slices(labels, ["a.png", "b.png"], ["pore", "particle"], [1])
    results = [r for i, d in enumerate(found) for r in detection_results(d, i + 1)]
    scores = instance_scores(truth, results)
    assert set(scores) == {f"{t}_{k}" for t in ("segm", "bbox") for k in ("AP", "AP50", "AP75")}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    unsure = d2.uncertainty(net, images)  # a real network through the flip TTA
    assert len(unsure) == 2 and all(0.0 <= u.score <= 1.0 for u in unsure)


def _bright_blob(_net, images):
    """A flip-equivariant stand-in for a network: the bright pixels as one instance."""
    return [_detections(image > 128, 0.8) for image in images]


def _fixed_corner(_net, images):
    """A stand-in that ignores its input: always the top-left 16 × 16 pixels."""
    found = []
    for image in images:
        mask = np.zeros(image.shape, bool)
        mask[:16, :16] = True
        found.append(_detections(mask, 0.6))
    return found


def _detections(mask: np.ndarray, score: float) -> Detections:
    return Detections(mask[None], np.array([score]), np.zeros(1, np.int64), np.array([_box(mask)]))


def test_flip_equivariant_predictions_have_no_disagreement(monkeypatch):
    monkeypatch.setattr(d2, "predict", _bright_blob)
    images, _ = disc_slices(3, seed=2, side=48)
    for u in d2.uncertainty(None, images):
        assert u.disagreement == 0.0
        assert u.confidence == pytest.approx(0.2) and u.score == pytest.approx(0.1)


def test_a_prediction_that_does_not_follow_the_flips_disagrees_fully(monkeypatch):
    monkeypatch.setattr(d2, "predict", _fixed_corner)
    images, _ = disc_slices(2, seed=3, side=64)
    for u in d2.uncertainty(None, images):  # the flipped-back corner never meets the plain one
        assert u.disagreement == 1.0 and u.score == pytest.approx((0.4 + 1.0) / 2)


_CORNER = np.zeros((8, 8), bool)
_CORNER[0, 0] = True
_MASKS = hnp.arrays(bool, st.tuples(st.integers(0, 3), st.just(8), st.just(8))).map(
    lambda masks: masks | _CORNER  # no empty instance: a detection always has pixels
)


def _found(masks: np.ndarray) -> Detections:
    n = len(masks)
    return Detections(masks, np.full(n, 0.5), np.zeros(n, np.int64), np.zeros((n, 4)))


@settings(max_examples=60, deadline=None)
@given(a=_MASKS, b=_MASKS)
def test_disagreement_is_symmetric_bounded_and_zero_against_itself(a, b):
    ab = instance_uncertainty(_found(a), [_found(b)]).disagreement
    assert ab == pytest.approx(instance_uncertainty(_found(b), [_found(a)]).disagreement)
    assert 0.0 <= ab <= 1.0
    assert instance_uncertainty(_found(a), [_found(a), _found(a)]).disagreement == 0.0


def _box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_detections_on_a_flipped_slice_map_back_exactly():
    masks = np.zeros((2, 48, 64), bool)
    masks[0, 5:9, 10:20] = True  # off-centre on both axes, non-square slice
    masks[1, 30:47, 2:5] = True
    plain = Detections(masks, np.ones(2), np.zeros(2, np.int64), np.array([_box(m) for m in masks]))
    for axis, side in ((0, 48), (1, 64)):
        flipped_masks = np.flip(masks, axis + 1)
        seen = Detections(  # what the network reports on the flipped slice
            flipped_masks, plain.scores, plain.classes, np.array([_box(m) for m in flipped_masks])
        )
        back = d2.unflip(seen, axis, side)
        assert np.array_equal(back.masks, masks)
        np.testing.assert_array_equal(back.boxes, plain.boxes)


@pytest.mark.slow  # trains a network
def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    images, labels = disc_slices(4)
    coco = write_coco(tmp_path, images, labels)
    config = d2.MaskRCNNConfig(**{**TINY.__dict__, "iterations": 4, "checkpoint_every": 2})
    first = d2.train(coco, tmp_path / "images", config, tmp_path / "run", torch.device("cpu"))
    again = d2.train(coco, tmp_path / "images", config, tmp_path / "run", torch.device("cpu"))
    assert first.resumed_after == 0 and again.resumed_after == 2
    assert again.losses[:2] == first.losses[:2] and len(again.losses) == 4


def _backbone(checkpoint: bytes) -> dict[str, torch.Tensor]:
    state = torch.load(io.BytesIO(checkpoint), weights_only=True)["model"]
    return {k: v for k, v in state.items() if k.startswith("backbone.bottom_up.")}


@pytest.mark.slow  # trains a network
def test_the_heads_train_first_from_a_checkpoint_tomoloop_trained(tmp_path, trained):
    """Two-stage fine-tuning (heads, then all layers) from a model trained before, e.g. on
    an earlier scan: the ResNet stays as loaded while the heads train, then learns too."""
    start = tmp_path / "earlier.pt"
    start.write_bytes(trained.checkpoint)
    images, labels = disc_slices(4, seed=1)
    coco = write_coco(tmp_path, images, labels)
    base = {**TINY.__dict__, "weights": str(start), "heads_iterations": 2}
    heads = d2.train(
        coco, tmp_path / "images", d2.MaskRCNNConfig(**{**base, "iterations": 2}),
        tmp_path / "heads", torch.device("cpu"),
    )  # fmt: skip
    both = d2.train(
        coco, tmp_path / "images", d2.MaskRCNNConfig(**{**base, "iterations": 3}),
        tmp_path / "both", torch.device("cpu"),
    )  # fmt: skip
    loaded, after_heads, after_all = (
        _backbone(c) for c in (trained.checkpoint, heads.checkpoint, both.checkpoint)
    )
    assert all(torch.equal(loaded[k], after_heads[k]) for k in loaded)
    assert not all(torch.equal(loaded[k], after_all[k]) for k in loaded)
    with pytest.raises(d2.Detectron2Error, match="heads iterations 5: between 0 and"):
        d2.MaskRCNNConfig(iterations=4, heads_iterations=5)


def test_a_missing_weights_file_is_named():
    with pytest.raises(d2.Detectron2Error, match=r"weights file /no/such\.pkl does not exist"):
        d2.MaskRCNNConfig(weights="/no/such.pkl")


def test_coco_without_annotations_or_with_unknown_categories_is_refused(tmp_path):
    images, labels = disc_slices(1)
    coco = write_coco(tmp_path, images, labels)
    document = json.loads(coco.read_text())
    coco.write_text(json.dumps({**document, "annotations": []}))
    with pytest.raises(CocoDocumentError, match="has no annotations"):
        d2.training_records(coco, tmp_path / "images")
    document["annotations"][0]["category_id"] = 4
    coco.write_text(json.dumps(document))
    with pytest.raises(CocoDocumentError, match="category_id 4"):
        d2.training_records(coco, tmp_path / "images")


def test_missing_images_are_named(tmp_path):
    images, labels = disc_slices(1)
    coco = write_coco(tmp_path, images, labels)
    with pytest.raises(d2.Detectron2Error, match=r"images of .* are missing under .*z00000\.png"):
        d2.training_records(coco, tmp_path / "elsewhere")


def test_an_image_file_name_leaving_the_image_root_is_refused(tmp_path):
    images, labels = disc_slices(1)
    coco = write_coco(tmp_path, images, labels)
    document = json.loads(coco.read_text())
    document["images"][0]["file_name"] = "../../etc/passwd"
    coco.write_text(json.dumps(document))
    with pytest.raises(PathConfinementError, match=r"image 1 names '\.\./\.\./etc/passwd'"):
        d2.training_records(coco, tmp_path / "images")
