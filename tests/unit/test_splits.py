import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tomoloop.errors import TomoloopError
from tomoloop.labels.splits import (
    balanced_seed,
    balanced_split,
    class_share_ratio,
    parse_fractions,
    split_slices,
)


def test_same_arguments_give_the_same_split_and_seed_changes_it():
    a = split_slices(200, (0.8, 0.1, 0.1), seed=3)
    assert a == split_slices(200, (0.8, 0.1, 0.1), seed=3)
    assert a != split_slices(200, (0.8, 0.1, 0.1), seed=4)


@given(
    n=st.integers(1, 400),
    n_blocks=st.integers(1, 30),
    gap=st.integers(0, 5),
    seed=st.integers(0, 1000),
    weights=st.tuples(*[st.integers(0, 10)] * 3).filter(lambda w: sum(w) > 0),
)
def test_splits_are_disjoint_sorted_and_separated_by_more_than_the_gap(
    n, n_blocks, gap, seed, weights
):
    fractions = tuple(w / sum(weights) for w in weights)
    split = split_slices(n, fractions, n_blocks=n_blocks, gap=gap, seed=seed)
    seen = {}
    for name, indices in split.items():
        assert indices == sorted(indices)
        for i in indices:
            assert 0 <= i < n and i not in seen
            seen[i] = name
    kept = sorted(seen)
    for a, b in itertools.pairwise(kept):
        if seen[a] != seen[b]:
            assert b - a > gap
    if gap == 0:
        assert len(kept) == n


def test_fractions_are_honoured_block_wise():
    split = split_slices(1000, (0.8, 0.1, 0.1), n_blocks=10, gap=2)
    assert [len(split[k]) for k in ("train", "val", "test")] == pytest.approx(
        [800, 100, 100], abs=2 * 2 + 1
    )


@pytest.mark.parametrize("text", ["0.8,0.1", "0.5,0.5,0.5", "a,b,c", "-0.2,0.6,0.6"])
def test_bad_fractions(text):
    with pytest.raises(TomoloopError, match="three fractions"):
        parse_fractions(text)


def _ends_only() -> np.ndarray:
    """(54, 3) pixel counts: classes 0 and 1 in every slice, class 2 only in slices 0-13
    and 47-53 (a phase found at a stack's ends, as in the PuMA weave)."""
    counts = np.tile([500, 500, 0], (54, 1))
    counts[:14, 2] = 200
    counts[47:, 2] = 200
    return counts


def test_a_class_found_only_at_the_ends_is_not_left_out_of_the_test_slices():
    counts, fractions = _ends_only(), (0.6, 0.15, 0.25)
    first = split_slices(54, fractions)
    assert counts[first["test"], 2].sum() == 0  # seed 0 leaves class 2 out of test
    parts = balanced_split(counts, fractions)
    assert class_share_ratio(counts, parts) >= 0.5
    assert counts[parts["test"], 2].sum() > 0 and counts[parts["val"], 2].sum() > 0
    assert parts in [split_slices(54, fractions, seed=s) for s in range(64)]


def test_class_share_ratio_is_one_for_a_uniform_stack_and_zero_for_a_missing_class():
    uniform = np.tile([3, 1], (20, 1))
    assert class_share_ratio(uniform, split_slices(20, (0.6, 0.2, 0.2))) == 1.0
    only_first = np.tile([1, 0], (10, 1))
    only_first[0] = [0, 5]
    assert class_share_ratio(only_first, {"train": [0, 1], "val": [5], "test": []}) == 0.0


@given(
    counts=st.lists(st.tuples(*[st.integers(0, 50)] * 3), min_size=1, max_size=80),
    weights=st.tuples(*[st.integers(0, 10)] * 3).filter(lambda w: sum(w) > 0),
    least=st.floats(0.0, 1.0),
)
def test_balanced_split_is_seed_zero_when_it_qualifies_else_the_first_that_does_or_the_best(
    counts, weights, least
):
    counts = np.array(counts)
    fractions = tuple(w / sum(weights) for w in weights)
    tries = 8
    candidates = [split_slices(len(counts), fractions, seed=s) for s in range(tries)]
    ratios = [class_share_ratio(counts, c) for c in candidates]
    seed = balanced_seed(counts, fractions, least=least, tries=tries)
    qualifying = [s for s, r in enumerate(ratios) if r >= least]
    assert seed == (qualifying[0] if qualifying else int(np.argmax(ratios)))
    assert balanced_split(counts, fractions, least=least, tries=tries) == candidates[seed]
