"""Region queries: square tiles of a slice as the unit an expert labels.

A whole slice is the most expensive thing to ask for: most of it the model already gets
right. A :class:`Region` is one square tile of a slice (an XY slice, or an XZ / YZ one);
the query strategies of :mod:`tomoloop.active.strategies` rank :class:`RegionCandidate`
tiles exactly as they rank slices (uncertainty from the same per-pixel maps, core-set and
hybrid on region embeddings, the lead-time model on the region's boundary), under
:class:`RegionConstraints`: a budget of labelled pixels per round and a minimum distance
between chosen regions (and from regions labelled before). A region is answered with a
sparse label: the classes inside the region, :data:`tomoloop.labels.IGNORE` outside.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from tomoloop.active.oracle import Behaviour, answer
from tomoloop.active.scoring import (
    ScoreOptions,
    encoder_embedding,
    features_of,
    uncertainty_map,
)
from tomoloop.active.selection import SelectionError
from tomoloop.cores import fitting_threads
from tomoloop.inference.predict import normalise
from tomoloop.labels.phases import IGNORE
from tomoloop.stacks.stack import AXES, Stack, axis_named
from tomoloop.stacks.window import percentile_window


@dataclass(frozen=True, order=True)
class Region:
    """A ``size`` × ``size`` tile of one slice: volume id, ``plane`` (the axis the slice is
    normal to, as :meth:`tomoloop.stacks.Stack.slice` names it: ``z`` = an XY slice, ``y`` =
    XZ, ``x`` = YZ), slice ``index`` along it, and the tile's top-left row ``y0`` and column
    ``x0`` in that slice's 2D image (pixels). A tile at the slice's edge may reach past it;
    only its part inside the slice is labelled.
    """

    volume: int
    plane: str
    index: int
    y0: int
    x0: int
    size: int

    def __post_init__(self) -> None:
        if self.plane not in AXES:
            raise SelectionError(f"region plane {self.plane!r}: one of {', '.join(AXES)}")
        if self.size < 1 or min(self.index, self.y0, self.x0) < 0:
            raise SelectionError(f"{self}: size must be ≥ 1 and index, y0, x0 ≥ 0")

    @property
    def window(self) -> tuple[slice, slice]:
        """The (rows, columns) slices of the tile in its slice's 2D image."""
        return slice(self.y0, self.y0 + self.size), slice(self.x0, self.x0 + self.size)

    def pixels(self, shape: tuple[int, int]) -> int:
        """Pixels of the tile inside an (H, W) slice."""
        h, w = shape
        return max(0, min(self.size, h - self.y0)) * max(0, min(self.size, w - self.x0))

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """(H, W) bool: True inside the tile."""
        out = np.zeros(shape, dtype=bool)
        out[self.window] = True
        return out

    def keep(self, mask: np.ndarray) -> np.ndarray:
        """The sparse label of an (H, W) class mask: its classes inside the tile,
        :data:`IGNORE` everywhere else (uint8, (H, W))."""
        out = np.full(mask.shape, IGNORE, dtype=np.uint8)
        out[self.window] = mask[self.window]
        return out


def region_distance(a: Region, b: Region) -> float:
    """Euclidean distance (pixels) between the centres of two tiles of one slice; infinite
    between tiles of different slices (another index, plane or volume).

    Measured within the slice, not in 3D: a 3D distance of one region side lets each tile
    position of a thin target (54 slices) hold only two regions over its whole depth, and a
    region round then runs out of admissible tiles while unlabelled ones remain.
    """
    if (a.volume, a.plane, a.index) != (b.volume, b.plane, b.index):
        return math.inf
    return math.hypot(a.y0 + a.size / 2 - b.y0 - b.size / 2, a.x0 + a.size / 2 - b.x0 - b.size / 2)


def labelled_tile(mask: np.ndarray) -> tuple[int, int, int] | None:
    """``(y0, x0, size)`` of the square tile a sparse (H, W) uint8 label was painted in
    (its labelled pixels' bounding box, the side of its longer edge: a region task's answer
    is its tile cut at the slice's edges); None for a label without :data:`IGNORE` pixels,
    or without labelled ones.
    """
    labelled = mask != IGNORE
    if labelled.all() or not labelled.any():
        return None
    rows, columns = np.flatnonzero(labelled.any(axis=1)), np.flatnonzero(labelled.any(axis=0))
    size = max(rows[-1] - rows[0], columns[-1] - columns[0]) + 1
    return int(rows[0]), int(columns[0]), int(size)


def tile_plane(
    shape: tuple[int, int], size: int, volume: int = 0, plane: str = "z", index: int = 0
) -> list[Region]:
    """The tiles of ``size`` covering an (H, W) slice exactly once, row by row (the last
    row and column of tiles reach past the slice when ``size`` does not divide it).
    """
    if size < 1:
        raise SelectionError(f"region size {size} must be at least 1 pixel")
    h, w = shape
    return [
        Region(volume, plane, index, y0, x0, size)
        for y0 in range(0, h, size)
        for x0 in range(0, w, size)
    ]


@dataclass(frozen=True)
class RegionCandidate:
    """A region that could be labelled next, as the query strategies see it: ``slice_id``
    of the slice it lies on (ties are broken by it), its labelled ``pixels`` (inside the
    slice), and the features of :class:`tomoloop.active.scoring.SliceFeatures` computed on
    the tile: ``score``, ``foreground`` and ``boundary`` (fractions 0–1 of the tile's
    pixels; the boundary is what an annotator traces, so ``boundary × pixels`` is its
    length in pixels and what :class:`tomoloop.active.LeadTimeModel` prices), ``embedding``.
    """

    region: Region
    slice_id: int
    pixels: int
    score: float = 0.0
    foreground: float = 1.0
    boundary: float = 0.0
    embedding: tuple[float, ...] | None = None

    @property
    def volume(self) -> int:
        return self.region.volume

    @property
    def axis(self) -> str:
        """The plane of the slice the region lies on (as :attr:`Candidate.axis`)."""
        return self.region.plane

    @property
    def index(self) -> int:
        """The index of the slice the region lies on (as :attr:`Candidate.index`)."""
        return self.region.index


def region_features(
    unsure: np.ndarray,
    probs: np.ndarray,
    regions: Sequence[Region],
    slice_id: int,
    options: ScoreOptions,
    embeddings: Sequence[tuple[float, ...] | None] | None = None,
) -> list[RegionCandidate]:
    """The candidates of a slice's tiles from its (H, W) uncertainty map and (C, H, W)
    probabilities (:func:`tomoloop.active.uncertainty_map`); ``embeddings`` one per region.
    """
    shape = unsure.shape
    out = []
    for k, r in enumerate(regions):
        rows, columns = r.window
        f = features_of(unsure[rows, columns], probs[:, rows, columns], options)
        embedding = embeddings[k] if embeddings is not None else None
        out.append(
            RegionCandidate(
                r, slice_id, r.pixels(shape), f.score, f.foreground, f.boundary, embedding
            )
        )
    return out


def score_regions(
    model: nn.Module,
    image: np.ndarray,
    regions: Sequence[Region],
    slice_id: int,
    options: ScoreOptions,
) -> list[RegionCandidate]:
    """The candidates of tiles of one normalised (H, W) slice: one uncertainty map of the
    whole slice (the model sees the tiles in context), split by tile; with
    ``options.embed`` each tile's embedding is the encoder's on the tile itself.
    """
    unsure, probs = uncertainty_map(model, image, options)
    embeddings = None
    if options.embed:
        embeddings = [
            tuple(float(v) for v in encoder_embedding(model, image[r.window], options))
            for r in regions
        ]
    return region_features(unsure, probs, regions, slice_id, options, embeddings)


def score_stack_regions(
    model: nn.Module,
    stack: Stack,
    options: ScoreOptions,
    axis: str,
    slices: Mapping[int, int],
    size: int,
    volume: int = 0,
) -> Iterator[list[RegionCandidate]]:
    """The candidates of every ``size`` px tile (:func:`tile_plane`) of the stack's slices
    along ``axis`` named in ``slices`` (slice index → slice id), one list per slice,
    streamed in index order; slices are normalised by the stack's percentile window, as
    in training and :func:`tomoloop.active.score_stack`.
    """
    window = percentile_window(stack)
    with fitting_threads():
        for index, image in stack.iter_slices(axis_named(axis), sorted(slices)):
            tiles = tile_plane(image.shape, size, volume, axis, index)
            yield score_regions(model, normalise(image, window), tiles, slices[index], options)


@dataclass(frozen=True)
class RegionConstraints:
    """``budget_px`` labelled pixels per round (never exceeded) and chosen regions at least
    ``min_distance`` pixels (between centres, :func:`region_distance`) from each other and
    from ``taken`` ones of the same slice;
    with ``one_per_slice`` at most one region of a slice per round (a slice's label in the
    registry is one sparse mask per task).
    """

    budget_px: int
    min_distance: float = 0.0
    one_per_slice: bool = False

    def __post_init__(self) -> None:
        if self.budget_px < 1:
            raise SelectionError(
                f"pixel budget {self.budget_px}: a round needs at least one labelled pixel"
            )
        if self.min_distance < 0:
            raise SelectionError(f"minimum region distance {self.min_distance} must be ≥ 0")

    def admits(
        self,
        c: RegionCandidate,
        chosen: Sequence[RegionCandidate],
        taken: Sequence[RegionCandidate],
    ) -> bool:
        """Whether ``c`` fits in what is left of the budget and keeps its distance."""
        if sum(o.pixels for o in chosen) + c.pixels > self.budget_px:
            return False
        if self.one_per_slice and any(o.slice_id == c.slice_id for o in chosen):
            return False
        return all(
            region_distance(c.region, o.region) >= self.min_distance for o in (*chosen, *taken)
        )

    def full(self, chosen: Sequence[RegionCandidate]) -> bool:
        return sum(o.pixels for o in chosen) >= self.budget_px

    def picks(self, candidates: Sequence[RegionCandidate]) -> int:
        """Regions of the largest candidate's size the budget pays for (at least 1)."""
        largest = max((c.pixels for c in candidates), default=1)
        return max(1, self.budget_px // max(largest, 1))


def answer_region(
    truth: np.ndarray,
    region: Region,
    names: Sequence[str],
    behaviour: Behaviour | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """The oracle's sparse label for a region query: an (H, W) uint8 class mask with the
    oracle's answer (:func:`tomoloop.active.answer` on the whole slice, which a person sees
    for context; ``behaviour`` default: the truth itself) inside the region and
    :data:`IGNORE` everywhere else.
    """
    if len(names) > IGNORE:
        raise SelectionError(f"{len(names)} phases: a sparse label holds at most {IGNORE}")
    return region.keep(answer(truth, names, behaviour or Behaviour(), rng))


def region_seconds(truth: np.ndarray, region: Region, behaviour: Behaviour | None = None) -> float:
    """Seconds the oracle takes to paint a region of an (H, W) class mask: the lead-time
    model of :class:`tomoloop.active.Behaviour` (default: the plain one) on the tile.
    """
    return (behaviour or Behaviour()).lead_time(truth[region.window])
