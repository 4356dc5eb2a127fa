"""Shared fixtures: small synthetic stacks written to tmp folders (never committed binaries)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def balls(shape: tuple[int, int, int], centres, radii) -> np.ndarray:
    """uint8 (z, y, x) volume with value 1 inside each ball."""
    zz, yy, xx = np.indices(shape)
    volume = np.zeros(shape, dtype=np.uint8)
    for (cz, cy, cx), r in zip(centres, radii, strict=True):
        volume[(zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    return volume


@pytest.fixture
def electrode_volume() -> np.ndarray:
    """(20, 40, 48) uint8 labels: pore 0, two separate particles 1, a carbon-binder slab 2."""
    volume = balls((20, 40, 48), [(10, 12, 12), (10, 26, 34)], [7, 8])
    volume[:, 36:, :] = np.where(volume[:, 36:, :] == 0, 2, volume[:, 36:, :])
    return volume


@pytest.fixture
def shared_data() -> Path:
    """The reference volumes beside the repo (../shared/data); skips where they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference volumes not found at {SHARED_DATA}")
    return SHARED_DATA
