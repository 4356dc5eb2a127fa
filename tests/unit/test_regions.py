import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tomoloop.active.oracle import Behaviour
from tomoloop.active.regions import (
    Region,
    RegionCandidate,
    RegionConstraints,
    answer_region,
    labelled_tile,
    region_distance,
    region_features,
    region_seconds,
    score_regions,
    score_stack_regions,
    tile_plane,
)
from tomoloop.active.scoring import ScoreOptions, features_of
from tomoloop.active.selection import LeadTimeModel, SelectionError
from tomoloop.active.strategies import STRATEGIES, get
from tomoloop.labels.masks import decode_class_mask, encode_class_mask, labelled_pixels
from tomoloop.labels.phases import IGNORE
from tomoloop.networks.registry import build_model

NAMES = ("pore", "nmc", "cbd")


@settings(max_examples=80, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70), size=st.integers(1, 40))
def test_tiles_cover_the_plane_exactly_once(h, w, size):
    counts = np.zeros((h, w), int)
    tiles = tile_plane((h, w), size, volume=3, plane="y", index=5)
    for r in tiles:
        counts[r.window] += 1
        assert (r.volume, r.plane, r.index, r.size) == (3, "y", 5, size)
    assert (counts == 1).all()
    assert sum(r.pixels((h, w)) for r in tiles) == h * w
    assert len(set(tiles)) == len(tiles)


@given(
    h=st.integers(1, 50),
    w=st.integers(1, 50),
    y0=st.integers(0, 49),
    x0=st.integers(0, 49),
    size=st.integers(1, 40),
    seed=st.integers(0, 5),
)
def test_a_regions_label_gives_back_its_tile(h, w, y0, x0, size, seed):
    truth = np.random.default_rng(seed).integers(0, 3, (h, w)).astype(np.uint8)
    region = Region(0, "z", 0, y0 % h, x0 % w, size)
    sparse = region.keep(truth)
    tile = labelled_tile(sparse)
    if region.pixels((h, w)) == h * w:  # the tile covers the slice: a dense label
        assert tile is None
        return
    again = Region(0, "z", 0, *tile)
    np.testing.assert_array_equal(again.keep(truth), sparse)  # the same pixels asked for
    assert again.size <= size


def test_a_label_without_labelled_pixels_has_no_tile():
    assert labelled_tile(np.full((4, 4), IGNORE, np.uint8)) is None


def test_distance_is_measured_within_a_slice_and_infinite_across_slices():
    a = Region(0, "z", 7, 0, 0, 4)
    assert region_distance(a, Region(0, "z", 7, 3, 4, 4)) == 5.0
    assert region_distance(a, a) == 0.0
    for other in (
        Region(0, "z", 8, 0, 0, 4),
        Region(0, "y", 7, 0, 0, 4),
        Region(1, "z", 7, 0, 0, 4),
    ):
        assert region_distance(a, other) == np.inf


@pytest.mark.parametrize("kwargs", [{"plane": "q"}, {"size": 0}, {"y0": -1}, {"index": -2}])
def test_a_region_outside_any_slice_is_refused(kwargs):
    fields = {"volume": 0, "plane": "z", "index": 0, "y0": 0, "x0": 0, "size": 8} | kwargs
    with pytest.raises(SelectionError):
        Region(**fields)


def test_constraints_refuse_a_budget_without_pixels_and_a_negative_distance():
    with pytest.raises(SelectionError, match="pixel budget"):
        RegionConstraints(0)
    with pytest.raises(SelectionError, match="distance"):
        RegionConstraints(10, -1.0)
    with pytest.raises(SelectionError, match="region size"):
        tile_plane((8, 8), 0)


def _region_pool(scores, depth=6, side=24, size=8, seed=0):
    rng = np.random.default_rng(seed)
    tiles = [r for z in range(depth) for r in tile_plane((side, side), size, z % 2, "z", z)]
    return [
        RegionCandidate(
            r,
            slice_id=r.index,
            pixels=r.pixels((side - 3, side)),  # the last row of tiles is cut short
            score=s,
            foreground=float(rng.random()),
            boundary=float(rng.random()),
            embedding=tuple(rng.normal(size=3)),
        )
        for r, s in zip(tiles, scores, strict=False)
    ]


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.floats(0, 1), min_size=1, max_size=100),
    budget=st.integers(1, 500),
    distance=st.floats(0, 20),
    name=st.sampled_from(sorted(STRATEGIES)),
    taken_count=st.integers(0, 3),
    lead=st.booleans(),
    one_per_slice=st.booleans(),
)
def test_every_strategy_keeps_the_pixel_budget_and_the_distance(
    scores, budget, distance, name, taken_count, lead, one_per_slice
):
    pool = _region_pool(scores)
    taken, free = pool[:taken_count], pool[taken_count:]
    limits = RegionConstraints(budget, distance, one_per_slice)
    lead_time = LeadTimeModel(5.0, 30.0) if lead else None
    chosen = get(name).select(free, limits, taken, np.random.default_rng(1), lead_time)
    assert sum(c.pixels for c in chosen) <= budget
    assert len({c.region for c in chosen}) == len(chosen)
    if one_per_slice:
        assert len({c.slice_id for c in chosen}) == len(chosen)
    assert all(c in free for c in chosen)
    for a, b in itertools.combinations(chosen, 2):
        assert region_distance(a.region, b.region) >= distance
    for a in chosen:
        assert all(region_distance(a.region, t.region) >= distance for t in taken)


def test_one_region_per_slice_passes_over_a_second_tile_of_a_chosen_slice():
    pool = _region_pool([0.9, 0.8, 0.1] + [0.0] * 6 + [0.5])  # tiles 0-8 on z 0, 9 on z 1
    assert [c.score for c in get("entropy").select(pool, RegionConstraints(128))] == [0.9, 0.8]
    chosen = get("entropy").select(pool, RegionConstraints(128, one_per_slice=True))
    assert [(c.score, c.axis, c.index) for c in chosen] == [(0.9, "z", 0), (0.5, "z", 1)]


def test_uncertainty_takes_the_most_uncertain_regions_that_fit():
    pool = _region_pool([0.1, 0.9, 0.5, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4])
    chosen = get("entropy").select(pool, RegionConstraints(2 * 64))
    assert [c.score for c in chosen] == [0.9, 0.8]
    # Tiles 3 and 5 (0.8, 0.7) are 11.3 px from tile 1 (0.9): a distance of 12 keeps them
    # out; tile 7 (0.6, 16 px away) is cut short to 40 px and fits the 64 px left.
    spread = get("entropy").select(pool, RegionConstraints(2 * 64, 12.0))
    assert [c.score for c in spread] == [0.9, 0.6]
    assert [c.pixels for c in spread] == [64, 40]


def test_the_lead_time_model_prices_a_region_by_its_boundary():
    cheap = RegionCandidate(Region(0, "z", 0, 0, 0, 8), 0, 64, score=0.5, boundary=0.0)
    dear = RegionCandidate(Region(0, "z", 9, 0, 0, 8), 9, 64, score=0.6, boundary=0.5)
    lead = LeadTimeModel(10.0, 100.0)
    assert get("entropy").select([cheap, dear], RegionConstraints(64))[0] is dear
    assert get("entropy").select([cheap, dear], RegionConstraints(64), (), None, lead)[0] is cheap


def test_oracle_answer_labels_exactly_the_region_inside_the_slice():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (20, 30)).astype(np.uint8)
    for region in tile_plane(truth.shape, 12):
        mask = answer_region(truth, region, NAMES)
        inside = region.mask(truth.shape)
        assert (mask != IGNORE).sum() == region.pixels(truth.shape)
        assert (mask[inside] == truth[inside]).all() and (mask[~inside] == IGNORE).all()
        assert labelled_pixels(encode_class_mask(mask)) == region.pixels(truth.shape)
        assert (decode_class_mask(encode_class_mask(mask)) == mask).all()


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(4, 40),
    w=st.integers(4, 40),
    size=st.integers(1, 16),
    noise=st.floats(0, 1),
    pick=st.integers(0, 10_000),
)
def test_oracle_answer_has_region_pixels_labelled_whatever_the_behaviour(h, w, size, noise, pick):
    truth = np.random.default_rng(pick).integers(0, 3, (h, w)).astype(np.uint8)
    tiles = tile_plane((h, w), size)
    region = tiles[pick % len(tiles)]
    behaviour = Behaviour(bias={"cbd": 1}, noise=noise)
    mask = answer_region(truth, region, NAMES, behaviour, np.random.default_rng(pick))
    expected = min(size, h - region.y0) * min(size, w - region.x0)
    assert (mask != IGNORE).sum() == expected == region.pixels((h, w))


def test_region_seconds_follow_the_boundary_inside_the_tile():
    truth = np.zeros((16, 16), np.uint8)
    truth[:, 12:] = 1
    flat, edged = Region(0, "z", 0, 0, 0, 8), Region(0, "z", 0, 8, 8, 8)
    assert region_seconds(truth, flat) == Behaviour().base_s
    assert region_seconds(truth, edged) > region_seconds(truth, flat)


def test_region_features_are_the_slice_features_of_each_tile():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), (12, 20)).transpose(2, 0, 1)
    unsure = rng.random((12, 20))
    options = ScoreOptions()
    tiles = tile_plane((12, 20), 8)
    found = region_features(unsure, probs, tiles, 4, options)
    assert [c.pixels for c in found] == [64, 64, 32, 32, 32, 16]
    for c in found:
        rows, columns = c.region.window
        f = features_of(unsure[rows, columns], probs[:, rows, columns], options)
        assert (c.score, c.foreground, c.boundary) == (f.score, f.foreground, f.boundary)
        assert c.slice_id == 4 and c.embedding is None


@pytest.mark.usefixtures("one_thread")
def test_score_regions_gives_every_tile_an_embedding_when_asked():
    torch.manual_seed(0)
    model = build_model("unet", 1, 3, base=4, depth=2)
    image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    tiles = tile_plane(image.shape, 16)
    found = score_regions(model, image, tiles, 0, ScoreOptions("entropy", tile=32, embed=True))
    assert [c.region for c in found] == tiles
    assert all(len(c.embedding) == 16 for c in found)
    assert np.isclose(np.linalg.norm(found[0].embedding), 1.0)
    chosen = get("hybrid").select(found, RegionConstraints(3 * 256), (), None)
    assert sum(c.pixels for c in chosen) <= 3 * 256 and len(chosen) >= 2


@pytest.mark.usefixtures("one_thread")
def test_a_stack_is_scored_tile_by_tile_as_its_slices_are_one_by_one(tmp_path):
    import tifffile

    from tomoloop.inference.predict import normalise
    from tomoloop.stacks.opener import open_stack
    from tomoloop.stacks.window import percentile_window

    torch.manual_seed(0)
    model = build_model("unet", 1, 3, base=4, depth=2)
    grey = np.random.default_rng(1).integers(0, 255, (5, 20, 24)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "grey.tif", grey)
    options = ScoreOptions("entropy", tile=16, overlap=4)
    with open_stack(tmp_path / "grey.tif") as stack:
        streamed = list(score_stack_regions(model, stack, options, "z", {2: 70, 0: 50}, 16, 7))
        window = percentile_window(stack)
    assert [tiles[0].slice_id for tiles in streamed] == [50, 70]  # in index order
    for tiles, z in zip(streamed, (0, 2), strict=True):
        expected = score_regions(
            model, normalise(grey[z], window), tile_plane((20, 24), 16, 7, "z", z), 0, options
        )
        assert [(c.region, c.pixels) for c in tiles] == [(c.region, c.pixels) for c in expected]
        assert [c.score for c in tiles] == pytest.approx([c.score for c in expected])
        assert {(c.volume, c.axis, c.index) for c in tiles} == {(7, "z", z)}
