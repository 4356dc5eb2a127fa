import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from tomoloop.errors import TomoloopError
from tomoloop.scoring import ScoreOptions, score_stack, slice_score
from tomoloop.stacks import open_stack

OPTIONS = {"tile": 32, "overlap": 8}


def _threshold_model(sharpness: float) -> nn.Module:
    """Two classes split at grey 0.5; ``sharpness`` sets how confident it is."""
    model = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        model.weight[:] = torch.tensor([-sharpness, sharpness]).view(2, 1, 1, 1)
        model.bias[:] = torch.tensor([sharpness / 2, -sharpness / 2])
    return model


IMAGE = np.random.default_rng(0).random((48, 40), dtype=np.float32)


def test_a_confident_model_yields_lower_entropy_and_margin():
    for method in ("entropy", "margin"):
        options = ScoreOptions(method, **OPTIONS)
        sure = slice_score(_threshold_model(40.0), IMAGE, options)
        unsure = slice_score(_threshold_model(1.0), IMAGE, options)
        assert sure < unsure, method


def test_bald_needs_dropout_disagreement():
    options = ScoreOptions("bald", passes=6, **OPTIONS)
    assert slice_score(_threshold_model(4.0), IMAGE, options) == pytest.approx(0, abs=1e-6)
    torch.manual_seed(0)
    dropped = nn.Sequential(nn.Conv2d(1, 16, 1), nn.Dropout2d(0.5), nn.Conv2d(16, 2, 1))
    assert slice_score(dropped, IMAGE, options) > 1e-3


def test_flip_tta_is_zero_for_a_flip_invariant_model_only():
    options = ScoreOptions("tta", **OPTIONS)
    assert slice_score(_threshold_model(4.0), IMAGE, options) == pytest.approx(0, abs=1e-7)
    skewed = nn.Conv2d(1, 2, 3, padding=1)
    with torch.no_grad():
        skewed.weight.zero_()
        skewed.weight[1, 0, 0, 0] = 8.0  # looks up-left only: flipping changes the answer
    assert slice_score(skewed, IMAGE, options) > 1e-3


def test_stack_scores_rank_ambiguous_slices_first(tmp_path):
    volume = np.zeros((6, 32, 32), np.uint8)
    volume[::2] = np.where(np.arange(32) < 16, 10, 245)  # clear two-phase slices
    volume[1::2] = 128  # every pixel at the decision boundary
    tifffile.imwrite(tmp_path / "gray.tif", volume)
    seen = []
    with open_stack(tmp_path / "gray.tif") as stack:
        scores = dict(
            score_stack(
                _threshold_model(10.0), stack, ScoreOptions(**OPTIONS), on_slice=seen.append
            )
        )
    assert seen == list(range(6))
    ranked = sorted(scores, key=scores.get, reverse=True)
    assert sorted(ranked[:3]) == [1, 3, 5]


def test_unknown_method_or_aggregation():
    with pytest.raises(TomoloopError, match="scoring method"):
        ScoreOptions("vibes")
    with pytest.raises(TomoloopError, match="aggregation"):
        ScoreOptions(aggregation="median")
    assert ScoreOptions("bald", "top_percentile").label == "bald/top_percentile"


def test_ensemble_disagreement_needs_members_and_sees_their_conflict():
    from tomoloop.enet import ENet

    options = ScoreOptions("ensemble", **OPTIONS)
    agreeing = ENet([_threshold_model(4.0), _threshold_model(4.0)], [0.5, 0.5])
    opposed = ENet([_threshold_model(4.0), _threshold_model(-4.0)], [0.5, 0.5])
    assert slice_score(agreeing, IMAGE, options) == pytest.approx(0, abs=1e-6)
    assert slice_score(opposed, IMAGE, options) > 0.1
    with pytest.raises(TomoloopError, match="needs an ensemble"):
        slice_score(_threshold_model(4.0), IMAGE, options)
