import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tomoloop.inference.predict import predict_slice
from tomoloop.inference.uncertainty import (
    AGGREGATIONS,
    entropy,
    margin,
    mutual_information,
    tta_variance,
)
from tomoloop.networks.registry import build_model


def _softmax(logits, axis):
    e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_sure_and_unsure_extremes():
    sure = np.zeros((3, 2, 2))
    sure[1] = 1
    tie = np.full((3, 2, 2), 1 / 3)
    assert np.allclose(entropy(sure), 0) and np.allclose(entropy(tie), np.log(3))
    assert np.allclose(margin(sure), 0) and np.allclose(margin(tie), 1)


@settings(max_examples=60, deadline=None)
@given(
    logits=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 6), st.integers(2, 4), st.integers(1, 5), st.integers(1, 5)),
        elements=st.floats(-5, 5),
    )
)
def test_bald_is_between_zero_and_the_entropy_of_the_mean(logits):
    samples = _softmax(logits, axis=1)
    bald = mutual_information(samples)
    assert np.all(bald >= 0) and np.all(bald <= entropy(samples.mean(axis=0)) + 1e-9)
    same = np.repeat(samples[:1], 4, axis=0)
    assert np.allclose(mutual_information(same), 0, atol=1e-9)
    assert np.allclose(tta_variance(same), 0)


def test_disagreeing_passes_score_high():
    a, b = np.zeros((2, 1, 1)), np.zeros((2, 1, 1))
    a[0], b[1] = 1, 1
    samples = np.stack([a, b, a, b])
    assert mutual_information(samples)[0, 0] == pytest.approx(np.log(2), abs=1e-6)
    assert tta_variance(samples)[0, 0] == pytest.approx(0.25)


def test_aggregations():
    u = np.zeros((10, 10))
    u[0, :5] = 1.0
    probs = np.zeros((2, 10, 10))
    probs[0] = 1
    probs[:, 0, :] = [[0.0], [1.0]]  # the unsure row is foreground
    assert AGGREGATIONS["mean"](u, probs) == pytest.approx(0.05)
    assert AGGREGATIONS["top_percentile"](u, probs, percent=5) == 1.0
    assert AGGREGATIONS["foreground_weighted"](u, probs) == pytest.approx(0.5)


def test_mc_dropout_samples_of_the_unet_differ_only_with_dropout():
    torch.manual_seed(0)
    image = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    stochastic = build_model("unet", base=4, dropout=0.5)
    samples = [predict_slice(stochastic, image, tile=32, overlap=0, dropout=True) for _ in "ab"]
    assert samples[0].shape == (2, 32, 32) and not np.allclose(*samples)
    assert not stochastic.training and not stochastic.dropout.training  # left in eval mode
    steady = build_model("unet", base=4, dropout=0.0)
    same = [predict_slice(steady, image, tile=32, overlap=0, dropout=True) for _ in "ab"]
    np.testing.assert_allclose(*same, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)),
        elements=st.floats(0, 1, width=32),
    )
)
def test_entropy_is_the_sum_over_classes_of_minus_p_log_p(probs):
    expected = -(probs * np.log(probs + 1e-12)).sum(axis=0)
    got = entropy(probs)
    assert got.dtype == np.float32 and got.shape == probs.shape[1:]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_entropy_of_a_flipped_view_is_the_flipped_entropy():
    probs = _softmax(np.random.default_rng(5).normal(size=(3, 4, 6)), axis=0).astype(np.float32)
    flipped = probs[:, ::-1, ::-1]
    np.testing.assert_array_equal(entropy(flipped), entropy(probs)[::-1, ::-1])
