"""``bench/al_efficiency.py``'s paired comparison: each arm's AUC against the best control,
seed by seed, from a benchmark document."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tomoloop.active.domain_shift import summarise

SPEC = importlib.util.spec_from_file_location(
    "al_efficiency", Path(__file__).resolve().parents[2] / "bench" / "al_efficiency.py"
)


@pytest.fixture(scope="module")
def bench():
    module = importlib.util.module_from_spec(SPEC)
    SPEC.loader.exec_module(module)
    return module


def test_each_arm_is_compared_seed_by_seed_with_the_control_of_the_highest_auc(bench):
    # Seed 1 starts far lower than seed 0 for every arm (its initial model): BALD is ahead
    # of the best control by 0.02 on both seeds although its seeds' spread is 0.2.
    slices = [[(0, 0.6), (100, 0.7)], [(0, 0.4), (100, 0.5)]]
    regions = [[(0, 0.6), (100, 0.65)], [(0, 0.4), (100, 0.45)]]
    bald = [[(0, 0.6), (100, 0.74)], [(0, 0.4), (100, 0.54)]]
    doc = summarise(0.5, 0.7, {"random/slice": slices, "random/region": regions, "bald": bald})
    paired = bench.against_best_control(doc)
    assert set(paired) == {"random/region", "bald"}
    assert paired["bald"]["control"] == "random/slice"
    assert paired["bald"]["difference"] == pytest.approx(0.02)
    assert paired["bald"]["standard_error"] == pytest.approx(0.0, abs=1e-12)
    assert (paired["bald"]["seeds_ahead"], paired["bald"]["seeds"]) == (2, 2)
    assert paired["random/region"]["difference"] == pytest.approx(-0.025)
    assert paired["random/region"]["seeds_ahead"] == 0


def test_one_seed_has_no_standard_error_and_no_control_no_comparison(bench):
    doc = summarise(
        0.5, 0.7, {"random/region": [[(0, 0.5), (10, 0.6)]], "bald": [[(0, 0.5), (10, 0.7)]]}
    )
    assert bench.against_best_control(doc)["bald"]["standard_error"] is None
    assert bench.against_best_control(summarise(0.5, 0.7, {"bald": [[(0, 0.5)]]})) == {}


def test_the_ratios_count_a_crossing_and_a_crossing_that_holds(bench):
    # BALD regions touch the level (0.69) at 100 px and fall back; they hold it from 300 px.
    # Whole slices reach it at 200 px and hold it; random regions never reach it.
    bald = [[(0, 0.5), (100, 0.70), (200, 0.68), (300, 0.70), (400, 0.71)]]
    slices = [[(0, 0.5), (200, 0.69), (400, 0.72)]]
    regions = [[(0, 0.5), (100, 0.6), (200, 0.6), (300, 0.6), (400, 0.6)]]
    doc = summarise(
        0.5, 0.7, {"random/slice": slices, "random/region": regions, "bald/region": bald}
    )
    assert bench.ratios(doc) == {
        "best_arm_vs_best_control": 0.5,  # 100 / 200
        "best_region_vs_best_slice": 0.5,
        "best_arm_vs_best_control_held": 1.5,  # 300 / 200
        "best_region_vs_best_slice_held": 1.5,
    }
    doc["strategies"]["random/slice"]["pixels_to_95_held"] = None
    assert bench.ratios(doc)["best_arm_vs_best_control_held"] is None


def _scenario(bench, scenario, segment):
    """The scenario's source (gray, labels), target (gray, labels) and the target's z
    slices in its shifted height ``segment`` (a bool mask)."""
    if not bench.DATA.is_dir():
        pytest.skip(f"the reference volumes are not at {bench.DATA}")
    (source_gray, source), (gray, labels) = scenario(bench.DATA)
    assert gray.shape == labels.shape and gray.dtype == source_gray.dtype
    inside = np.zeros(len(gray), bool)
    inside[segment] = True
    return (source_gray, source), (gray, labels), inside


def _means(gray, labels):
    """Each of the three phases' mean grey value."""
    return [float(gray[labels == phase].mean()) for phase in range(3)]


def test_the_segment_scenario_shifts_one_height_segment_of_the_target_only(bench):
    source, (gray, labels), inside = _scenario(bench, bench.segment, bench.SEGMENT)
    normal = _means(*source)[1]  # NMC
    assert abs(_means(gray[~inside], labels[~inside])[1] - normal) < 0.01 * normal
    assert _means(gray[inside], labels[inside])[1] < 0.8 * normal  # NMC near the binder


def test_the_rescaled_scenario_puts_one_segments_binder_on_the_sources_pore_level(bench):
    source, (gray, labels), inside = _scenario(bench, bench.rescaled, bench.SEGMENT)
    as_source = bench.forward_model(labels, seed=2)
    np.testing.assert_array_equal(gray[~inside], as_source[~inside])
    pore, _, binder = _means(*source)
    shifted = _means(gray[inside], labels[inside])
    # after the PSF: the segment's binder on the sources' pore, its NMC on their binder
    assert abs(shifted[2] - pore) < 0.05 * pore
    assert abs(shifted[1] - binder) < 0.05 * binder
    assert shifted[0] < 0.7 * pore  # its pore darker than any source phase


def test_the_weave_rescaled_scenario_puts_one_segments_tows_on_the_sources_background(bench):
    source, (gray, labels), inside = _scenario(bench, bench.weave_rescaled, bench.WEAVE_SEGMENT)
    scanned = bench.tifffile.imread(bench.DATA / "puma_small_weave_gray.tif")[75:]
    np.testing.assert_array_equal(gray[~inside], scanned[~inside])
    background = _means(*source)[0]
    tows = gray[inside][labels[inside] == 1]  # class 2 hardly occurs in the segment
    assert abs(float(tows.mean()) - background) < 0.1 * background
    assert _means(gray[inside], labels[inside])[0] < 0.5 * background
