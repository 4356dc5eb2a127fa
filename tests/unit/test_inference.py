import numpy as np
import pytest
import tifffile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from tomoloop.inference.predict import (
    blend,
    blend_window,
    class_labels,
    predict_slice,
    predict_volume,
    running,
    tile_origins,
    tiling,
    to_device,
)
from tomoloop.stacks.opener import open_stack


def _direct(model, image):
    with torch.no_grad():
        return model(torch.from_numpy(image)[None, None]).softmax(dim=1)[0].numpy()


def test_tiles_cover_everything_with_the_overlap():
    assert tile_origins(100, 32, 8) == [0, 24, 48, 68]
    assert tile_origins(20, 32, 8) == [0]
    assert blend_window(8).min() > 0
    with pytest.raises(ValueError, match="smaller than the tile"):
        tile_origins(100, 32, 32)


def test_tiling_a_pointwise_model_is_exact():
    torch.manual_seed(0)
    model = nn.Conv2d(1, 3, 1)
    image = np.random.default_rng(0).random((100, 150), dtype=np.float32)
    tiled = predict_slice(model, image, tile=32, overlap=8, batch=5)
    np.testing.assert_allclose(tiled, _direct(model, image), atol=1e-6)


def test_no_seams_with_a_convolutional_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    image = np.random.default_rng(1).random((96, 96), dtype=np.float32)
    tiled = predict_slice(model, image, tile=32, overlap=16)
    interior = (slice(None), slice(4, -4), slice(4, -4))  # the image border is padded alike
    assert np.abs(tiled - _direct(model, image))[interior].max() < 5e-3


def test_a_slice_smaller_than_a_tile():
    model = nn.Conv2d(1, 2, 1)
    probs = predict_slice(model, np.zeros((20, 24), np.float32), tile=32, overlap=8)
    assert probs.shape == (2, 20, 24)
    np.testing.assert_allclose(probs.sum(axis=0), 1, atol=1e-6)


def test_volume_prediction_streams_labels_and_uncertainty_to_disk(tmp_path):
    torch.manual_seed(0)
    model = nn.Conv2d(1, 3, 1)
    volume = (np.random.default_rng(2).random((5, 40, 36)) * 4000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "gray.tif", volume)
    with open_stack(tmp_path / "gray.tif") as stack:
        result = predict_volume(
            model,
            stack,
            tmp_path / "pred" / "labels.tif",
            tmp_path / "pred" / "uncertainty.tif",
            tile=32,
            overlap=8,
        )
        labels, unsure = tifffile.imread(result.labels), tifffile.imread(result.uncertainty)
        assert labels.shape == unsure.shape == (5, 40, 36)
        assert labels.dtype == np.uint8 and unsure.dtype == np.float16
        assert unsure.min() >= 0 and unsure.max() <= np.log(3) + 1e-3
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == [
        "labels.tif",
        "uncertainty.tif",
    ]


def test_failed_volume_prediction_leaves_no_files(tmp_path):
    tifffile.imwrite(
        tmp_path / "gray.tif", np.zeros((3, 40, 40), np.uint8), photometric="minisblack"
    )
    wrong = nn.Conv2d(2, 3, 1)  # expects two input channels
    with open_stack(tmp_path / "gray.tif") as stack, pytest.raises(RuntimeError):
        predict_volume(wrong, stack, tmp_path / "pred" / "l.tif", tmp_path / "pred" / "u.tif")
    with open_stack(tmp_path / "gray.tif") as stack, pytest.raises(RuntimeError):
        predict_volume(wrong, stack, tmp_path / "pred" / "l.tif", axes=("z", "y", "x"))
    assert list((tmp_path / "pred").iterdir()) == []


def _conv_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))


def _gray(tmp_path):
    volume = (np.random.default_rng(3).random((12, 40, 36)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "gray.tif", volume)
    return volume


INNER = (slice(2, -2), slice(2, -2), slice(2, -2))  # the padding differs at the faces


def _unsure(path):
    return tifffile.imread(path).astype(np.float32)


def test_tiled_volume_prediction_equals_untiled(tmp_path):
    _gray(tmp_path)
    model = _conv_model()
    with open_stack(tmp_path / "gray.tif") as stack:
        tiled = predict_volume(
            model, stack, tmp_path / "t.tif", tmp_path / "tu.tif", tile=32, overlap=16
        )
        whole = predict_volume(
            model, stack, tmp_path / "w.tif", tmp_path / "wu.tif", tile=64, overlap=0
        )
    difference = np.abs(_unsure(tiled.uncertainty) - _unsure(whole.uncertainty))
    assert difference[INNER].max() < 1e-2


def test_three_axis_fusion_averages_the_probabilities_of_each_axis(tmp_path):
    from tomoloop.inference.uncertainty import entropy

    volume = _gray(tmp_path)
    model = _conv_model()
    with torch.no_grad():
        model[2].weight *= 20  # confident: per-axis predictions disagree visibly
    image = volume.astype(np.float32) / 255
    per_axis = [
        np.stack([_direct(model, image[z]) for z in range(12)], axis=1),
        np.stack([_direct(model, image[:, y]) for y in range(40)], axis=2),
        np.stack([_direct(model, image[:, :, x]) for x in range(36)], axis=3),
    ]
    expected = np.mean(per_axis, axis=0)
    seen = []
    with open_stack(tmp_path / "gray.tif") as stack:
        result = predict_volume(
            model,
            stack,
            tmp_path / "fused.tif",
            tmp_path / "fused_u.tif",
            axes=("z", "y", "x"),
            tile=64,
            overlap=0,
            on_slice=lambda axis, index: seen.append(axis),
        )
        z_only = predict_volume(model, stack, tmp_path / "z.tif", tmp_path / "z_u.tif", tile=64)
    fused = _unsure(result.uncertainty)
    np.testing.assert_allclose(fused[INNER], entropy(expected)[INNER], atol=2e-3)
    assert np.abs(fused - _unsure(z_only.uncertainty))[INNER].max() > 0.05  # not z alone
    margin = np.sort(expected, axis=0)
    clear = (margin[-1] - margin[-2] > 1e-3)[INNER]
    labels = tifffile.imread(result.labels)[INNER]
    assert np.array_equal(labels[clear], expected.argmax(axis=0)[INNER][clear])
    assert seen.count("z") == 12 and seen.count("y") == 40 and seen.count("x") == 36
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["fused.tif", "fused_u.tif", "gray.tif", "z.tif", "z_u.tif"]


def test_dropout_sampling_varies_and_plain_prediction_does_not():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 1), nn.Dropout2d(0.5), nn.Conv2d(8, 3, 1))
    image = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    plain = [predict_slice(model, image, tile=32, overlap=0) for _ in range(2)]
    sampled = [predict_slice(model, image, tile=32, overlap=0, dropout=True) for _ in range(2)]
    np.testing.assert_array_equal(*plain)
    assert not np.allclose(*sampled)
    assert not model.training and not model[1].training


def test_inference_turns_the_cudnn_autotuner_on_and_puts_the_callers_setting_back():
    model = nn.Conv2d(1, 2, 3)
    for before in (False, True):
        torch.backends.cudnn.benchmark = before
        with running(model):
            assert torch.backends.cudnn.benchmark is True
        assert torch.backends.cudnn.benchmark is before
    torch.backends.cudnn.benchmark = False


def test_tiles_go_to_the_device_with_a_channel_axis_and_their_values():
    tiles = np.random.default_rng(0).random((3, 16, 24), dtype=np.float32)
    moved = to_device(tiles, torch.device("cpu"))
    assert moved.shape == (3, 1, 16, 24) and moved.dtype == torch.float32
    assert moved.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(moved[:, 0].numpy(), tiles)


@torch.inference_mode()
def _todays_predict_slice(model, image, tile, overlap, batch=8):
    """predict_slice as it was before tiles were batched across slices (the reference)."""
    from tomoloop.inference.predict import tile_side

    h, w = image.shape
    th, tw = tile_side(h, tile), tile_side(w, tile)
    ph, pw = max(h, th), max(w, tw)
    padded = np.pad(image.astype(np.float32), ((0, ph - h), (0, pw - w)), mode="reflect")
    weights = blend_window(th, tw)
    origins = [
        (y, x)
        for y in tile_origins(ph, th, min(overlap, th - 1))
        for x in tile_origins(pw, tw, min(overlap, tw - 1))
    ]
    total, norm = None, np.zeros((ph, pw), dtype=np.float32)
    model.eval()
    for start in range(0, len(origins), batch):
        chunk = origins[start : start + batch]
        tiles = np.stack([padded[y : y + th, x : x + tw] for y, x in chunk])[:, None]
        probs = model(torch.from_numpy(tiles)).float().softmax(dim=1).numpy()
        if total is None:
            total = np.zeros((probs.shape[1], ph, pw), dtype=np.float32)
        for (y, x), p in zip(chunk, probs, strict=True):
            total[:, y : y + th, x : x + tw] += p * weights
            norm[y : y + th, x : x + tw] += weights
    return (total / norm)[:, :h, :w]


@pytest.mark.parametrize("arch", ["unet", "lrcsnet", "transforcnn"])
def test_batched_volume_prediction_gives_todays_labels(tmp_path, arch):
    """Tiles of several slices share batches in channels-last layout: the labels are the
    one-slice-at-a-time labels except where two classes tie to float rounding.
    """
    from tomoloop.inference.predict import normalise
    from tomoloop.networks.registry import build_model
    from tomoloop.stacks.window import percentile_window

    torch.manual_seed(0)
    model = build_model(arch, 1, 3, base=4) if arch == "unet" else build_model(arch, 1, 3)
    with torch.no_grad():  # weights far from their initialisation: varied labels
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    volume = (np.random.default_rng(4).random((5, 80, 48)) * 4000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "gray.tif", volume)
    with open_stack(tmp_path / "gray.tif") as stack:
        window = percentile_window(stack)
        result = predict_volume(model, stack, tmp_path / "l.tif", tile=32, overlap=8, batch=13)
    expected = np.stack(
        [_todays_predict_slice(model, normalise(s, window), 32, 8) for s in volume], axis=1
    )
    top2 = np.sort(expected, axis=0)[-2:]
    decided = top2[1] - top2[0] > 1e-5
    labels = tifffile.imread(result.labels)
    assert np.array_equal(labels[decided], expected.argmax(axis=0)[decided])
    assert decided.mean() > 0.99
    assert np.bincount(labels.ravel(), minlength=3).min() > 0.02 * labels.size
    assert not model.training
    assert all(p.is_contiguous() for p in model.parameters())


@settings(max_examples=80, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)),
        elements=st.sampled_from([0.0, 0.25, 0.5, 1.0]),  # few values: many ties
    )
)
def test_class_labels_are_argmax_with_the_first_of_equals(probs):
    labels = class_labels(torch.from_numpy(probs))
    assert labels.dtype == torch.uint8
    np.testing.assert_array_equal(labels.numpy(), probs.argmax(axis=0))


def test_class_labels_of_more_than_256_classes_are_int32():
    probs = np.random.default_rng(6).random((300, 3, 4)).astype(np.float32)
    labels = class_labels(torch.from_numpy(probs))
    assert labels.dtype == torch.int32
    np.testing.assert_array_equal(labels.numpy(), probs.argmax(axis=0))


def test_blending_sums_the_tiles_under_the_window_in_tile_order_bit_for_bit():
    """The blend on torch tensors gives the NumPy sum of the code before it to the last bit,
    so the labels of a volume prediction are unchanged."""
    t = tiling((50, 37), 16, 4)
    probs = np.random.default_rng(7).random((len(t.origins), 3, 16, 16)).astype(np.float32)
    weights = blend_window(16)
    total = np.zeros((3, t.ph, t.pw), dtype=np.float32)
    norm = np.zeros((t.ph, t.pw), dtype=np.float32)
    for (y, x), p in zip(t.origins, probs, strict=True):
        total[:, y : y + 16, x : x + 16] += p * weights
        norm[y : y + 16, x : x + 16] += weights
    got = blend(torch.from_numpy(probs), t)
    assert got.shape == (3, 50, 37) and got.device.type == "cpu"
    np.testing.assert_array_equal(got.numpy(), (total / norm)[:, :50, :37])
