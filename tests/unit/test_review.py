"""Which labels go to review, and the agreement of two labels (tomoloop.active.review)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tomoloop.active.review import ReviewPolicy, Routing, class_dice, mean_iou, qa_sampled, route
from tomoloop.errors import TomoloopError

NO_QA = ReviewPolicy(qa_rate=0.0)
PINNED = [4, 5, 6, 29]  # keys labelstudio:0 … labelstudio:39 sampled at 10 %
masks = arrays(
    np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 2)
)


def _mask(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, (16, 20)).astype(np.uint8)


def test_an_unchanged_prediction_is_not_reviewed_and_a_rewritten_one_is():
    mask = _mask()
    kept = route(mask, 3, "a", NO_QA, prediction=mask.copy())
    assert kept.reasons == () and kept.model_iou == 1.0
    rewritten = route((mask + 1) % 3, 3, "a", NO_QA, prediction=mask)
    assert rewritten.reasons == ("model",) and rewritten.model_iou == 0.0


def test_the_model_threshold_is_strict_below():
    truth = np.zeros((10, 10), np.uint8)
    truth[:, :5] = 1
    changed = truth.copy()
    changed[:, 4] = 0  # IoU: class 0 50/60, class 1 40/50 → mean 0.8166…
    iou = mean_iou(truth, changed, 2)
    assert iou == pytest.approx((50 / 60 + 40 / 50) / 2)
    assert route(changed, 2, "k", ReviewPolicy(iou, 0.8, 0.0), truth).reasons == ()
    assert route(changed, 2, "k", ReviewPolicy(iou + 1e-9, 0.8, 0.0), truth).reasons == ("model",)


def test_two_annotators_who_disagree_send_the_label_to_review_with_per_class_dice():
    first = _mask(1)
    same = route(first.copy(), 3, "b", NO_QA, others=[first])
    assert same.reasons == ()
    np.testing.assert_array_equal(same.agreements[0], [1.0, 1.0, 1.0])
    other = route(_mask(2), 3, "b", NO_QA, others=[first, first])
    assert other.reasons == ("annotators",) and len(other.agreements) == 2
    assert np.all(other.agreements[0] < 0.5)  # independent random masks: Dice ≈ 1/3


def test_no_prediction_and_no_other_annotator_means_only_qa_can_send_it():
    routed = route(_mask(), 3, "c", NO_QA)
    assert routed == Routing((), None, ())
    always = route(_mask(), 3, "c", ReviewPolicy(qa_rate=1.0))
    assert always.reasons == ("qa",)


def test_the_qa_sample_is_reproducible_and_has_its_rate():
    keys = [f"labelstudio:{i}" for i in range(20_000)]
    drawn = [qa_sampled(k, 0.1) for k in keys]
    # pinned draws: a changed hash would re-sample every label already routed
    assert [i for i, d in enumerate(drawn[:40]) if d] == PINNED
    assert 0.09 < np.mean(drawn) < 0.11
    assert not any(qa_sampled(k, 0.0) for k in keys[:500])
    assert all(qa_sampled(k, 1.0) for k in keys[:500])


@pytest.mark.parametrize("field", ["min_model_iou", "min_agreement", "qa_rate"])
def test_a_policy_outside_zero_to_one_is_refused(field):
    with pytest.raises(TomoloopError, match=f"review {field} 1.5 must lie in"):
        ReviewPolicy(**{field: 1.5})


@settings(max_examples=60, deadline=None)
@given(masks, st.data())
def test_dice_is_symmetric_one_on_itself_and_nan_only_for_absent_classes(a, data):
    b = data.draw(arrays(np.uint8, a.shape, elements=st.integers(0, 2)))
    ab, ba = class_dice(a, b, 3), class_dice(b, a, 3)
    np.testing.assert_allclose(ab, ba)
    absent = [c for c in range(3) if not (a == c).any() and not (b == c).any()]
    assert [c for c in range(3) if np.isnan(ab[c])] == absent
    itself = class_dice(a, a, 3)
    present = [c for c in range(3) if (a == c).any()]
    np.testing.assert_array_equal(itself[present], 1.0)
    assert np.all((ab[np.isfinite(ab)] >= 0) & (ab[np.isfinite(ab)] <= 1))
