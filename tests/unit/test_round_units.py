"""What a round asks for, in slices or in regions: the constraints a region round keeps,
its budget in pixels, and the loop's progress counted in labelled pixels."""

import pytest

from tomoloop.active.policy import Decision, StopRules
from tomoloop.active.regions import Region, RegionCandidate, RegionConstraints
from tomoloop.active.requests import RoundRequest, RoundUnit
from tomoloop.active.selection import Candidate, Constraints, SelectionError
from tomoloop.db.registry import RegistryError
from tomoloop.services.loop import LoopProgress, RoundRecord
from tomoloop.services.rounds import (
    Choice,
    OpenedRound,
    chosen_row,
    strategy_for,
)


def test_a_region_round_defaults_to_the_slice_budget_in_tiles_one_side_apart():
    asked = RoundRequest.of("bald", 4, 3, "region", 16)
    assert asked.limits() == RegionConstraints(4 * 256, 16.0, one_per_slice=True)
    assert asked.recorded_budget == 1024
    given = RoundRequest.of("bald", 4, 3, "region", 16, budget_px=500, min_distance=0)
    assert given.limits() == RegionConstraints(500, 0.0, one_per_slice=True)
    assert given.recorded_budget == 500
    slices = RoundRequest.of("bald", 4, 3, per_volume=2)
    assert (slices.limits(), slices.recorded_budget) == (Constraints(4, 2, 3), 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"unit": "voxel"}, "unit 'voxel': use one of slice, region"),
        ({"unit": "region", "region": 0}, "region size 0"),
        ({"unit": "region", "budget_px": 0}, "pixel budget 0"),
        ({"unit": "region", "min_distance": -1.0}, "minimum region distance"),
    ],
)
def test_bad_region_options_are_refused_before_anything_runs(kwargs, message):
    with pytest.raises(SelectionError, match=message):
        RoundRequest.of("bald", 4, 3, **kwargs).limits()


def test_a_strategy_of_whole_slices_particles_is_refused_for_regions():
    with pytest.raises(RegistryError, match="use --unit slice"):
        strategy_for("disagreement", 3, RoundUnit("region"))
    assert strategy_for("bald", None, RoundUnit("region")).name == "bald"


def test_a_region_round_reports_its_tiles():
    tile = RegionCandidate(Region(2, "y", 5, 16, 32, 16), 41, 200, score=0.25)
    assert chosen_row(tile) == {
        "slice": 41, "index": 5, "score": 0.25, "plane": "y", "y0": 16, "x0": 32, "size": 16,
        "pixels": 200,
    }  # fmt: skip
    whole = Candidate(40, 2, "z", 7, score=0.5)
    assert chosen_row(whole) == {"slice": 40, "index": 7, "score": 0.5}
    assert OpenedRound(1, 2, "bald", Choice([tile], 9, None)).to_dict()["unit"] == "region"
    assert OpenedRound(1, 2, "bald", Choice([whole], 9, None)).to_dict()["unit"] == "slice"


def _record(round_id: int, labelled: int, pixels: int, score: float) -> RoundRecord:
    return RoundRecord(round_id, labelled, 0, 10 + round_id, round_id, True, score, [], pixels)


def test_a_region_loop_counts_labelled_pixels_and_stops_on_its_pixel_budget():
    rules = StopRules(label_budget=600, patience=5, unit="pixels")
    progress = LoopProgress((0.5,), regional=True)
    progress = progress.after(_record(1, 2, 512, 0.6))
    assert progress.stop_reason(rules) is None
    progress = progress.after(_record(2, 1, 256, 0.7))
    assert progress.curve() == [(0, 0.5), (512, 0.6), (768, 0.7)]
    assert progress.stop_reason(rules) == "label budget spent (768 of 600 pixels)"
    assert progress.to_dict("d", "", 12)["curve"] == {
        "unit": "pixels",
        "points": [[0, 0.5], [512, 0.6], [768, 0.7]],
    }
    slices = LoopProgress((0.5,)).after(_record(1, 2, 512, 0.6))
    assert (slices.unit, slices.curve()) == ("slices", [(0, 0.5), (2, 0.6)])


def test_the_loop_follows_the_new_scans_own_score_when_it_names_it():
    from tomoloop.services.loop import followed_score
    from tomoloop.services.promotion import Contest, promotion_outcome, volume_scores

    evaluation = {
        "mIoU": 0.8,
        "volumes": {
            "first": {"scored": True, "mIoU": 0.9},
            "second": {"scored": True, "mIoU": 0.5},
            "third": {"scored": False, "labelled_px": 0},
        },
    }
    per_volume = volume_scores(evaluation)
    assert per_volume == {"first": 0.9, "second": 0.5, "third": None}
    assert followed_score(0.8, per_volume) == 0.8
    assert followed_score(0.8, per_volume, ["second"]) == 0.5
    assert followed_score(0.8, per_volume, ["first", "second", "third"]) == pytest.approx(0.7)
    with pytest.raises(RegistryError, match="none has labelled test slices"):
        followed_score(0.8, per_volume, ["third"])

    # the champion after a contest: the challenger's scores if promoted, else the old ones
    worse = {"mIoU": 0.7, "volumes": {"second": {"scored": True, "mIoU": 0.4}}}
    contest = Contest(2, 1, 1, "nmc")
    kept = promotion_outcome(contest, worse, evaluation, Decision(False, ["no"]), "mIoU")
    assert (kept.champion_score, kept.champion_volumes["second"]) == (0.8, 0.5)
    won = promotion_outcome(contest, worse, evaluation, Decision(True, ["yes"]), "mIoU")
    assert (won.champion_score, won.to_dict()["champion_volumes"]["second"]) == (0.7, 0.4)
    # the challenger's own scores, promoted or not: what the round's labels taught
    for outcome in (kept, won):
        assert (outcome.challenger_score, outcome.challenger_volumes) == (0.7, {"second": 0.4})
