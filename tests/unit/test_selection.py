import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tomoloop.active.selection import Candidate, Constraints, LeadTimeModel, SelectionError
from tomoloop.active.strategies import STRATEGIES, get


def _candidates(draw_scores, volumes=2, depth=30, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    out = []
    for k, score in enumerate(draw_scores):
        volume, index = k % volumes, (k // volumes) % depth
        out.append(
            Candidate(
                slice_id=k,
                volume=volume,
                axis="z",
                index=index,
                score=score,
                foreground=float(rng.random()),
                boundary=float(rng.random()),
                embedding=tuple(rng.normal(size=3)),
            )
        )
    return out


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.floats(0, 1), min_size=1, max_size=50),
    budget=st.integers(1, 12),
    per_volume=st.none() | st.integers(1, 6),
    gap=st.integers(0, 5),
    name=st.sampled_from(sorted(STRATEGIES)),
    taken_count=st.integers(0, 4),
)
def test_every_strategy_keeps_every_constraint(scores, budget, per_volume, gap, name, taken_count):
    pool = _candidates(scores)
    taken, candidates = pool[:taken_count], pool[taken_count:]
    limits = Constraints(budget, per_volume, gap)
    chosen = get(name).select(candidates, limits, taken, np.random.default_rng(1))
    assert len(chosen) <= budget
    assert len({c.slice_id for c in chosen}) == len(chosen)
    assert {c.slice_id for c in chosen} <= {c.slice_id for c in candidates}
    for volume in {c.volume for c in chosen}:
        assert per_volume is None or sum(c.volume == volume for c in chosen) <= per_volume
    for a in chosen:
        for b in [*chosen, *taken]:
            if a is not b and (a.volume, a.axis) == (b.volume, b.axis):
                assert abs(a.index - b.index) >= gap


@settings(max_examples=40, deadline=None)
@given(scores=st.lists(st.floats(0, 1), min_size=1, max_size=40), budget=st.integers(1, 10))
def test_strategies_fill_the_budget_when_nothing_constrains_them(scores, budget):
    candidates = _candidates(scores, volumes=len(scores), depth=1)
    for name in STRATEGIES:
        chosen = get(name).select(candidates, Constraints(budget), (), np.random.default_rng(0))
        assert len(chosen) == min(budget, len(candidates)), name


def test_uncertainty_takes_the_highest_scores_and_respects_the_gap():
    candidates = [Candidate(i, 0, "z", i, score=s) for i, s in enumerate([0.1, 0.9, 0.8, 0.2, 0.7])]
    chosen = get("entropy").select(candidates, Constraints(2))
    assert [c.index for c in chosen] == [1, 2]
    spaced = get("entropy").select(candidates, Constraints(2, min_gap=2))
    assert [c.index for c in spaced] == [1, 4]  # 2 is next to 1
    held_off = get("entropy").select(candidates, Constraints(2, min_gap=2), taken=[candidates[0]])
    assert [c.index for c in held_off] == [2, 4]  # 1 is next to a labelled slice


def test_cost_aware_ranking_prefers_cheap_slices_of_equal_value():
    cheap = Candidate(1, 0, "z", 0, score=0.5, boundary=0.05)
    dear = Candidate(2, 0, "z", 10, score=0.6, boundary=0.5)
    lead_time = LeadTimeModel.fit([0.1, 0.3, 0.5], [20, 60, 100])  # 200 s per unit boundary
    assert lead_time.slope == pytest.approx(200) and lead_time.intercept == pytest.approx(0)
    assert get("bald").select([cheap, dear], Constraints(1))[0] is dear
    assert get("bald").select([cheap, dear], Constraints(1), lead_time=lead_time)[0] is cheap
    assert LeadTimeModel.fit([], []) is None
    assert LeadTimeModel.fit([0.2, 0.2], [30, 50]) == LeadTimeModel(40.0)


def test_foreground_random_never_draws_an_empty_slice_while_others_remain():
    candidates = [Candidate(i, 0, "z", i, foreground=0.0 if i % 2 else 0.3) for i in range(20)]
    for seed in range(20):
        chosen = get("foreground_random").select(
            candidates, Constraints(10), (), np.random.default_rng(seed)
        )
        assert all(c.foreground > 0 for c in chosen)


def test_random_is_reproducible_by_seed_and_varies_between_seeds():
    candidates = _candidates([0.5] * 40)
    pick = lambda seed: [  # noqa: E731
        c.slice_id
        for c in get("random").select(candidates, Constraints(5), (), np.random.default_rng(seed))
    ]
    assert pick(3) == pick(3) and pick(3) != pick(4)


def test_coreset_spreads_over_clusters_and_avoids_what_is_labelled():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]], float)
    candidates = [
        Candidate(
            k,
            0,
            "z",
            k,
            score=float(rng.random()),
            embedding=tuple(centres[k % 3] + rng.normal(0, 0.1, 2)),
        )
        for k in range(30)
    ]
    chosen = get("coreset").select(candidates, Constraints(3))
    assert sorted(c.slice_id % 3 for c in chosen) == [0, 1, 2]
    labelled = [
        Candidate(100, 1, "z", 0, embedding=(0.0, 0.0)),
        Candidate(101, 1, "z", 1, embedding=(10.0, 0.0)),
    ]
    (only,) = get("coreset").select(candidates, Constraints(1), labelled)
    assert only.slice_id % 3 == 2


def test_hybrid_picks_diverse_slices_from_the_uncertain_pool():
    sure = [Candidate(k, 0, "z", k, score=0.01, embedding=(50.0 + k, 0.0)) for k in range(8)]
    twins = [Candidate(10 + k, 0, "z", 10 + k, score=0.9, embedding=(0.0, 0.0)) for k in range(4)]
    apart = [
        Candidate(20 + k, 0, "z", 20 + k, score=0.8, embedding=(0.0, 5.0 * (k + 1)))
        for k in range(4)
    ]
    chosen = get("hybrid").select([*sure, *twins, *apart], Constraints(2))
    assert all(c.score >= 0.8 for c in chosen)  # from the pool of 4 × 2 most uncertain
    assert sum(c in twins for c in chosen) == 1  # not two views of the same thing


def test_bad_names_budgets_and_missing_embeddings_say_what_to_do():
    with pytest.raises(SelectionError, match="unknown strategy 'vibes': one of random"):
        get("vibes")
    with pytest.raises(SelectionError, match="at least one slice"):
        Constraints(0)
    with pytest.raises(SelectionError, match="embed=True"):
        get("coreset").select([Candidate(1, 0, "z", 0)], Constraints(1))
    assert get("bald").scoring == "bald" and get("hybrid").embed


def test_hybrid_fills_the_budget_when_the_constraints_thin_its_pool():
    crowded = [Candidate(k, 0, "z", 3 * k, score=0.9, embedding=(float(k), 0.0)) for k in range(8)]
    elsewhere = [
        Candidate(10 + k, 1, "z", 3 * k, score=0.1, embedding=(0.0, 1.0)) for k in range(3)
    ]
    chosen = get("hybrid").select([*crowded, *elsewhere], Constraints(2, per_volume=1))
    assert sorted(c.volume for c in chosen) == [0, 1]
