"""``bench/shift_scenarios.py``: each rescaled or re-imaged height segment is where the
scenario says, imaged as it says, and the rest of the target is untouched."""

import numpy as np
import pytest
from conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("shift_scenarios")


@pytest.fixture(scope="module")
def data(bench):
    """The shared/data folder every scenario is made from (the tests skip without it: its
    README forbids copying the volumes into the project)."""
    if not bench.DATA.is_dir():
        pytest.skip(f"the reference volumes are not at {bench.DATA}")
    return bench.DATA


def _scenario(data, scenario, segment):
    """The scenario's source (gray, labels), target (gray, labels) and the target's z
    slices in its shifted height ``segment`` (a bool mask)."""
    (source_gray, source), (gray, labels) = scenario(data)
    assert gray.shape == labels.shape and gray.dtype == source_gray.dtype
    inside = np.zeros(len(gray), bool)
    inside[segment] = True
    return (source_gray, source), (gray, labels), inside


def _assert_imaged_as(bench, gray, labels, where, **imaging):
    """``gray`` is ``forward_model(labels, seed=2, **imaging)`` to the bit at the z slices
    ``where`` (a bool mask)."""
    as_imaged = bench.forward_model(labels, seed=2, **imaging)
    np.testing.assert_array_equal(gray[where], as_imaged[where])


def _means(gray, labels):
    """Each phase's mean grey value (phases 0 … the largest in ``labels``)."""
    return [float(gray[labels == phase].mean()) for phase in range(int(labels.max()) + 1)]


def test_the_segment_scenario_shifts_one_height_segment_of_the_target_only(bench, data):
    source, (gray, labels), inside = _scenario(data, bench.segment, bench.SEGMENT)
    normal = _means(*source)[1]  # NMC
    assert abs(_means(gray[~inside], labels[~inside])[1] - normal) < 0.01 * normal
    assert _means(gray[inside], labels[inside])[1] < 0.8 * normal  # NMC near the binder


def test_the_rescaled_scenario_puts_one_segments_binder_on_the_sources_pore_level(bench, data):
    source, (gray, labels), inside = _scenario(data, bench.rescaled, bench.SEGMENT)
    _assert_imaged_as(bench, gray, labels, ~inside)
    pore, _, binder = _means(*source)
    shifted = _means(gray[inside], labels[inside])
    # after the PSF: the segment's binder on the sources' pore, its NMC on their binder
    assert abs(shifted[2] - pore) < 0.05 * pore
    assert abs(shifted[1] - binder) < 0.05 * binder
    assert shifted[0] < 0.7 * pore  # its pore darker than any source phase


def test_the_weave_rescaled_scenario_puts_one_segments_tows_on_the_sources_background(bench, data):
    source, (gray, labels), inside = _scenario(data, bench.weave_rescaled, bench.WEAVE_SEGMENT)
    scanned = bench.tifffile.imread(data / "puma_small_weave_gray.tif")[75:]
    np.testing.assert_array_equal(gray[~inside], scanned[~inside])
    background = _means(*source)[0]
    tows = gray[inside][labels[inside] == 1]  # class 2 hardly occurs in the segment
    assert abs(float(tows.mean()) - background) < 0.1 * background
    assert _means(gray[inside], labels[inside])[0] < 0.5 * background


def test_the_wetted_scenario_puts_one_segments_pore_on_the_binders_level(bench, data):
    source, (gray, labels), inside = _scenario(data, bench.wetted, bench.WET)
    _assert_imaged_as(bench, gray, labels, ~inside)
    _assert_imaged_as(bench, gray, labels, inside, grey_levels=bench.WET_LEVELS)  # one draw
    pore, nmc, binder = _means(*source)
    wet = _means(gray[inside], labels[inside])
    # after the PSF: the wet pore nearer the sources' binder than their pore, NMC kept
    assert abs(wet[0] - binder) < abs(wet[0] - pore)
    assert abs(wet[1] - nmc) < 0.01 * nmc
    # one nominal level: what still parts them is the PSF's mixing with NMC, and shape
    assert abs(wet[0] - wet[2]) < 0.5 * (binder - pore)


def test_the_ellipsoids_scenario_puts_one_segments_solid_nearer_the_sources_background(bench, data):
    source, (gray, labels), inside = _scenario(data, bench.ellipsoids, bench.SEGMENT)
    _assert_imaged_as(bench, gray, labels, ~inside, grey_levels=bench.ELLIPSOID_LEVELS)
    background, solid = _means(*source)
    halved = _means(gray[inside], labels[inside])
    assert abs(halved[1] - background) < abs(halved[1] - solid)
    assert halved[0] < 0.6 * background  # its background darker than either source phase


@pytest.fixture(scope="module")
def al_bench():
    return load_bench("al_efficiency")


@pytest.mark.parametrize(
    ("name", "shares"),
    [
        ("segment", {"pool": [13, 52], "val": [0, 14], "test": [7, 14]}),
        ("rescaled", {"pool": [13, 52], "val": [0, 14], "test": [7, 14]}),
        ("ellipsoids", {"pool": [13, 52], "val": [0, 14], "test": [7, 14]}),
        # none of these two targets' test slices is shifted: their runs measured the rest
        ("wetted", {"pool": [13, 52], "val": [7, 14], "test": [0, 14]}),
        ("weave_rescaled", {"pool": [12, 42], "val": [5, 12], "test": [0, 15]}),
    ],
)
def test_where_each_shifted_segment_falls_in_the_targets_split(
    bench, al_bench, data, tmp_path, name, shares
):
    source, target = al_bench.write_scenario(name, data, tmp_path)
    split = al_bench.read_shift_data([source], target, bench.SCENARIOS[name][1])
    assert al_bench.shifted_slices(split.target, bench.SHIFTED[name]) == shares
