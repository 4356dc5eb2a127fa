"""The oracle annotator and reviewer: answers from ground-truth label stacks submitted
through Label Studio's API, as a person would in the browser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tomoloop.active.oracle import Behaviour, answer
from tomoloop.active.regions import Region, answer_region, region_seconds
from tomoloop.adapters.labelstudio_registry import (
    project_title,
    regions_title,
    review_title,
    slice_of,
)
from tomoloop.db.registry import RegistryError
from tomoloop.labels.phases import check_declared, class_index_lut
from tomoloop.labels.studio_json import brush_results
from tomoloop.services.context import Services
from tomoloop.services.datasets import dataset_phases
from tomoloop.stacks.checks import check_volume_shape
from tomoloop.stacks.opener import open_stack


def check_truth(services: Services, dataset_version_id: int, truth: dict[str, str]) -> None:
    """Refuse ground truth that misses a volume of the dataset version, names a volume
    that is not registered, or is not a readable label stack of that volume's shape."""
    volumes = services.registry.dataset_volumes(dataset_version_id)
    missing = sorted({v.name for v in volumes} - set(truth))
    if missing:
        raise RegistryError(
            f"the oracle has no ground truth for volume(s) {', '.join(missing)}: give each "
            "one's label stack (--truth VOLUME=LABELS.tif)"
        )
    for name, path in truth.items():
        found = services.registry.volume_named(name)
        with open_stack(path) as labels:
            shape = (found.shape_z, found.shape_y, found.shape_x)
            check_volume_shape(labels, shape, name, "--truth labels")


def answer_project(
    services: Services,
    dataset: str,
    title: Callable[[str], str],
    truth: dict[str, str],
    behaviour: dict[str, Any] | None,
    seed: int,
    wanted: set[int] | None = None,
) -> int:
    """Submit the oracle's answer to every unanswered task of the dataset's project
    ``title(dataset)`` (only slices in ``wanted``, when given); how many it answered.
    ``behaviour`` holds :class:`tomoloop.active.Behaviour` fields (bias, noise, lead time).
    A region task is answered inside its region only, as a person asked to would.
    """
    rng = np.random.default_rng(seed)
    how = Behaviour(**(behaviour or {}))
    phases = dataset_phases(services, services.registry.dataset(dataset))
    lut = class_index_lut(phases)
    client = services.label_studio.client
    project = client.find_project(title(dataset))
    if project is None:
        return 0
    answered = 0
    for task_id, data in client.unanswered(project):
        if wanted is not None and slice_of(data["key"]) not in wanted:
            continue
        if data["volume"] not in truth:
            raise RegistryError(
                f"the oracle has no ground truth for volume {data['volume']!r}: "
                f"give its label stack (truth has {sorted(truth)})"
            )
        with open_stack(truth[data["volume"]]) as labels:
            raw = labels.slice(data["axis"], int(data["index"]))
            check_declared(raw, phases, f"{labels.path.name} {data['axis']}={data['index']}")
            gold = lut[raw]
        if "region" in data:
            region = Region(0, data["axis"], int(data["index"]), **data["region"])
            mask = answer_region(gold, region, phases.names, how, rng)
            seconds = region_seconds(mask, region, how)
        else:
            mask = answer(gold, phases.names, how, rng)
            seconds = how.lead_time(mask)
        client.submit(task_id, brush_results(mask, phases.names), round(seconds, 1))
        answered += 1
    return answered


def answer_round(
    services: Services,
    round_id: int,
    truth: dict[str, str],
    behaviour: dict[str, Any] | None,
    seed: int,
) -> int:
    """The oracle's answers to the round's unanswered tasks (whole slices and regions); how
    many it answered."""
    dataset = services.registry.al_round(round_id).dataset
    wanted = {i.slice_id for i in services.registry.round_items(round_id)}
    return sum(
        answer_project(services, dataset, title, truth, behaviour, seed, wanted)
        for title in (project_title, regions_title)
    )


def answer_reviews(
    services: Services,
    dataset: str,
    truth: dict[str, str],
    behaviour: dict[str, Any] | None,
    seed: int,
) -> int:
    """The oracle reviewer's answers to the dataset's unanswered review tasks: a label
    equal to the truth approved, any other corrected; how many it answered."""
    return answer_project(services, dataset, review_title, truth, behaviour, seed)
