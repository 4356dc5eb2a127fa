"""The oracle annotator's answers: a ground-truth slice as a person would label it.

People do not label like ground truth. Su et al. 2022 (abstract; docs/references.md) find that human
bias in the training labels moves the material properties computed from the segmentations. How
people err is tomoloop's model, not the paper's: they grow or shrink thin phases such as the
carbon-binder domain and are ragged along boundaries. :class:`Behaviour` models both: a per-phase
bias (dilate by k pixels, or erode by −k) and boundary noise (a boundary pixel takes a neighbour's
label with a probability). It also says how long the answer took, so cost-aware selection has lead
times to learn from: longer for slices with more boundary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from tomoloop.active.scoring import boundary_fraction
from tomoloop.errors import TomoloopError

_SHIFTS = ((0, 1), (0, -1), (1, 0), (-1, 0))


@dataclass(frozen=True)
class Behaviour:
    """How the oracle labels: ``bias`` (phase name → pixels to dilate, negative to erode),
    ``noise`` (probability 0–1 that a boundary pixel takes a neighbour's label), and lead
    time ``base_s + per_boundary_s × boundary fraction`` seconds.
    """

    bias: Mapping[str, int] = field(default_factory=dict)
    noise: float = 0.0
    base_s: float = 20.0
    per_boundary_s: float = 400.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise <= 1.0:
            raise TomoloopError(f"oracle noise {self.noise} must be a probability in [0, 1]")

    def lead_time(self, mask: np.ndarray) -> float:
        """Seconds a person takes to label an (H, W) class mask like this one."""
        return self.base_s + self.per_boundary_s * boundary_fraction(mask)


def _biased(mask: np.ndarray, names: Sequence[str], bias: Mapping[str, int]) -> np.ndarray:
    out = mask.copy()
    for name, pixels in bias.items():
        if name not in names:
            raise TomoloopError(f"oracle bias names phase {name!r}; the phases are {list(names)}")
        phase = names.index(name)
        region = mask == phase
        if pixels > 0:
            out[ndimage.binary_dilation(region, iterations=pixels)] = phase
        elif pixels < 0:
            kept = ndimage.binary_erosion(region, iterations=-pixels, border_value=1)
            # An eroded pixel takes the label of the nearest pixel outside the phase.
            outside = mask != phase
            if outside.any():
                _, (iy, ix) = ndimage.distance_transform_edt(~outside, return_indices=True)
                lost = region & ~kept
                out[lost] = mask[iy[lost], ix[lost]]
    return out


def _noisy(mask: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    if noise == 0:
        return mask
    padded = np.pad(mask, 1, mode="edge")
    h, w = mask.shape
    direction = rng.integers(len(_SHIFTS), size=mask.shape)
    neighbour = np.empty_like(mask)
    for k, (dy, dx) in enumerate(_SHIFTS):
        here = direction == k
        neighbour[here] = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w][here]
    flip = (neighbour != mask) & (rng.random(mask.shape) < noise)
    return np.where(flip, neighbour, mask)


def answer(
    truth: np.ndarray,
    names: Sequence[str],
    behaviour: Behaviour = Behaviour(),
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """The (H, W) class mask the oracle submits for a ground-truth (H, W) class mask
    (indices into ``names``); the truth itself when ``behaviour`` has no bias or noise.
    """
    mask = _biased(truth, names, behaviour.bias)
    return _noisy(mask, behaviour.noise, rng or np.random.default_rng())
