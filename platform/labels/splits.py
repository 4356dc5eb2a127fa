"""Deterministic train/val/test splits of slice indices in contiguous blocks with gaps.

Neighbouring CT slices are nearly identical, so splitting slice by slice leaks the test
set into training. Slices are grouped into contiguous blocks; blocks are dealt to the
splits by a seeded shuffle in proportion to the fractions; and ``gap`` slices are left
out wherever two splits meet, so any two kept slices of different splits are more than
``gap`` slices apart.
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
