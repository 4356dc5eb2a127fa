"""Deterministic train/val/test splits of slice indices in contiguous blocks with gaps.

Neighbouring CT slices are nearly identical, so splitting slice by slice leaks the test
set into training. Slices are grouped into contiguous blocks; blocks are dealt to the
splits by a seeded shuffle in proportion to the fractions; and ``gap`` slices are left
out wherever two splits meet, so any two kept slices of different splits are more than
``gap`` slices apart. :func:`balanced_split` picks, among such shuffles, one that leaves no
split short of a class the stack holds (a phase found only at the ends of a stack must not
be all but missing from the test slices).
"""

from __future__ import annotations

import math

import numpy as np

from tomoloop.errors import TomoloopError

SPLIT_NAMES = ("train", "val", "test")


def parse_fractions(text: str) -> tuple[float, float, float]:
    """Parse ``"0.8,0.1,0.1"`` into train/val/test fractions that sum to 1."""
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if (
        len(parts) != 3
        or any(not math.isfinite(p) or p < 0 for p in parts)
        or not (math.isclose(sum(parts), 1.0, abs_tol=1e-6))
    ):
        raise TomoloopError(
            f"split {text!r} is not three fractions ≥ 0 summing to 1: write e.g. '0.8,0.1,0.1'"
        )
    return parts


def _blocks_per_split(n_blocks: int, fractions: tuple[float, ...]) -> list[int]:
    """Largest-remainder apportionment; every split with a fraction > 0 gets ≥ 1 block."""
    raw = [f * n_blocks for f in fractions]
    counts = [math.floor(r) for r in raw]
    for k in sorted(range(len(raw)), key=lambda k: counts[k] - raw[k])[: n_blocks - sum(counts)]:
        counts[k] += 1
    for k, f in enumerate(fractions):
        if f > 0 and counts[k] == 0:
            donor = max(range(len(counts)), key=lambda j: counts[j])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[k] += 1
    return counts


def check_split_fills(
    n: int, fractions: tuple[float, float, float], gap: int = 2, seed: int = 0
) -> None:
    """Refuse a split of ``n`` slices that would leave a split with a fraction > 0 empty
    (training needs train and val slices; models are judged on test).

    Raises:
        TomoloopError: naming the empty splits and the smallest stack that fills them all.
    """
    empty = _empty_splits(n, fractions, gap, seed)
    if not empty:
        return
    smallest = next(
        m for m in range(n + 1, n + 100_000) if not _empty_splits(m, fractions, gap, seed)
    )
    shares = ",".join(f"{f:g}" for f in fractions)
    raise TomoloopError(
        f"a {n}-slice stack leaves the {' and '.join(empty)} split empty (split {shares}, "
        f"{gap}-slice gaps between splits): use a stack of at least {smallest} slices, or a "
        "--split without them (e.g. 1,0,0)"
    )


def _empty_splits(n: int, fractions: tuple[float, float, float], gap: int, seed: int) -> list[str]:
    parts = split_slices(n, fractions, gap=gap, seed=seed)
    return [
        name for name, f in zip(SPLIT_NAMES, fractions, strict=True) if f > 0 and not parts[name]
    ]


def split_slices(
    n: int,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    n_blocks: int = 10,
    gap: int = 2,
    seed: int = 0,
) -> dict[str, list[int]]:
    """Assign slice indices 0..n-1 to train/val/test.

    Args:
        n: number of slices along the split axis.
        fractions: train, val, test shares of the blocks.
        n_blocks: number of contiguous blocks (capped at ``n``).
        gap: slices dropped at each boundary between different splits.
        seed: the shuffle of blocks; the same arguments always give the same split.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted; slices in gaps are
        in none of them.
    """
    if n <= 0:
        return {name: [] for name in SPLIT_NAMES}
    n_blocks = max(1, min(n_blocks, n // (2 * gap + 1)))  # a block outlives its gaps
    counts = _blocks_per_split(n_blocks, fractions)
    owner_of_block = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(seed).shuffle(owner_of_block)
    bounds = np.linspace(0, n, n_blocks + 1).round().astype(int)
    owner = np.repeat(owner_of_block, np.diff(bounds))
    keep = np.ones(n, dtype=bool)
    for d in range(1, gap + 1):
        keep[:-d] &= owner[:-d] == owner[d:]
    return {
        name: np.flatnonzero(keep & (owner == k)).tolist() for k, name in enumerate(SPLIT_NAMES)
    }


def class_share_ratio(class_counts: np.ndarray, parts: dict[str, list[int]]) -> float:
    """The smallest, over the non-empty splits and the classes the stack holds, of a
    class's share of a split's pixels divided by its share of the whole stack's (1 = every
    split mirrors the stack; 0 = a split without a class the stack has); 1 for a stack
    without a labelled pixel.

    Args:
        class_counts: (n_slices, n_classes) labelled pixels of each class in each slice.
        parts: a split of the slice indices (:func:`split_slices`).
    """
    counts = np.asarray(class_counts, dtype=np.float64)
    stack = counts.sum(axis=0) / max(counts.sum(), 1.0)
    held = stack > 0
    if not held.any():
        return 1.0
    ratios = [
        float(np.min(split[held] / max(split.sum(), 1.0) / stack[held]))
        for split in (counts[indices].sum(axis=0) for indices in parts.values() if indices)
    ]
    return min(ratios, default=1.0)


def balanced_seed(
    class_counts: np.ndarray,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    gap: int = 2,
    least: float = 0.5,
    tries: int = 64,
) -> int:
    """The first shuffle seed (0, 1, …) under which every split of
    :func:`split_slices` of ``len(class_counts)`` slices holds at least ``least`` of its
    fair share of every class (:func:`class_share_ratio` ≥ ``least``); if none of ``tries``
    seeds does, the seed with the largest ratio (the first of equals). Deterministic; 0
    whenever seed 0 qualifies.

    Args:
        class_counts: (n_slices, n_classes) labelled pixels of each class in each slice.
        fractions: train, val, test shares of the blocks.
        gap: slices dropped at each boundary between different splits.
        least: the smallest acceptable share ratio, 0–1.
        tries: seeds tried, ≥ 1.
    """
    best, best_ratio = 0, -1.0
    for seed in range(max(tries, 1)):
        parts = split_slices(len(class_counts), fractions, gap=gap, seed=seed)
        ratio = class_share_ratio(class_counts, parts)
        if ratio >= least:
            return seed
        if ratio > best_ratio:
            best, best_ratio = seed, ratio
    return best


def balanced_split(
    class_counts: np.ndarray,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    gap: int = 2,
    least: float = 0.5,
    tries: int = 64,
) -> dict[str, list[int]]:
    """:func:`split_slices` of ``len(class_counts)`` slices under :func:`balanced_seed`
    (same arguments)."""
    seed = balanced_seed(class_counts, fractions, gap=gap, least=least, tries=tries)
    return split_slices(len(class_counts), fractions, gap=gap, seed=seed)
