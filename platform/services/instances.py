"""Instance scores of the pool: how much a registered particle detector and a semantic
network disagree on each slice (the ``disagreement`` strategy's score), or how unsure the
detector is of its own particles (the ``maskal`` strategy's).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import numpy as np
import torch
from torch import nn

from tomoloop.adapters import detectron2
from tomoloop.db.registry import PoolSlice, RegistryError
from tomoloop.inference.predict import default_overlap, normalise, predict_slice
from tomoloop.networks.registry import ModelSpec
from tomoloop.particles.instances import grey_uint8, particle_disagreement, particle_mask
from tomoloop.services.context import Services
from tomoloop.services.datasets import pool_groups
from tomoloop.services.models import load_registered_model
from tomoloop.stacks.opener import open_stack
from tomoloop.stacks.stack import Axis
from tomoloop.stacks.window import percentile_window


def instance_scores(
    services: Services,
    pool: list[PoolSlice],
    semantic: nn.Module,
    spec: ModelSpec,
    instance_id: int,
    device: torch.device,
    kind: str,
) -> dict[int, float]:
    """Per pool slice id, the registered Mask R-CNN's score of kind ``kind``
    (:attr:`tomoloop.active.selection.Strategy.instances`): ``"disagreement"`` with the
    semantic model, or ``"flips"``, its own uncertainty.
    """
    if kind == "flips":
        return flip_scores(services, pool, instance_id, device)
    return disagreement_scores(services, pool, semantic, spec, instance_id, device)


def flip_scores(
    services: Services, pool: list[PoolSlice], instance_id: int, device: torch.device
) -> dict[int, float]:
    """Per pool slice id, the registered Mask R-CNN's uncertainty in [0, 1]: the mean of its
    detections' 1 − score and their flip-TTA disagreement
    (:func:`tomoloop.adapters.detectron2.uncertainty`).
    """
    net, _ = load_registered_model(services, instance_id, device, "maskrcnn")
    return {
        slice_id: detectron2.uncertainty(net, [grey_uint8(image)])[0].score
        for slice_id, image in pool_images(pool)
    }


def pool_images(pool: list[PoolSlice]) -> Iterator[tuple[int, np.ndarray]]:
    """(slice id, (H, W) float32 image in [0, 1] normalised by its volume's percentile
    window) of every pool slice, each stack opened once."""
    for (path, axis), ids in pool_groups(pool).items():
        with open_stack(path) as stack:
            window = percentile_window(stack)
            for index, raw in stack.iter_slices(cast(Axis, axis), sorted(ids)):
                yield ids[index], normalise(raw, window)


def disagreement_scores(
    services: Services,
    pool: list[PoolSlice],
    semantic: nn.Module,
    spec: ModelSpec,
    instance_id: int,
    device: torch.device,
) -> dict[int, float]:
    """Per pool slice id, 1 − Dice of the registered Mask R-CNN's particles and the
    semantic model's prediction of the same phases.
    """
    net, _ = load_registered_model(services, instance_id, device, "maskrcnn")
    missing = [c for c in net.categories if c not in spec.class_names]
    if missing:
        raise RegistryError(
            f"Mask R-CNN {instance_id} finds {missing[0]!r}, which the semantic model "
            f"(classes {', '.join(spec.class_names)}) does not predict"
        )
    particle_classes = [spec.class_names.index(c) for c in net.categories]
    scores = {}
    for slice_id, image in pool_images(pool):
        probs = predict_slice(semantic, image, spec.tile, default_overlap(spec.tile), 8, device)
        found = detectron2.predict(net, [grey_uint8(image)])[0]
        scores[slice_id] = particle_disagreement(
            np.isin(probs.argmax(0), particle_classes), particle_mask(found, image.shape)
        )
    return scores
