import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from tomoloop.active.scoring import ScoreOptions, score_stack, slice_features
from tomoloop.errors import TomoloopError
from tomoloop.stacks.opener import open_stack

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
        sure = slice_features(_threshold_model(40.0), IMAGE, options).score
        unsure = slice_features(_threshold_model(1.0), IMAGE, options).score
        assert sure < unsure, method


def test_bald_needs_dropout_disagreement():
    options = ScoreOptions("bald", passes=6, **OPTIONS)
    assert slice_features(_threshold_model(4.0), IMAGE, options).score == pytest.approx(0, abs=1e-6)
    torch.manual_seed(0)
    dropped = nn.Sequential(nn.Conv2d(1, 16, 1), nn.Dropout2d(0.5), nn.Conv2d(16, 2, 1))
    assert slice_features(dropped, IMAGE, options).score > 1e-3


def test_flip_tta_is_zero_for_a_flip_invariant_model_only():
    options = ScoreOptions("tta", **OPTIONS)
    assert slice_features(_threshold_model(4.0), IMAGE, options).score == pytest.approx(0, abs=1e-7)
    skewed = nn.Conv2d(1, 2, 3, padding=1)
    with torch.no_grad():
        skewed.weight.zero_()
        skewed.weight[1, 0, 0, 0] = 8.0  # looks up-left only: flipping changes the answer
    assert slice_features(skewed, IMAGE, options).score > 1e-3


def test_stack_scores_rank_ambiguous_slices_first(tmp_path):
    volume = np.zeros((6, 32, 32), np.uint8)
    volume[::2] = np.where(np.arange(32) < 16, 10, 245)  # clear two-phase slices
    volume[1::2] = 128  # every pixel at the decision boundary
    tifffile.imwrite(tmp_path / "gray.tif", volume)
    seen = []
    with open_stack(tmp_path / "gray.tif") as stack:
        scores = {
            i: f.score
            for i, f in score_stack(
                _threshold_model(10.0), stack, ScoreOptions(**OPTIONS), on_slice=seen.append
            )
        }
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
    from tomoloop.networks.enet import ENet

    options = ScoreOptions("ensemble", **OPTIONS)
    agreeing = ENet([_threshold_model(4.0), _threshold_model(4.0)], [0.5, 0.5])
    opposed = ENet([_threshold_model(4.0), _threshold_model(-4.0)], [0.5, 0.5])
    assert slice_features(agreeing, IMAGE, options).score == pytest.approx(0, abs=1e-6)
    assert slice_features(opposed, IMAGE, options).score > 0.1
    with pytest.raises(TomoloopError, match="needs an ensemble"):
        slice_features(_threshold_model(4.0), IMAGE, options)


def test_features_measure_foreground_boundary_and_embed_the_bottleneck():
    from tomoloop.active.scoring import boundary_fraction
    from tomoloop.networks.registry import ModelSpec

    halves = np.zeros((8, 8), np.uint8)
    halves[:, 4:] = 1
    assert boundary_fraction(halves) == pytest.approx(2 / 8)  # columns 3 and 4
    assert boundary_fraction(np.zeros((8, 8), np.uint8)) == 0
    plain = slice_features(_threshold_model(10.0), IMAGE, ScoreOptions(**OPTIONS))
    assert plain.embedding is None
    assert plain.foreground == pytest.approx(float((IMAGE > 0.5).mean()), abs=0.02)
    torch.manual_seed(0)
    unet = ModelSpec("unet", 1, 3, {"base": 4, "depth": 2}).build()
    embedded = slice_features(unet, IMAGE, ScoreOptions(embed=True, **OPTIONS))
    assert len(embedded.embedding) == 16  # 4 · 2² channels at the bottleneck
    assert np.linalg.norm(embedded.embedding) == pytest.approx(1)


def _todays_features(model, image, options):
    """The slice features as scoring computed them before passes and flips were batched:
    one predict_slice call per MC-dropout pass or flip, 8 tiles a batch (the reference).
    """
    from tomoloop.active.scoring import features_of
    from tomoloop.inference.predict import predict_slice
    from tomoloop.inference.uncertainty import FLIPS, mutual_information, tta_variance

    o = options
    if o.method == "bald":
        samples = np.stack(
            [
                predict_slice(model, image, o.tile, o.overlap, 8, o.device, dropout=True)
                for _ in range(o.passes)
            ]
        )
        return features_of(mutual_information(samples), samples.mean(axis=0), o)
    flips = []
    for dims in FLIPS:
        flipped = np.ascontiguousarray(np.flip(image, dims)) if dims else image
        probs = predict_slice(model, flipped, o.tile, o.overlap, 8, o.device)
        flips.append(np.flip(probs, dims) if dims else probs)
    samples = np.stack(flips)
    return features_of(tta_variance(samples), samples.mean(axis=0), o)


@pytest.mark.parametrize("arch", ["unet", "matphase", "transforcnn"])
@pytest.mark.parametrize("method", ["bald", "tta"])
def test_batched_passes_score_as_one_pass_at_a_time_did(arch, method):
    """MC-dropout passes and flips run as one batch, with the masks the one-pass-at-a-time
    loop drew from the same seed: the same scores, and the generator left where it was.
    """
    from tomoloop.networks.registry import build_model

    torch.manual_seed(0)
    model = build_model(arch, 1, 3, base=4) if arch != "transforcnn" else build_model(arch, 1, 3)
    with torch.no_grad():  # weights far from their initialisation: varied, unsure outputs
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    image = np.random.default_rng(1).random((48, 80), dtype=np.float32)
    options = ScoreOptions(method, passes=3, tile=32, overlap=8)
    torch.manual_seed(7)
    expected = _todays_features(model, image, options)
    after_expected = torch.rand(4)
    torch.manual_seed(7)
    got = slice_features(model, image, options)
    assert torch.equal(torch.rand(4), after_expected)
    assert expected.score > 1e-3
    assert got.score == pytest.approx(expected.score, rel=1e-4)
    assert got.foreground == pytest.approx(expected.foreground, abs=1e-3)
    assert got.boundary == pytest.approx(expected.boundary, abs=1e-3)
    assert not model.training


def test_mc_dropout_samples_are_the_sequential_passes_with_a_dropout_left_off():
    from tomoloop.inference.predict import mc_dropout_slice, predict_slice

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.Dropout(0.3),
        nn.Dropout(0.0),  # draws nothing
        nn.Conv2d(8, 8, 3, padding=1),
        nn.Dropout2d(0.5),
        nn.Conv2d(8, 3, 1),
    )
    image = np.random.default_rng(2).random((40, 72), dtype=np.float32)
    torch.manual_seed(3)
    expected = np.stack([predict_slice(model, image, 32, 8, 4, dropout=True) for _ in range(5)])
    torch.manual_seed(3)
    samples = mc_dropout_slice(model, image, 5, 32, 8, chunk=4, batch=7)
    np.testing.assert_allclose(samples, expected, atol=1e-6)
    assert np.abs(np.diff(samples, axis=0)).max() > 0.01  # the passes differ


def test_a_model_scored_with_mc_dropout_can_be_trained_after():
    from tomoloop.inference.predict import mc_dropout_slice

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Dropout2d(0.5), nn.Conv2d(4, 3, 1))
    image = np.random.default_rng(2).random((32, 32), dtype=np.float32)
    mc_dropout_slice(model, image, 2, 32, 8)  # BALD's passes: inside inference mode
    assert not any(p.is_inference() for p in model.parameters())
    model.train()
    model(torch.rand(2, 1, 32, 32)).square().mean().backward()  # a fine-tune's first step
    assert all(p.grad is not None for p in model.parameters())


def test_scoring_and_prediction_use_the_idle_cores_and_give_the_threads_back(tmp_path, monkeypatch):
    from tomoloop import cores
    from tomoloop.inference.predict import predict_volume

    seen = []

    class Recording(nn.Conv2d):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            return super().forward(x)

    before = torch.get_num_threads()
    monkeypatch.setattr(cores, "idle_cores", lambda: 1)
    tifffile.imwrite(tmp_path / "gray.tif", np.zeros((2, 16, 16), np.uint8))
    with open_stack(tmp_path / "gray.tif") as stack:
        list(score_stack(Recording(1, 2, 1), stack, ScoreOptions(**OPTIONS)))
        predict_volume(Recording(1, 2, 1), stack, tmp_path / "labels.tif", tile=16)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before
