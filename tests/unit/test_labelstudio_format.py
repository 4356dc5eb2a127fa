"""Label Studio's formats: brush RLE of class and instance masks, the labelling view."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from label_studio_sdk.converter import brush

from tomoloop.labels.masks import InstanceMasks
from tomoloop.labels.studio_json import (
    AnnotationRejected,
    brush_results,
    decode_brush_rle,
    instance_results,
    instances_from_results,
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


def test_unlabelled_pixels_are_sent_unpainted_and_labelled_ones_exactly():
    from tomoloop.labels.phases import IGNORE

    mask = np.full((6, 7), IGNORE, np.uint8)
    mask[1:3, 2:5] = 2
    mask[4, :] = 0  # labelled pore: painted as pore, unlike the unlabelled rest
    results = brush_results(mask, NAMES)
    assert sorted(r["value"]["brushlabels"][0] for r in results) == ["cbd", "pore"]
    painted = mask_from_results(results, mask.shape, NAMES)
    labelled = mask != IGNORE
    np.testing.assert_array_equal(painted[labelled], mask[labelled])
    covered = sum(decode_brush_rle(r["value"]["rle"]).reshape(6, 7, 4)[..., 3] > 0 for r in results)
    np.testing.assert_array_equal(covered, labelled)  # each labelled pixel once, no other


def _rle_pack(values: list[int], word: int, sizes: list[int], runs: list[tuple[bool, int]]) -> list:
    """An rle-pack stream written independently of the SDK's encoder: ``runs`` are
    (repeat, length) records that cut ``values`` in order (repeats must be constant).
    """
    bits = f"{len(values):032b}{word - 1:05b}" + "".join(f"{z - 1:04b}" for z in sizes)
    i = 0
    for repeat, n in runs:
        index = next(k for k, z in enumerate(sizes) if n - 1 < 2**z)
        bits += f"{int(repeat)}{index:02b}{n - 1:0{sizes[index]}b}"
        chunk = values[i : i + n][:1] if repeat else values[i : i + n]
        bits += "".join(f"{v:0{word}b}" for v in chunk)
        i += n
    bits += "0" * (-len(bits) % 8)
    return [int(bits[k : k + 8], 2) for k in range(0, len(bits), 8)]


@st.composite
def _streams(draw):
    word = draw(st.integers(1, 8))
    sizes = draw(st.lists(st.integers(1, 16), min_size=4, max_size=4))
    longest = 2 ** max(sizes)
    values, runs = [], []
    for _ in range(draw(st.integers(1, 12))):
        repeat = draw(st.booleans())
        n = draw(st.integers(1, min(longest, 40)))
        if repeat:
            values += [draw(st.integers(0, 2**word - 1))] * n
        else:
            values += draw(st.lists(st.integers(0, 2**word - 1), min_size=n, max_size=n))
        runs.append((repeat, n))
    return values, _rle_pack(values, word, sizes, runs)


@settings(max_examples=150, deadline=None)
@given(_streams())
def test_brush_rle_decodes_literal_and_repeat_records_as_the_sdk_does(stream):
    values, rle = stream
    np.testing.assert_array_equal(decode_brush_rle(rle), values)
    np.testing.assert_array_equal(brush.decode_rle(rle), values)  # the reference agrees


def test_a_truncated_brush_rle_is_an_error():
    rle = brush.mask2rle(np.arange(64, dtype=np.uint8).reshape(8, 8))
    for cut in (3, len(rle) // 2, len(rle) - 1):
        with pytest.raises(ValueError):
            decode_brush_rle(rle[:cut])


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


def test_a_header_claiming_another_size_is_refused_before_decoding():
    rle = brush.mask2rle(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="says 256 values, not 4000000"):
        decode_brush_rle(rle, expected=4_000_000)
    assert decode_brush_rle(rle, expected=256).shape == (256,)


@settings(max_examples=40, deadline=None)
@given(
    masks=hnp.arrays(bool, st.tuples(st.integers(0, 4), st.integers(1, 24), st.integers(1, 24))),
    data=st.data(),
)
def test_particles_round_trip_exactly_one_region_each(masks, data):
    classes = data.draw(st.lists(st.integers(1, 3), min_size=len(masks), max_size=len(masks)))
    drawn = InstanceMasks(masks, np.array(classes, np.int64), (1, 2, 3))
    results = instance_results(drawn, NAMES)
    assert len({r["id"] for r in results}) == len(masks)
    back = instances_from_results(results, masks.shape[1:], NAMES, NAMES[1:])
    assert back.covers == (1, 2, 3)
    painted = masks.any(axis=(1, 2))  # an empty region is no particle
    np.testing.assert_array_equal(back.masks, masks[painted])
    np.testing.assert_array_equal(back.classes, np.array(classes, np.int64)[painted])


def test_a_drawing_covers_the_asked_phases_and_unknown_ones_are_rejected():
    particle = InstanceMasks(np.ones((1, 4, 4), bool), np.array([2]), (2,))
    results = instance_results(particle, NAMES)
    kept = instances_from_results(results, (4, 4), NAMES, ["nmc"])  # a cbd region, unasked
    assert (kept.covers, kept.classes.tolist()) == ((1,), [2])
    with pytest.raises(AnnotationRejected, match=r"particles of \[\], which are not phases"):
        instances_from_results(results, (4, 4), NAMES, [])
    with pytest.raises(AnnotationRejected, match=r"particles of \['grain'\]"):
        instances_from_results(results, (4, 4), NAMES, ["grain"])
    results[0]["value"]["brushlabels"] = ["dust"]
    with pytest.raises(AnnotationRejected, match=r"'dust'.*not one of the phases"):
        instances_from_results(results, (4, 4), NAMES, ["cbd"])
