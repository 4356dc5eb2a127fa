import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tomoloop.masks import (
    InstanceMasks,
    MaskFormatError,
    decode_class_mask,
    decode_instances,
    encode_class_mask,
    encode_instances,
)


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
