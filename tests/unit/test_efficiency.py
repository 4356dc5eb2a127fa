import json

import numpy as np
import pytest
import tifffile
from hypothesis import given
from hypothesis import strategies as st

from tomoloop.active.label_efficiency import (
    BenchmarkError,
    EfficiencySetup,
    area_under,
    efficiency,
    labels_to_hold,
    labels_to_reach,
    labels_to_reach_interpolated,
    mean_curve,
    stack_split,
)
from tomoloop.labels.phases import PhaseMap
from tomoloop.stacks.opener import open_stack
from tomoloop.training.trainer import TrainConfig

TINY = TrainConfig(epochs=1, patch=32, batch=4, patches_per_epoch=8, overlap=8, patience=0)


@given(
    st.lists(st.floats(0, 1), min_size=1, max_size=12),
    st.floats(0, 1),
)
def test_a_held_crossing_is_a_crossing_after_which_the_curve_never_drops_below(scores, target):
    curve = [(10 * k, s) for k, s in enumerate(scores)]
    held, reached = labels_to_hold(curve, target), labels_to_reach(curve, target)
    if held is None:
        assert scores[-1] < target
    else:
        assert reached is not None and reached <= held
        assert all(s >= target for x, s in curve if x >= held)
        assert held == 0 or curve[held // 10 - 1][1] < target  # the earliest such point


@given(
    st.lists(st.floats(0, 1), min_size=1, max_size=12),
    st.floats(0, 1),
    st.sampled_from(["linear", "doubling"]),
)
def test_an_interpolated_crossing_lies_between_the_grids_crossing_and_the_point_before(
    scores, target, grid
):
    xs = [1024 * (k if grid == "linear" else 2**k) for k in range(len(scores))]
    curve = list(zip(xs, scores, strict=True))
    reached = labels_to_reach(curve, target)
    between = labels_to_reach_interpolated(curve, target)
    if reached is None:
        assert between is None
    else:
        k = xs.index(reached)
        assert (xs[k - 1] if k else reached) <= between <= reached


def test_an_interpolated_crossing_is_read_in_log_pixels_and_linearly_from_zero():
    grid = [(0, 0.5), (1000, 0.6), (2000, 0.7), (4000, 0.9)]
    assert labels_to_reach_interpolated(grid, 0.65) == pytest.approx(1000 * 2**0.5)
    assert labels_to_reach_interpolated(grid, 0.8) == pytest.approx(2000 * 2**0.5)
    assert labels_to_reach_interpolated(grid, 0.55) == pytest.approx(500)
    assert labels_to_reach_interpolated(grid, 0.7) == 2000  # on a point
    assert labels_to_reach_interpolated(grid, 0.4) == 0  # at the first point
    assert labels_to_reach_interpolated(grid, 1) is None
    assert labels_to_reach_interpolated([(0, 0.5), (100, float("nan")), (200, 0.8)], 0.7) == 200


def test_curve_arithmetic():
    a, b = [(2, 0.5), (4, 0.7), (6, 0.9)], [(2, 0.3), (4, 0.7), (6, 0.7)]
    assert mean_curve([a, b]) == [(2, pytest.approx(0.4)), (4, 0.7), (6, pytest.approx(0.8))]
    assert labels_to_reach(a, 0.7) == 4 and labels_to_reach(a, 0.95) is None
    assert area_under([(0, 0.0), (10, 1.0)]) == pytest.approx(0.5)
    assert area_under(a) == pytest.approx(0.7)
    assert area_under([(3, 0.4)]) == 0.4
    assert area_under([(0, 0.0), (10, 1.0)], upto=5) == pytest.approx(0.25)  # cut at 0.5
    assert area_under(a, upto=4) == pytest.approx(0.6) and area_under(a, upto=99) == area_under(a)
    assert area_under(a, upto=2) == 0.5


@pytest.fixture
def split(tmp_path, electrode_volume):
    rng = np.random.default_rng(0)
    gray = np.clip(electrode_volume * 80 + 20 + rng.normal(0, 6, electrode_volume.shape), 0, 255)
    tifffile.imwrite(tmp_path / "gray.tif", gray.astype(np.uint8))
    tifffile.imwrite(tmp_path / "labels.tif", electrode_volume)
    with open_stack(tmp_path / "gray.tif") as g, open_stack(tmp_path / "labels.tif") as lab:
        return stack_split(g, lab, PhaseMap.parse("pore=0,nmc=1,cbd=2"))


def test_a_phase_found_only_at_the_stack_ends_is_in_the_val_and_test_slices(tmp_path):
    labels = np.zeros((54, 16, 16), np.uint8)
    labels[:, :, 8:] = 1
    labels[:14, :4, :4] = labels[47:, :4, :4] = 2  # as the PuMA weave's phase 2
    tifffile.imwrite(tmp_path / "gray.tif", labels * 60)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    with open_stack(tmp_path / "gray.tif") as g, open_stack(tmp_path / "labels.tif") as lab:
        split = stack_split(g, lab, PhaseMap.parse("a=0,b=1,c=2"))
    for part in (split.val, split.test):
        assert sum(int((s.labels == 2).sum()) for s in part) > 0


def test_the_split_names_each_parts_z_slices_and_they_never_overlap(split, electrode_volume):
    parts = split.pool_z, split.val_z, split.test_z
    assert [len(z) for z in parts] == [len(split.pool), len(split.val), len(split.test)]
    assert len(set().union(*parts)) == sum(len(z) for z in parts)
    for slices, zs in zip((split.pool, split.val, split.test), parts, strict=True):
        for labelled, z in zip(slices, zs, strict=True):
            np.testing.assert_array_equal(labelled.labels, electrode_volume[z])


def test_every_strategy_starts_alike_and_labels_budget_slices_per_round(split):
    assert len(split.pool) + len(split.val) + len(split.test) <= 20 and split.test
    setup = EfficiencySetup(
        ("random", "bald", "coreset"),
        seeds=1,
        rounds=2,
        budget=2,
        initial=2,
        min_gap=1,
        options={"base": 4, "depth": 2},
        train=TINY,
    )
    seen = []
    document = efficiency(split, setup, on_curve=lambda *a: seen.append(a[:2]))
    assert seen == [("random", 0), ("bald", 0), ("coreset", 0)]
    assert 0 <= document["full_data_miou"] <= 1 and document["pool_slices"] == len(split.pool)
    firsts = set()
    for result in document["strategies"].values():
        assert [n for n, _ in result["curve"]] == [2, 4, 6]
        firsts.add(result["curve"][0][1])
        assert result["auc"] == pytest.approx(area_under([tuple(p) for p in result["curve"]]))
    assert len(firsts) == 1  # one shared starting model per seed
    json.dumps(document)  # the document is plain JSON


def test_a_setup_refuses_counts_out_of_range_all_in_one_message():
    with pytest.raises(BenchmarkError, match="seeds 0 must be ≥ 1; rounds 0 must be ≥ 1"):
        EfficiencySetup(seeds=0, rounds=0)
    with pytest.raises(BenchmarkError, match="budget 0 must be ≥ 1; initial 0 must be ≥ 1"):
        EfficiencySetup(budget=0, initial=0)


def test_more_initial_slices_than_the_pool_is_refused_before_any_training(split, monkeypatch):
    import tomoloop.active.label_efficiency as efficiency_module

    def no_training(*_args, **_kwargs):
        pytest.fail("a network was trained before the refusal")

    monkeypatch.setattr(efficiency_module, "train", no_training)
    setup = EfficiencySetup(("random",), seeds=1, initial=len(split.pool) + 1, train=TINY)
    with pytest.raises(BenchmarkError, match=f"at most {len(split.pool)}"):
        efficiency(split, setup)


def test_a_strategy_chooses_the_same_slices_whatever_ran_before_it(split, monkeypatch):
    import torch

    import tomoloop.active.label_efficiency as le

    setup = EfficiencySetup(("bald",), 1, 2, 1, 2, 1, options={"base": 4, "depth": 2}, train=TINY)
    chosen = []
    real = le._fit
    monkeypatch.setattr(
        le,
        "_fit",
        lambda labelled, *a: chosen.append([id(s) for s in labelled]) or real(labelled, *a),
    )
    start = real([split.pool[i] for i in le.initial_slices(0, split, setup)], split, setup, 0)
    for before in (1, 2):
        torch.manual_seed(before)  # another strategy's curve ran here first
        le.learning_curve("bald", 0, split, setup, start)
    assert chosen[:2] == chosen[2:]  # the slices each round trained on
