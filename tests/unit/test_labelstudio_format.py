"""Label Studio's formats: brush RLE of class masks, the labelling view."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tomoloop.adapters.labelstudio import (
    AnnotationRejected,
    brush_results,
    labeling_config,
    mask_from_results,
)

NAMES = ("pore", "nmc", "cbd", "crack")


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.uint8,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=48),
        elements=st.integers(0, 3),
        fill=st.nothing(),
    )
)
def test_class_masks_round_trip_exactly_through_brush_rle(mask):
    results = brush_results(mask, NAMES)
    assert {r["value"]["brushlabels"][0] for r in results} == {NAMES[c] for c in np.unique(mask)}
    np.testing.assert_array_equal(mask_from_results(results, mask.shape, NAMES), mask)


def test_unknown_labels_and_broken_rle_are_rejected_with_the_reason():
    mask = np.ones((8, 8), np.uint8)
    results = brush_results(mask, NAMES)
    results[0]["value"]["brushlabels"] = ["dust"]
    with pytest.raises(AnnotationRejected, match=r"'dust'.*not one of the phases"):
        mask_from_results(results, (8, 8), NAMES)
    results = brush_results(mask, NAMES)
    with pytest.raises(AnnotationRejected, match="does not decode to a 9×8 mask"):
        mask_from_results(results, (9, 8), NAMES)


def test_labelling_view_has_a_hotkey_per_phase_and_neighbour_context():
    root = ET.fromstring(labeling_config(NAMES[:3], context=2, instructions="NMC is bright"))
    labels = root.findall(".//BrushLabels/Label")
    assert [(x.get("value"), x.get("hotkey")) for x in labels] == [
        ("pore", "1"),
        ("nmc", "2"),
        ("cbd", "3"),
    ]
    images = [x.get("value") for x in root.iter("Image")]
    assert images == ["$before_2", "$before_1", "$after_1", "$after_2", "$image"]
    assert root.find(".//Text").get("value") == "NMC is bright"
