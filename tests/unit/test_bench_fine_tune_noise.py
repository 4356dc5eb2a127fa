"""``bench/fine_tune_noise.py``'s figures from the rounds it recorded."""

import pytest
from conftest import load_bench


@pytest.fixture(scope="module")
def noise():
    return load_bench("fine_tune_noise")


def _round(start, epochs, before, test, last=False):
    return {
        "beat_start": max(epochs) >= start,
        "start_val": start,
        "epoch_val": epochs,
        "test_before": before,
        "test": test,
        "last": last,
    }


def test_rounds_above_their_start_swing_and_the_val_test_correlation(noise):
    rounds = [
        _round(0.50, [0.52, 0.60], 0.40, 0.50),  # val +0.10, test +0.10
        _round(0.60, [0.62, 0.58], 0.50, 0.52),  # val +0.02, test +0.02
        _round(0.62, [0.40, 0.60], 0.52, 0.50),  # val −0.02, test −0.02: below its start
        _round(0.60, [0.64, 0.62], 0.50, 0.54, last=True),  # val +0.04, test +0.04
    ]
    figures = noise.summary(rounds)
    assert figures["rounds"] == 4 and figures["beat_start"] == 3
    assert figures["epoch_swing"] == pytest.approx((0.08 + 0.04 + 0.20 + 0.02) / 4)
    assert figures["val_test_correlation"] == pytest.approx(1.0)
    assert figures["final_test"] == [0.54]


def test_no_correlation_from_fewer_than_three_rounds(noise):
    rounds = [_round(0.5, [0.6], 0.4, 0.5), _round(0.6, [0.5], 0.5, 0.5, True)]
    figures = noise.summary(rounds)
    assert figures["val_test_correlation"] is None and figures["epoch_swing"] is None
