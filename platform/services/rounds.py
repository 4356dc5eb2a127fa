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

from tomoloop.active.scoring import ScoreOptions, SliceFeatures, score_stack
from tomoloop.active.selection import Candidate, Constraints, LeadTimeModel, Strategy
from tomoloop.active.strategies import get
from tomoloop.db.entities import DatasetVersion
from tomoloop.db.registry import PoolSlice, RegistryError
from tomoloop.inference.predict import default_overlap
from tomoloop.networks.registry import ModelSpec
from tomoloop.services.context import Services
from tomoloop.services.datasets import pool_groups
from tomoloop.services.models import load_registered_model
from tomoloop.stacks.tiff import open_stack


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
class Choice:
    """The slices a strategy chose from the free ones (ranked), and the lead-time model
    that weighed them (None: by score alone)."""

    chosen: list[Candidate]
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

    def to_dict(self) -> dict[str, Any]:
        lead_time = self.choice.lead_time
        return {
            "round": self.round,
            "model_version": self.model_version,
            "strategy": self.strategy,
            "chosen": [
                {"slice": c.slice_id, "index": c.index, "score": c.score}
                for c in self.choice.chosen
            ],
            "free": self.choice.free,
            "lead_time_model": asdict(lead_time) if lead_time else None,
        }


def strategy_for(name: str, instance_model: int | None) -> Strategy:
    """Strategy ``name``, refused before scores or a round are written when it compares a
    Mask R-CNN with the semantic model and none is given."""
    chooser = get(name)
    if chooser.instances and instance_model is None:
        raise RegistryError(
            f"strategy {name} compares a Mask R-CNN with the semantic model: give "
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
    pool = services.registry.pool(version.id)
    if not volumes:
        return pool
    held = {v.name: v.id for v in services.registry.dataset_volumes(version.id)}
    missing = [name for name in volumes if name not in held]
    if missing:
        raise RegistryError(
            f"--volume {missing[0]!r} is not in dataset {version.name}@{version.version}, "
            f"which holds {', '.join(sorted(held))}: add it with `tomoloop ingest GRAY "
            f"--name {missing[0]} --phases PHASES --add-to {version.name}`"
        )
    wanted = {held[name] for name in volumes}
    return [p for p in pool if p.volume_id in wanted]


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
    (the champion unless given) as the strategy ranks it — with ``instance_model``'s
    disagreement as the score when it compares one — and the scores recorded in the
    registry."""
    registry = services.registry
    version = registry.dataset(dataset)
    pool = volume_pool(services, version, volumes)
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
    features = pool_features(network, pool, options)
    label = options.label
    if chooser.instances and instance_model is not None:
        # imported here: detectron2 loads only for the strategy that needs it
        from tomoloop.services.instances import disagreement_scores

        scores = disagreement_scores(services, pool, network, spec, instance_model, device)
        features = {k: replace(f, score=scores[k]) for k, f in features.items()}
        label = f"disagreement/{instance_model}"
    registry.record_scores(model_id, {k: f.score for k, f in features.items()}, label)
    return ScoredPool(model_id, network, spec, pool, features, label)


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


def open_chosen_round(
    services: Services,
    dataset: str,
    chooser: Strategy,
    scored: ScoredPool,
    choice: Choice,
    budget: int,
) -> OpenedRound:
    """A new round of the dataset on the chosen slices with their scores."""
    round_id = services.registry.open_round(
        dataset,
        chooser.name,
        scored.model_id,
        [(c.slice_id, c.score) for c in choice.chosen],
        budget,
    )
    return OpenedRound(round_id, scored.model_id, chooser.name, choice)
