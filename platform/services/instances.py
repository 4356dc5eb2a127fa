"""Mask R-CNN against the semantic model: how much a registered particle detector and a
semantic network disagree on each pool slice (the ``disagreement`` strategy's score).
"""

from __future__ import annotations

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
    for (path, axis), ids in pool_groups(pool).items():
        with open_stack(path) as stack:
            window = percentile_window(stack)
            for index, raw in stack.iter_slices(cast(Axis, axis), sorted(ids)):
                image = normalise(raw, window)
                probs = predict_slice(
                    semantic, image, spec.tile, default_overlap(spec.tile), 8, device
                )
                found = detectron2.predict(net, [grey_uint8(image)])[0]
                scores[ids[index]] = particle_disagreement(
                    np.isin(probs.argmax(0), particle_classes),
                    particle_mask(found, image.shape),
                )
    return scores
