import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tomoloop.training.data import (
    NO_AUGMENTATION,
    Augmentation,
    DatasetError,
    LabelledSlice,
    augment,
    check_slices,
    parse_tier_weights,
    sample_patches,
    tier_weight,
)


def _slice(side=40, weight=1.0, seed=0, rare=True):
    rng = np.random.default_rng(seed)
    labels = np.zeros((side, side), dtype=np.uint8)
    labels[: side // 2] = 1
    if rare:
        labels[3:5, 3:5] = 2  # 4 pixels of a rare phase
    image = (labels / 2 + 0.05 * rng.random((side, side))).astype(np.float32)
    return LabelledSlice(image, labels, weight)


def test_tier_weights_parse_and_default():
    weights = parse_tier_weights("annotator=3, expert=9")
    assert weights == {"auto": 1.0, "model": 0.5, "annotator": 3.0, "expert": 9.0}
    assert tier_weight(3, weights) == 9.0
    assert tier_weight(0) == 1.0
    for bad in ("boss=2", "auto=", "auto=x", "auto=-1"):
        with pytest.raises(DatasetError, match="tier weight"):
            parse_tier_weights(bad)


def test_patches_have_shapes_dtypes_and_tier_weights():
    rng = np.random.default_rng(0)
    images, labels, weights = sample_patches([_slice(weight=4.0)], 6, 32, rng, 3)
    assert images.shape == (6, 1, 32, 32) and images.dtype.is_floating_point
    assert labels.shape == (6, 32, 32) and str(labels.dtype) == "torch.int64"
    assert (weights == 4.0).all()


@pytest.mark.parametrize("side", [20, 40])  # padded to the patch, and cropped from the slice
def test_a_per_pixel_weight_map_moves_with_its_labels(side):
    """A label merged from several tiers weighs each pixel by its tier: the patch's weights
    are the map's pixels under the patch's labels, through padding, crop and augmentation."""
    s = _slice(side=side)
    mapped = LabelledSlice(s.image, s.labels, 1.0 + s.labels.astype(np.float32))
    rng = np.random.default_rng(3)
    _, labels, weights = sample_patches([mapped], 8, 32, rng, 3, aug=Augmentation())
    np.testing.assert_array_equal(weights.numpy(), 1.0 + labels.numpy())


def test_small_slices_are_padded_to_a_patch():
    rng = np.random.default_rng(0)
    images, labels, _ = sample_patches([_slice(side=20)], 2, 32, rng, 3)
    assert images.shape == (2, 1, 32, 32)
    assert set(np.unique(labels.numpy())) <= {0, 1, 2}


def test_patch_side_must_suit_the_networks():
    with pytest.raises(DatasetError, match="divisible by 16"):
        sample_patches([_slice()], 1, 40, np.random.default_rng(0), 3)


def test_class_balanced_sampling_shows_a_rare_phase_far_more_often():
    slices = [_slice(side=96)]

    def rare_share(balanced):
        _, labels, _ = sample_patches(
            slices, 60, 16, np.random.default_rng(1), 3, class_balanced=balanced
        )
        return (labels == 2).any(dim=(1, 2)).float().mean().item()

    assert rare_share(True) > 0.25 > rare_share(False)


def test_same_seed_same_patches():
    a = sample_patches([_slice()], 4, 16, np.random.default_rng(7), 3, aug=Augmentation())
    b = sample_patches([_slice()], 4, 16, np.random.default_rng(7), 3, aug=Augmentation())
    for x, y in zip(a, b, strict=True):
        assert (x == y).all()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), side=st.sampled_from([16, 32]))
def test_right_angle_geometry_moves_image_and_labels_together(seed, side):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, (side, side)).astype(np.uint8)
    image = labels.astype(np.float32) / 2
    weight = rng.random((side, side)).astype(np.float32)
    geometry = Augmentation(angle=0.0, zoom=(1.0, 1.0), brightness=0.0, contrast=0.0)
    out_image, out_labels, out_weight = augment(image, labels, weight, rng, geometry)
    assert np.array_equal(out_image * 2, out_labels.astype(np.float32))
    assert sorted(out_weight.ravel()) == sorted(weight.ravel())  # a permutation of pixels


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_full_augmentation_keeps_shape_range_and_label_set(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, (32, 32)).astype(np.uint8)
    labels[labels == 1] = 2  # class 1 absent: augmentation must not invent it
    image = rng.random((32, 32)).astype(np.float32)
    weight = np.full((32, 32), 2.0, dtype=np.float32)
    out_image, out_labels, out_weight = augment(image, labels, weight, rng, Augmentation())
    assert out_image.shape == out_labels.shape == out_weight.shape == (32, 32)
    assert out_image.dtype == np.float32 and 0.0 <= out_image.min() <= out_image.max() <= 1.0
    assert set(np.unique(out_labels)) <= {0, 2}
    assert (out_weight == 2.0).all()


def test_no_augmentation_is_the_identity():
    rng = np.random.default_rng(0)
    s = _slice(side=32)
    weight = np.ones((32, 32), dtype=np.float32)
    image, labels, _ = augment(s.image, s.labels, weight, rng, NO_AUGMENTATION)
    assert np.array_equal(image, s.image) and np.array_equal(labels, s.labels)


@pytest.mark.parametrize(
    ("slices", "message"),
    [
        ([], "split is empty"),
        ([LabelledSlice(np.zeros((4, 4), np.float32), np.zeros((4, 5), np.uint8))], "differ"),
        ([LabelledSlice(np.full((4, 4), np.nan, np.float32), np.zeros((4, 4), np.uint8))], "NaN"),
        ([LabelledSlice(np.zeros((4, 4), np.float32), np.full((4, 4), 3, np.uint8))], "3 classes"),
    ],
)
def test_unusable_training_data_is_refused(slices, message):
    with pytest.raises(DatasetError, match=message):
        check_slices(slices, 3, "train")


def test_seed_000_preparation_smooths_labels_and_adds_row_removed_copies():
    from tomoloop.training.data import prepare_training_slices

    labels = np.ones((32, 32), np.uint8)
    labels[10, 10] = 2  # a lone binder pixel inside NMC: the domain rule removes it
    s = LabelledSlice(labels.astype(np.float32) / 2, labels, weight=2.0, annotation_id=7)
    prepared = prepare_training_slices([s], row_removal=3, exclusive=[(1, 2)])
    assert len(prepared) == 4
    assert all(p.weight == 2.0 and p.annotation_id == 7 for p in prepared)
    assert all(p.image.shape == p.labels.shape == (32, 32) for p in prepared)
    assert all((p.labels == 1).all() for p in prepared)
    assert prepare_training_slices([s]) == [s]


def test_seed_000_preparation_smooths_the_resized_ground_truth():
    from tomoloop.networks.matphase import remove_rows_and_resize, smooth_labels_knn
    from tomoloop.training.data import prepare_training_slices

    labels = np.random.default_rng(3).integers(0, 3, (24, 20)).astype(np.uint8)
    s = LabelledSlice(labels / 2, labels)
    prepared = prepare_training_slices([s], row_removal=4, exclusive=[(1, 2)])
    resized = [labels] + [lab for _, lab in remove_rows_and_resize(s.image, labels, 4)]
    for p, lab in zip(prepared, resized, strict=True):
        np.testing.assert_array_equal(p.labels, smooth_labels_knn(lab, [(1, 2)]))
