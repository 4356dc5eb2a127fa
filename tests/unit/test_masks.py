import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tomoloop.labels.masks import (
    InstanceMasks,
    MaskFormatError,
    decode_class_mask,
    decode_instances,
    encode_class_mask,
    encode_instances,
    encode_tiers,
    merge_by_tier,
    merge_with_tiers,
    pixel_tiers,
    stack_class_counts,
)
from tomoloop.labels.phases import IGNORE, PhaseMap


@settings(max_examples=100, deadline=None)
@given(
    mask=hnp.arrays(
        np.uint8,
        st.tuples(st.integers(1, 40), st.integers(1, 40)),
        elements=st.integers(0, 4),
        fill=st.nothing(),
    )
)
def test_class_mask_round_trip_is_exact(mask):
    encoded = encode_class_mask(mask)
    np.testing.assert_array_equal(decode_class_mask(encoded), mask)
    assert "0" not in encoded["classes"]


@settings(max_examples=100, deadline=None)
@given(
    mask=hnp.arrays(
        np.uint8,
        st.tuples(st.integers(1, 40), st.integers(1, 40)),
        elements=st.sampled_from([0, 1, 2, 254, IGNORE]),
        fill=st.nothing(),
    )
)
def test_a_partly_labelled_mask_round_trips_exactly(mask):
    encoded = encode_class_mask(mask)
    back = decode_class_mask(encoded)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, mask)
    assert ("labelled" in encoded) == bool((mask == IGNORE).any())
    assert str(IGNORE) not in encoded["classes"]


def test_a_dense_mask_is_stored_as_before_sparse_labels():
    mask = np.array([[0, 1, 1], [2, 0, 1]], np.uint8)
    assert encode_class_mask(mask) == {
        "size": [2, 3],
        "classes": {"1": "2111", "2": "114"},
    }


def test_a_dense_mask_with_class_255_stays_a_class():
    mask = np.array([[0, 255], [300, 1]], np.uint16)
    encoded = encode_class_mask(mask)
    assert "labelled" not in encoded
    back = decode_class_mask(encoded)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, mask)


def test_a_class_outside_the_labelled_region_is_refused():
    half = np.full((2, 2), IGNORE, np.uint8)
    half[0] = 0
    encoded = encode_class_mask(half)
    encoded["classes"]["1"] = encode_class_mask(np.ones((2, 2), np.uint8))["classes"]["1"]
    with pytest.raises(MaskFormatError, match="outside its labelled region"):
        decode_class_mask(encoded)


def test_a_partly_labelled_mask_with_a_class_of_255_or_more_is_refused():
    encoded = encode_class_mask(np.array([[1, IGNORE]], np.uint8))
    encoded["classes"] = {"255": encoded["classes"]["1"]}
    with pytest.raises(MaskFormatError, match=r"0\.\.254"):
        decode_class_mask(encoded)


def test_an_undecodable_labelled_region_is_refused():
    with pytest.raises(MaskFormatError, match="labelled region"):
        decode_class_mask({"size": [2, 2], "classes": {}, "labelled": 7})


def test_merge_by_tier_higher_tier_wins_lower_fills_rest_unlabelled_stays():
    u = IGNORE
    auto = np.array([[1, 1, u, u]], np.uint8)
    expert = np.array([[2, u, u, u]], np.uint8)
    annotator_old = np.array([[0, 0, 0, u]], np.uint8)
    annotator_new = np.array([[u, 2, u, u]], np.uint8)
    merged = merge_by_tier([(3, expert), (0, auto), (2, annotator_old), (2, annotator_new)])
    np.testing.assert_array_equal(merged, [[2, 2, 0, u]])


def test_merge_with_tiers_says_which_tier_each_pixel_came_from():
    u = IGNORE
    auto = np.array([[1, 1, u, u]], np.uint8)
    expert = np.array([[2, u, u, u]], np.uint8)
    annotator = np.array([[u, 2, 0, u]], np.uint8)
    merged, tiers = merge_with_tiers([(0, auto), (3, expert), (2, annotator)])
    np.testing.assert_array_equal(merged, [[2, 2, 0, u]])
    np.testing.assert_array_equal(tiers, [[3, 2, 2, -1]])


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.uint8, (3, 7, 9), elements=st.sampled_from([0, 1, 2, IGNORE])),
    st.lists(st.integers(0, 3), min_size=3, max_size=3),
)
def test_the_tiers_of_a_merged_label_round_trip_through_its_document(layers, tier_of):
    """A merged label stored as (class document + "tiers" of the other tiers) gives back
    the mask and, at every labelled pixel, the tier it came from."""
    labels = list(zip(tier_of, layers, strict=True))
    merged, tiers = merge_with_tiers(labels)
    own = int(tiers.max()) if (tiers >= 0).any() else 0
    document = encode_class_mask(merged) | {"tiers": encode_tiers(tiers, own)}
    np.testing.assert_array_equal(decode_class_mask(document), merged)
    read = pixel_tiers(document, own)
    labelled = merged != IGNORE
    if read is None:  # nothing from another tier: every labelled pixel is the label's own
        assert set(np.unique(tiers[labelled]).tolist()) <= {own}
    else:
        np.testing.assert_array_equal(read[labelled], tiers[labelled])
    for tier in np.unique(tiers[labelled]).tolist():  # a lower tier only fills what is left
        higher = labelled & (tiers == tier)
        for t, layer in labels:
            if t > tier:
                assert (layer[higher] == IGNORE).all()


def test_merge_by_tier_of_dense_labels_is_the_highest_tier():
    low, high = np.zeros((3, 3), np.uint8), np.ones((3, 3), np.uint8)
    np.testing.assert_array_equal(merge_by_tier([(3, high), (0, low)]), high)


def test_merge_by_tier_refuses_labels_of_different_shapes():
    with pytest.raises(MaskFormatError, match="share its shape"):
        merge_by_tier([(0, np.zeros((2, 2), np.uint8)), (1, np.zeros((2, 3), np.uint8))])


def test_a_mask_without_background_round_trips():
    mask = np.full((2, 3), 2, np.uint8)
    np.testing.assert_array_equal(decode_class_mask(encode_class_mask(mask)), mask)


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"size": [4], "classes": {}},
        {"size": [2, 2], "classes": {"1": "@@@@"}},
        {"size": [2, 2], "classes": {"x": "04"}},
    ],
)
def test_malformed_inline_masks_are_rejected(bad):
    with pytest.raises(MaskFormatError):
        decode_class_mask(bad)


def test_overlapping_classes_are_rejected():
    full = encode_class_mask(np.ones((3, 3), np.uint8))["classes"]["1"]
    with pytest.raises(MaskFormatError, match="overlaps"):
        decode_class_mask({"size": [3, 3], "classes": {"1": full, "2": full}})


@settings(max_examples=100, deadline=None)
@given(
    masks=hnp.arrays(bool, st.tuples(st.integers(0, 5), st.integers(1, 30), st.integers(1, 30))),
    data=st.data(),
)
def test_instance_masks_round_trip_exactly_in_order_overlaps_included(masks, data):
    classes = np.array(
        data.draw(st.lists(st.integers(0, 300), min_size=len(masks), max_size=len(masks))), np.int64
    )
    covers = tuple(sorted(set(classes.tolist()) | {1}))
    back = decode_instances(encode_instances(InstanceMasks(masks, classes, covers)))
    np.testing.assert_array_equal(back.masks, masks)
    np.testing.assert_array_equal(back.classes, classes)
    assert back.covers == covers
    assert back.masks.shape == masks.shape and len(back) == len(masks)


@pytest.mark.parametrize(
    "encoded, message",
    [
        ({"size": [2, 2], "covers": [1]}, "expected size, covers and instances"),
        ({"size": [2, 2], "instances": []}, "expected size, covers and instances"),
        ({"size": [2, 2], "covers": [1], "instances": [{"class": 1}]}, "class and counts"),
        ({"size": [2, 2], "covers": [1], "instances": [{"class": -1, "counts": "4"}]}, "-1"),
        ({"size": [2, 2], "covers": [1], "instances": [{"class": 1, "counts": 7}]}, "decoded"),
    ],
)
def test_a_malformed_instance_mask_is_refused_with_what_is_wrong(encoded, message):
    with pytest.raises(MaskFormatError, match=message):
        decode_instances(encoded)


@settings(max_examples=30, deadline=None)
@given(
    volume=hnp.arrays(
        st.sampled_from([np.uint8, np.int16, np.uint16, np.int32, np.uint32]),
        st.tuples(st.integers(1, 6), st.integers(1, 9), st.integers(1, 9)),
        elements=st.sampled_from([0, 3, 120]),
    ),
    axis=st.sampled_from(["z", "y", "x"]),
)
def test_stack_class_counts_counts_each_phase_of_each_slice_by_its_map_position(volume, axis):
    import tempfile
    from pathlib import Path

    import tifffile

    from tomoloop.stacks.opener import open_stack

    phases = PhaseMap.parse("pore=0,cbd=120,nmc=3")  # positions 0, 1, 2
    order = "zyx".index(axis)
    expected = np.stack(
        [[(np.take(volume, i, order) == v).sum() for v in (0, 120, 3)]
         for i in range(volume.shape[order])]
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.tif"
        tifffile.imwrite(path, volume, photometric="minisblack", metadata={"axes": "ZYX"})
        with open_stack(path) as labels:
            np.testing.assert_array_equal(stack_class_counts(labels, phases, axis), expected)


def test_stack_class_counts_names_the_slice_with_an_undeclared_value(tmp_path):
    import tifffile

    from tomoloop.errors import StackValidationError
    from tomoloop.stacks.opener import open_stack

    volume = np.zeros((4, 5, 5), np.uint8)
    volume[2, 1, 1] = 9
    tifffile.imwrite(tmp_path / "labels.tif", volume, photometric="minisblack")
    with open_stack(tmp_path / "labels.tif") as labels, pytest.raises(
        StackValidationError, match=r"labels.tif z=2 holds label values \[9\]"
    ):
        stack_class_counts(labels, PhaseMap.parse("pore=0,nmc=1"))
