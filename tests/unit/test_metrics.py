import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tomoloop.labels.phases import IGNORE
from tomoloop.metrics.semantic import (
    best_and_lowest,
    confusion_matrix,
    patch_scores,
    scores,
    volume_fractions,
)


def test_hand_computed_example():
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 2, 0, 1]])
    confusion = confusion_matrix(truth, pred, 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 3, 0], [1, 0, 2]]
    s = scores(confusion)
    # class 0: TP 1, FP 1, FN 1 → IoU 1/3, Dice 1/2; class 1: TP 3, FP 1 → 3/4, 6/7;
    # class 2: TP 2, FN 1 → 2/3, 4/5
    np.testing.assert_allclose(s.iou, [1 / 3, 3 / 4, 2 / 3])
    np.testing.assert_allclose(s.dice, [1 / 2, 6 / 7, 4 / 5])
    assert s.miou == pytest.approx((1 / 3 + 3 / 4 + 2 / 3) / 3)
    assert s.fiu == pytest.approx((2 * 1 / 3 + 3 * 3 / 4 + 3 * 2 / 3) / 8)
    assert s.pixel_accuracy == pytest.approx(6 / 8)


@settings(max_examples=100, deadline=None)
@given(
    truth=hnp.arrays(np.uint8, st.integers(1, 200), elements=st.integers(0, 3), fill=st.nothing()),
    data=st.data(),
)
def test_perfect_prediction_scores_one_and_scores_are_bounded(truth, data):
    perfect = scores(confusion_matrix(truth, truth, 4))
    present = np.unique(truth)
    np.testing.assert_allclose(perfect.iou[present], 1.0)
    assert perfect.miou == perfect.mdsc == perfect.fiu == perfect.pixel_accuracy == 1.0
    pred = data.draw(hnp.arrays(np.uint8, truth.shape, elements=st.integers(0, 3)))
    s = scores(confusion_matrix(truth, pred, 4))
    finite = np.isfinite(s.iou)
    assert np.all((s.iou[finite] >= 0) & (s.iou[finite] <= s.dice[finite] + 1e-12))
    assert 0 <= s.miou <= 1 and 0 <= s.pixel_accuracy <= 1


def test_absent_classes_are_undefined_not_zero():
    s = scores(confusion_matrix(np.zeros(5, int), np.zeros(5, int), 3))
    assert s.iou[0] == 1 and np.isnan(s.iou[1]) and s.miou == 1


def test_bad_inputs():
    with pytest.raises(ValueError, match="differ"):
        confusion_matrix(np.zeros(3, int), np.zeros(4, int), 2)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        confusion_matrix(np.array([0, 2]), np.array([0, 1]), 2)


def test_best_and_lowest_k_with_spread_and_fractions():
    four = best_and_lowest([0.9, 0.1, 0.5, 0.7], k=2)
    assert (four.best, four.best_std, four.lowest, four.lowest_std) == pytest.approx(
        (0.8, 0.1, 0.3, 0.2)
    )
    assert not four.overlap
    three = best_and_lowest([0.9, 0.1, 0.5], k=2)  # 0.5 is among the best and the lowest
    assert three.overlap and (three.best, three.lowest) == pytest.approx((0.7, 0.3))
    np.testing.assert_allclose(volume_fractions(np.array([0, 0, 1, 2]), 3), [0.5, 0.25, 0.25])


def test_patch_scores_average_per_patch_where_pooling_does_not():
    truth = np.zeros((4, 6), np.uint8)
    truth[:, 2:] = 1
    prediction = truth.copy()
    prediction[:2, :2] = 1  # the top-left 2×2 patch: all four pore pixels called phase 1
    rows = patch_scores(truth, prediction, 2, side=2)
    # 2 × 3 patches, the right column 2 wide; only the top-left one is wrong
    assert rows.shape == (6, 2)
    assert rows[0].tolist() == [0.0, 0.0] and (rows[1:] == 1).all()
    assert scores(confusion_matrix(truth, prediction, 2)).miou == pytest.approx(
        (4 / 8 + 16 / 20) / 2
    )  # pooled: not the per-patch mean 5/6
    edge = patch_scores(truth, prediction, 2, side=4)
    assert edge.shape == (2, 2)  # a 4×4 patch and the 4×2 rest
    ignored = np.full((4, 6), IGNORE, np.uint8)
    assert patch_scores(ignored, prediction, 2, side=2).shape == (0, 2)
