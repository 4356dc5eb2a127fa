"""Slice scores of a whole registered volume: what a model is asked to score, and the
scores stored against the volume's slices."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from tomoloop.active.scoring import ScoreOptions
from tomoloop.db.entities import Volume
from tomoloop.inference.predict import default_overlap
from tomoloop.services.context import Services
from tomoloop.services.models import SemanticModel, load_registered_model
from tomoloop.stacks.opener import open_stack
from tomoloop.stacks.window import Window, percentile_window


@dataclass(frozen=True)
class VolumeScoring:
    """A registered model and volume, and how the model scores its slices."""

    model: SemanticModel
    volume: Volume
    options: ScoreOptions


@dataclass(frozen=True)
class StackView:
    """A volume's shape (z, y, x) and the grey window its slices are normalised by."""

    shape: tuple[int, int, int]
    window: Window


def volume_scoring(
    services: Services,
    model_id: int,
    volume: str,
    method: str,
    aggregation: str,
    passes: int,
    device: str | torch.device = "cpu",
) -> VolumeScoring:
    """Model ``model_id`` (on ``device``) and registered volume ``volume``, with the score
    options of ``method``, ``aggregation`` and ``passes`` at the model's tile size."""
    model = load_registered_model(services, model_id, str(device))
    tile = model.spec.tile
    options = ScoreOptions(method, aggregation, passes, tile, default_overlap(tile), device)
    return VolumeScoring(model, services.registry.volume_named(volume), options)


def stack_view(path: str) -> StackView:
    """The shape and percentile window of the stack at ``path``."""
    with open_stack(path) as stack:
        return StackView(stack.shape, percentile_window(stack))


def record_volume_scores(
    services: Services,
    model_id: int,
    volume: Volume,
    axis: str,
    scores: Mapping[int, float],
    label: str,
) -> None:
    """Scores by slice index along ``axis`` stored as model ``model_id``'s ``label``
    scores of the volume's slices (registered if new)."""
    slice_ids = services.registry.register_slices(volume.id, axis, scores)
    services.registry.record_scores(model_id, {slice_ids[i]: s for i, s in scores.items()}, label)
