import numpy as np
import tifffile

from tomoloop.demo import generate_sample, rough_labels
from tomoloop.labels.synthetic import ELECTRODE_PHASES


def test_the_sample_has_exact_labels_and_rough_ones_biased_against_the_binder(tmp_path):
    gray, rough, gold, _ = generate_sample(tmp_path)
    g, r = tifffile.imread(gold), tifffile.imread(rough)
    assert tifffile.imread(gray).shape == g.shape == r.shape and r.dtype == g.dtype
    assert (r == 2).mean() < 0.6 * (g == 2).mean()  # thin binder mostly lost
    assert 0.05 < (g == 2).mean() < 0.15 and 0.2 < (g == 1).mean() < 0.5
    np.testing.assert_array_equal(r[g != 2], g[g != 2])  # only binder pixels change
    assert set(np.unique(r[(g == 2) & (r != 2)])) <= {0, 1}


def test_the_new_scan_images_the_same_electrode_with_less_binder_contrast(tmp_path):
    gray, _, gold, second = generate_sample(tmp_path)
    first, again, g = tifffile.imread(gray), tifffile.imread(second), tifffile.imread(gold)
    assert again.shape == first.shape and again.dtype == np.uint16

    def contrast(image):  # binder against pore, in noise units of the image
        return (image[g == 2].mean() - image[g == 0].mean()) / image[g == 0].std()

    assert contrast(again) < 0.7 * contrast(first)
    centre, edge = again[:, 56:72, 56:72], again[:, :8, :8]  # radial cupping darkens the centre
    assert centre[g[:, 56:72, 56:72] == 1].mean() < edge[g[:, :8, :8] == 1].mean()
    first_half, last_half = again[: len(g) // 2], again[len(g) // 2 :]  # drift along z
    assert last_half[g[len(g) // 2 :] == 1].mean() > first_half[g[: len(g) // 2] == 1].mean()


def test_rough_labels_are_drawn_slice_by_slice():
    gold = np.zeros((3, 12, 12), np.uint8)
    gold[:, 4:8, 4:8] = 2
    gold[1, :, :] = 0  # a slice without binder stays as it is
    rough = rough_labels(gold, ELECTRODE_PHASES, {"cbd": -1})
    assert [int((s == 2).sum()) for s in rough] == [4, 0, 4]  # 4×4 → 2×2 in plane only
    np.testing.assert_array_equal(rough_labels(gold, ELECTRODE_PHASES, {}), gold)
