import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from tomoloop.inference import blend_window, predict_slice, predict_volume, tile_origins
from tomoloop.stacks import open_stack


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
        result = predict_volume(model, stack, tmp_path / "pred", tile=32, overlap=8)
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
        predict_volume(wrong, stack, tmp_path / "pred", tile=32, overlap=8)
    assert list((tmp_path / "pred").iterdir()) == []
