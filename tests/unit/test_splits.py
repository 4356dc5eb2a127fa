import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tomoloop.errors import TomoloopError
from tomoloop.labels.splits import parse_fractions, split_slices


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
