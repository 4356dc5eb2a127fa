"""An active-learning round as steps: the strategy (checked), the champion, the pool's
features under a model, the slices a strategy chooses under the round's constraints, the
round opened in the registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from tomoloop.active.regions import (
    RegionCandidate,
    RegionConstraints,
    score_stack_regions,
)
from tomoloop.active.requests import WHOLE_SLICES, RoundRequest, RoundUnit
from tomoloop.active.scoring import ScoreOptions, SliceFeatures, score_stack
from tomoloop.active.selection import (
    Candidate,
    Constraints,
    LeadTimeModel,
    Strategy,
)
from tomoloop.active.strategies import get
from tomoloop.db.entities import DatasetVersion
from tomoloop.db.registry import PoolSlice, RegistryError
from tomoloop.inference.predict import default_overlap
from tomoloop.networks.registry import ModelSpec
from tomoloop.services.context import Services
from tomoloop.services.datasets import pool_groups
from tomoloop.services.models import load_registered_model
from tomoloop.stacks.opener import open_stack


class NothingToLabel(RegistryError):
    """Every training slice is labelled, pending or too close to one that is."""


@dataclass(frozen=True)
class ScoredPool:
    """A dataset's pool scored by a model: features per slice id, and the label the scores
    are recorded under."""

    model_id: int
    network: nn.Module
    spec: ModelSpec
    pool: list[PoolSlice]
    features: dict[int, SliceFeatures]
    label: str



@dataclass(frozen=True)
class ScoredRegions:
    """A dataset's pool scored tile by tile: every pool slice's tile candidates by slice
    id (``regions``), with the model and the label the scores are recorded under."""

    model_id: int
    network: nn.Module
    spec: ModelSpec
    pool: list[PoolSlice]
    regions: dict[int, list[RegionCandidate]]
    label: str


@dataclass(frozen=True)
class Choice:
    """The slices (or regions of slices) a strategy chose from the free ones (ranked), and
    the lead-time model that weighed them (None: by score alone)."""

    chosen: Sequence[Candidate | RegionCandidate]
    free: int
    lead_time: LeadTimeModel | None

    def top(self, pool: list[PoolSlice]) -> PoolSlice:
        """The pool slice ranked first."""
        return next(p for p in pool if p.slice_id == self.chosen[0].slice_id)


@dataclass(frozen=True)
class OpenedRound:
    """A round opened on chosen slices: what ``tomoloop al-round`` reports."""

    round: int
    model_version: int
    strategy: str
    choice: Choice

    @property
    def unit(self) -> str:
        """``region`` when the round chose regions of slices, else ``slice``."""
        regional = any(isinstance(c, RegionCandidate) for c in self.choice.chosen)
        return "region" if regional else "slice"

    def to_dict(self) -> dict[str, Any]:
        lead_time = self.choice.lead_time
        return {
            "round": self.round,
            "model_version": self.model_version,
            "strategy": self.strategy,
            "unit": self.unit,
            "chosen": [chosen_row(c) for c in self.choice.chosen],
            "free": self.choice.free,
            "lead_time_model": asdict(lead_time) if lead_time else None,
        }


def chosen_row(c: Candidate | RegionCandidate) -> dict[str, Any]:
    """A chosen slice as a round reports it (a region with its tile and pixels)."""
    row: dict[str, Any] = {"slice": c.slice_id, "index": c.index, "score": c.score}
    if isinstance(c, RegionCandidate):
        r = c.region
        row.update(plane=r.plane, y0=r.y0, x0=r.x0, size=r.size, pixels=c.pixels)
    return row


def strategy_for(name: str, instance_model: int | None, unit: RoundUnit = WHOLE_SLICES) -> Strategy:
    """Strategy ``name``, refused before scores or a round are written when it ranks by a
    Mask R-CNN's scores and none is given, or asks for them by region."""
    chooser = get(name)
    if chooser.instances and unit.regional:
        raise RegistryError(
            f"strategy {name} ranks whole slices by their particles: use --unit slice with it, "
            "or another strategy for regions"
        )
    if chooser.instances and instance_model is None:
        raise RegistryError(
            f"strategy {name} ranks by a Mask R-CNN's scores: give "
            "its model version (--instance-model; train one with --arch maskrcnn)"
        )
    return chooser


def champion_id(services: Services, dataset: str) -> int:
    """The id of the dataset's champion model.

    Raises:
        RegistryError: the dataset has none yet.
    """
    champion = services.registry.champion(dataset)
    if champion is None:
        raise RegistryError(
            f"dataset {dataset!r} has no champion model: train one "
            f"(`tomoloop train --dataset {dataset}`) and promote it first"
        )
    return champion.id


def pool_features(
    model: nn.Module, pool: list[PoolSlice], options: ScoreOptions
) -> dict[int, SliceFeatures]:
    """Features of every pool slice, one pass over each volume and axis."""
    out = {}
    for (path, axis), ids in pool_groups(pool).items():
        with open_stack(path) as stack:
            for index, features in score_stack(model, stack, options, axis, sorted(ids)):
                out[ids[index]] = features
    return out


def volume_pool(
    services: Services, version: DatasetVersion, volumes: Sequence[str] = ()
) -> list[PoolSlice]:
    """The training pool of a dataset version, only the slices of ``volumes`` (names)
    when any are given.

    Raises:
        RegistryError: a named volume is not in the dataset version.
    """
    wanted = volume_ids(services, version, volumes)
    pool = services.registry.pool(version.id)
    return pool if wanted is None else [p for p in pool if p.volume_id in wanted]


def volume_ids(
    services: Services, version: DatasetVersion, volumes: Sequence[str] = ()
) -> set[int] | None:
    """The ids of the named ``volumes`` of a dataset version; None when none is named (every
    volume).

    Raises:
        RegistryError: a named volume is not in the dataset version.
    """
    if not volumes:
        return None
    held = {v.name: v.id for v in services.registry.dataset_volumes(version.id)}
    missing = [name for name in volumes if name not in held]
    if missing:
        raise RegistryError(
            f"--volume {missing[0]!r} is not in dataset {version.name}@{version.version}, "
            f"which holds {', '.join(sorted(held))}: add it with `tomoloop ingest GRAY "
            f"--name {missing[0]} --phases PHASES --add-to {version.name}`"
        )
    return {held[name] for name in volumes}


@dataclass(frozen=True)
class _Scorer:
    """The model that scores a round (id, network, spec) and how it scores."""

    model_id: int
    network: nn.Module
    spec: ModelSpec
    options: ScoreOptions


def _scorer(
    services: Services,
    dataset: str,
    chooser: Strategy,
    model: int | None,
    passes: int,
    device: torch.device,
) -> _Scorer:
    """``model`` (the champion unless given) loaded on ``device``, scoring as the strategy
    ranks."""
    model_id = model if model is not None else champion_id(services, dataset)
    network, spec, _ = load_registered_model(services, model_id, str(device))
    options = ScoreOptions(
        chooser.scoring,
        "mean",
        passes,
        spec.tile,
        default_overlap(spec.tile),
        device,
        chooser.embed,
    )
    return _Scorer(model_id, network, spec, options)


def score_pool(
    services: Services,
    dataset: str,
    chooser: Strategy,
    model: int | None,
    passes: int,
    instance_model: int | None,
    device: torch.device,
    volumes: Sequence[str] = (),
) -> ScoredPool:
    """The dataset's pool (only ``volumes``' slices when any are named) scored by ``model``
    (the champion unless given) as the strategy ranks it — with ``instance_model``'s score
    when the strategy ranks by one — and the scores recorded in the registry."""
    registry = services.registry
    version = registry.dataset(dataset)
    pool = volume_pool(services, version, volumes)
    scorer = _scorer(services, dataset, chooser, model, passes, device)
    network, spec = scorer.network, scorer.spec
    features = pool_features(network, pool, scorer.options)
    label = scorer.options.label
    if chooser.instances and instance_model is not None:
        # imported here: detectron2 loads only for the strategy that needs it
        from tomoloop.services.instances import instance_scores

        scores = instance_scores(
            services, pool, network, spec, instance_model, device, chooser.instances
        )
        features = {k: replace(f, score=scores[k]) for k, f in features.items()}
        label = f"{chooser.instances}/{instance_model}"
    registry.record_scores(scorer.model_id, {k: f.score for k, f in features.items()}, label)
    return ScoredPool(scorer.model_id, network, spec, pool, features, label)


def choose_slices(
    services: Services,
    dataset: str,
    chooser: Strategy,
    scored: ScoredPool,
    limits: Constraints,
    cost_aware: bool,
    seed: int,
) -> Choice:
    """The free pool slices the strategy chooses under ``limits``, away from the taken
    ones; ``cost_aware`` weighs scores by the lead times annotators showed so far.

    Raises:
        NothingToLabel: no slice can be chosen.
    """
    pool = scored.pool
    candidates = {
        p.slice_id: Candidate.of(
            p.slice_id, p.volume_id, p.axis, p.index, scored.features[p.slice_id]
        )
        for p in pool
    }
    free = [candidates[p.slice_id] for p in pool if p.state == "free"]
    taken = [candidates[p.slice_id] for p in pool if p.state != "free"]
    lead_time = None
    if cost_aware:
        seen = services.registry.lead_times(dataset)
        known = [(candidates[k].boundary, s) for k, s in seen.items() if k in candidates]
        lead_time = LeadTimeModel.fit([b for b, _ in known], [s for _, s in known])
    chosen = chooser.select(free, limits, taken, np.random.default_rng(seed), lead_time)
    if not chosen:
        raise NothingToLabel(
            f"no slice of {dataset!r} can be chosen: all {len(pool)} training slices are "
            f"labelled, pending or closer than {limits.min_gap} slices to one that is"
        )
    return Choice(chosen, len(free), lead_time)


def score_pool_regions(
    services: Services,
    dataset: str,
    chooser: Strategy,
    model: int | None,
    passes: int,
    size: int,
    device: torch.device,
    volumes: Sequence[str] = (),
) -> ScoredRegions:
    """Every tile of ``size`` px of the dataset's pool slices (only ``volumes``' when any
    are named) scored by ``model`` (the champion unless given) as the strategy ranks them,
    one pass over each volume and axis; each slice's best tile score recorded in the
    registry (as ``METHOD/mean/region SIZE``).
    """
    registry = services.registry
    pool = volume_pool(services, registry.dataset(dataset), volumes)
    scorer = _scorer(services, dataset, chooser, model, passes, device)
    volume_of = {p.slice_id: p.volume_id for p in pool}
    regions: dict[int, list[RegionCandidate]] = {}
    for (path, axis), ids in pool_groups(pool).items():
        volume = volume_of[next(iter(ids.values()))]
        with open_stack(path) as stack:
            for tiles in score_stack_regions(
                scorer.network, stack, scorer.options, axis, ids, size, volume
            ):
                regions[tiles[0].slice_id] = tiles
    label = f"{scorer.options.label}/region{size}"
    best = {k: max(c.score for c in tiles) for k, tiles in regions.items()}
    registry.record_scores(scorer.model_id, best, label)
    return ScoredRegions(scorer.model_id, scorer.network, scorer.spec, pool, regions, label)


def _overlaps(c: RegionCandidate, window: tuple[int, int, int]) -> bool:
    """Whether a tile overlaps the ``(y0, x0, size)`` window of its slice."""
    y0, x0, size = window
    r = c.region
    return r.y0 < y0 + size and y0 < r.y0 + r.size and r.x0 < x0 + size and x0 < r.x0 + r.size


def choose_regions(
    services: Services,
    dataset: str,
    chooser: Strategy,
    scored: ScoredRegions,
    limits: RegionConstraints,
    cost_aware: bool,
    seed: int,
) -> Choice:
    """The tiles of free pool slices the strategy chooses under ``limits``, away from the
    taken ones: tiles overlapping a region of a round still waiting or answered, and every
    tile of a slice labelled or pending as a whole. ``cost_aware`` weighs scores by the
    lead times annotators showed on earlier regions of the same size.

    Raises:
        NothingToLabel: no region can be chosen.
    """
    items: dict[int, list[tuple[int, int, int]]] = {}
    seconds: dict[tuple[int, tuple[int, int, int]], float] = {}
    for item in services.registry.region_items(dataset):
        if item.region is not None:
            items.setdefault(item.slice_id, []).append(item.region)
            if item.annotation_seconds is not None:
                seconds[(item.slice_id, item.region)] = item.annotation_seconds
    free: list[RegionCandidate] = []
    taken: list[RegionCandidate] = []
    for p in scored.pool:
        tiles = scored.regions[p.slice_id]
        if p.state == "free":
            free += tiles
        elif p.slice_id in items:
            taken += [c for c in tiles if any(_overlaps(c, w) for w in items[p.slice_id])]
        else:
            taken += tiles
    lead_time = None
    if cost_aware:
        known = [
            (c.boundary, s)
            for c in taken
            if (s := seconds.get((c.slice_id, (c.region.y0, c.region.x0, c.region.size))))
            is not None
        ]
        lead_time = LeadTimeModel.fit([b for b, _ in known], [s for _, s in known])
    chosen = chooser.select(free, limits, taken, np.random.default_rng(seed), lead_time)
    if not chosen:
        raise NothingToLabel(
            f"no region of {dataset!r} can be chosen: every training slice is labelled or "
            f"pending, or its tiles lie closer than {limits.min_distance} px to a taken "
            f"region, or one tile exceeds the {limits.budget_px} px budget"
        )
    return Choice(chosen, len(free), lead_time)


def score_and_choose(
    services: Services,
    dataset: str,
    chooser: Strategy,
    asked: RoundRequest,
    model: int | None,
    passes: int,
    instance_model: int | None,
    cost_aware: bool,
    seed: int,
    device: torch.device,
) -> tuple[ScoredPool | ScoredRegions, Choice]:
    """The pool scored and the round's choice in its unit: slices (:func:`score_pool`,
    :func:`choose_slices`) or regions (:func:`score_pool_regions`, :func:`choose_regions`).
    ``seed`` seeds the random strategies and torch's generator, which MC-dropout's masks
    come from: one model and seed choose alike in a new process and inside a long flow.
    """
    torch.manual_seed(seed)
    limits = asked.limits()
    if isinstance(limits, RegionConstraints):
        regions = score_pool_regions(
            services, dataset, chooser, model, passes, asked.unit.region, device, asked.volumes
        )
        return regions, choose_regions(
            services, dataset, chooser, regions, limits, cost_aware, seed
        )
    pool = score_pool(
        services, dataset, chooser, model, passes, instance_model, device, asked.volumes
    )
    return pool, choose_slices(services, dataset, chooser, pool, limits, cost_aware, seed)


def open_chosen_round(
    services: Services,
    dataset: str,
    chooser: Strategy,
    scored: ScoredPool | ScoredRegions,
    choice: Choice,
    budget: int,
) -> OpenedRound:
    """A new round of the dataset on the chosen slices (or regions: their tiles recorded,
    ``budget`` in pixels) with their scores."""
    regions = {
        c.slice_id: (c.region.y0, c.region.x0, c.region.size)
        for c in choice.chosen
        if isinstance(c, RegionCandidate)
    }
    round_id = services.registry.open_round(
        dataset,
        chooser.name,
        scored.model_id,
        [(c.slice_id, c.score) for c in choice.chosen],
        budget,
        regions,
    )
    return OpenedRound(round_id, scored.model_id, chooser.name, choice)
