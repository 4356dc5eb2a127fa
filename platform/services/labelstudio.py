"""Label Studio as the loop uses it: a round's slices as tasks with the model's prediction
pre-filled (and, given a Mask R-CNN, as particle tasks in the instance project), and the
annotations, reviews and particle labels pulled back into the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from tomoloop.active.regions import Region, labelled_tile
from tomoloop.adapters.labelstudio import LabelStudioClient, LabelStudioRefused
from tomoloop.adapters.labelstudio_registry import (
    Intake,
    event_key,
    handle_annotation,
    instances_title,
    project_title,
    regions_title,
    review_key,
    review_title,
    slice_of,
    task_key,
)
from tomoloop.db.entities import ALRound, Review, RoundItem, Slice, Volume
from tomoloop.db.models import Kind
from tomoloop.db.registry import Registry
from tomoloop.db.states import EventVia
from tomoloop.inference.predict import default_overlap, normalise, predict_slice
from tomoloop.labels.masks import decode_class_mask, encode_class_mask
from tomoloop.labels.studio_json import (
    TaskSpec,
    brush_results,
    draws_regions,
    instance_results,
    labeling_config,
    offered_labels,
    region_rectangle,
)
from tomoloop.particles.instances import category_classes, detected_particles, grey_uint8
from tomoloop.services.context import LabelStudio, Services
from tomoloop.services.datasets import dataset_phases, mask_document
from tomoloop.services.models import SemanticModel, load_registered_model
from tomoloop.stacks.opener import open_stack
from tomoloop.stacks.png import write_png
from tomoloop.stacks.stack import Axis, Stack
from tomoloop.stacks.window import Window, percentile_window, to_uint8

if TYPE_CHECKING:
    from tomoloop.adapters.detectron2 import MaskRCNN

_STATUSES = ("stored", "skipped", "rejected")  # what handle_annotation makes of a new event


@dataclass(frozen=True)
class PushTarget:
    """A round to push: the round, its dataset's name and phase names, and the model whose
    prediction is pre-filled (None: the round has no model)."""

    round: ALRound
    dataset: str
    names: tuple[str, ...]
    model: SemanticModel | None
    device: torch.device


@dataclass(frozen=True)
class ParticleFinder:
    """A registered Mask R-CNN, the dataset's instance project and the phases it asks for."""

    model_id: int
    net: MaskRCNN
    project: int
    asked: list[str]


@dataclass(frozen=True)
class RoundTasks:
    """A round's semantic tasks (whole slices), its particle tasks, the prediction each
    slice showed, and its region tasks (a region of a slice each)."""

    tasks: list[TaskSpec]
    drawn: list[TaskSpec]
    shown: dict[int, dict[str, Any]]
    regional: list[TaskSpec] = field(default_factory=list)


def push_target(services: Services, round_id: int, device: torch.device) -> PushTarget:
    """Round ``round_id`` with its dataset's phases and its model (loaded on ``device``)."""
    registry = services.registry
    round_ = registry.al_round(round_id)
    dataset = registry.dataset(round_.dataset)
    names = dataset_phases(services, dataset).names
    model = None
    if round_.model_version_id is not None:
        model = load_registered_model(services, round_.model_version_id, str(device))
    return PushTarget(round_, dataset.name, names, model, device)


def particle_finder(
    services: Services, model_id: int, target: PushTarget, context: int
) -> ParticleFinder:
    """Registered Mask R-CNN ``model_id`` (refused before anything is sent when it finds no
    phase of the dataset) and the dataset's instance project."""
    net, _ = load_registered_model(services, model_id, target.device, "maskrcnn")
    category_classes(net.categories, target.names)
    project, asked = particle_project(
        services.label_studio, target.dataset, net.categories, context
    )
    return ParticleFinder(model_id, net, project, asked)


def item_region(item: RoundItem, slice_: Slice) -> Region | None:
    """The region a round item asks to label, on its slice (None: the whole slice)."""
    if item.region is None:
        return None
    y0, x0, size = item.region
    return Region(slice_.volume_id, slice_.axis, slice_.index, y0, x0, size)


def round_tasks(
    services: Services,
    target: PushTarget,
    finder: ParticleFinder | None,
    context: int,
) -> RoundTasks:
    """The round's slices as semantic tasks (the model's prediction pre-filled) and, with
    ``finder``, as particle tasks (its detections, one region per particle). An item with
    a region (a region round's) is a region task instead (:func:`region_task`); the same
    round gives the same tasks each time (a re-push adds none)."""
    connection, round_id = services.label_studio, target.round.id
    items = services.registry.round_items(round_id)
    located = services.registry.slice_volumes(i.slice_id for i in items)
    tasks, drawn, shown, regional = [], [], {}, []
    for item in items:
        slice_, volume = located[item.slice_id]
        with open_stack(volume.path) as stack:
            window = percentile_window(stack)
            images = task_images(connection, stack, window, slice_, volume, context)
            image = normalise(stack.slice(_axis_of(slice_), slice_.index), window)
        task = TaskSpec(
            key=task_key(slice_.id, round_id),
            images=images,
            meta={
                "volume": volume.name,
                "axis": slice_.axis,
                "index": slice_.index,
                "round": round_id,
                "score": round(item.score, 6),
            },
            model_version=str(target.round.model_version_id or ""),
            score=item.score,
        )
        prediction = None
        if target.model is not None:
            prediction = predicted_classes(target.model, image, target.device)
        region = item_region(item, slice_)
        if region is not None:
            prediction = None if prediction is None else region.keep(prediction)
            shape = (image.shape[0], image.shape[1])
            regional.append(region_task(task, region, shape, prediction, target.names))
        else:
            if prediction is not None:
                task = replace(task, prediction=brush_results(prediction, target.names))
            tasks.append(task)
        if prediction is not None:
            shown[slice_.id] = encode_class_mask(prediction)
        if finder is not None:
            drawn.append(particle_task(finder, task, image, target.names))
    return RoundTasks(tasks, drawn, shown, regional)


def region_task(
    task: TaskSpec,
    region: Region,
    shape: tuple[int, int],
    prediction: np.ndarray | None,
    names: tuple[str, ...],
    drawn: bool = True,
) -> TaskSpec:
    """A slice's task as a region task: the region in its data and (``drawn``) drawn on
    the slice as a read-only rectangle, the model's prediction inside it pre-filled
    (``prediction``: a sparse (H, W) class mask, or None without a model)."""
    painted = [] if prediction is None else brush_results(prediction, names)
    rectangle = [region_rectangle(region.window, shape)] if drawn else []
    return replace(
        task,
        meta={**task.meta, "region": {"y0": region.y0, "x0": region.x0, "size": region.size}},
        prediction=[*painted, *rectangle],
    )


def predicted_probabilities(
    model: SemanticModel, image: np.ndarray, device: torch.device
) -> np.ndarray:
    """The model's (C, H, W) float32 class probabilities of a normalised (H, W) slice
    (tiles of the model's training tile side)."""
    spec = model.spec
    return predict_slice(model.network, image, spec.tile, default_overlap(spec.tile), 8, device)


def predicted_classes(model: SemanticModel, image: np.ndarray, device: torch.device) -> np.ndarray:
    """The model's class per pixel of a normalised slice (uint8, (H, W))."""
    classes: np.ndarray = predicted_probabilities(model, image, device).argmax(axis=0)
    return classes.astype(np.uint8)


def particle_task(
    finder: ParticleFinder, task: TaskSpec, image: np.ndarray, names: tuple[str, ...]
) -> TaskSpec:
    """A semantic task as the instance project's task: the Mask R-CNN's particles of the
    phases the project asks for, one region each."""
    from tomoloop.adapters import detectron2  # loads only for a push that needs it

    found = detectron2.predict(finder.net, [grey_uint8(image)])[0]
    particles = detected_particles(found, finder.net.categories, names)
    shown = [k for k, c in enumerate(particles.classes) if names[c] in finder.asked]
    return replace(
        task,
        meta={**task.meta, "particle_phases": finder.asked},
        prediction=instance_results(particles.select(shown), names),
        model_version=str(finder.model_id),
    )


def push_round_tasks(
    services: Services, target: PushTarget, tasks: RoundTasks, context: int
) -> dict[str, Any]:
    """The round's semantic tasks pushed to the dataset's project and its region tasks to
    the dataset's region project, their task ids (and the predictions shown) recorded on
    the round's items; what was pushed where (``regions``: the region project's part)."""
    connection = services.label_studio
    result: dict[str, Any] = {"round": target.round.id}
    ids: dict[str, int] = {}
    if tasks.tasks or not tasks.regional:
        project = connection.client.ensure_project(
            project_title(target.dataset),
            labeling_config(target.names, context, instructions(target.names)),
        )
        ids = push(connection, project, tasks.tasks)
        result.update(pushed(connection, project, ids))
    if tasks.regional:
        project = connection.client.ensure_project(
            regions_title(target.dataset),
            labeling_config(target.names, context, region_instructions(target.names), True),
        )
        regional = push(connection, project, tasks.regional)
        result["regions"] = pushed(connection, project, regional)
        ids = {**ids, **regional}
    services.registry.set_round_tasks(
        target.round.id, {slice_of(k): v for k, v in ids.items()}, tasks.shown
    )
    return result


def push_particle_tasks(
    services: Services, finder: ParticleFinder, tasks: RoundTasks
) -> dict[str, Any]:
    """The round's particle tasks pushed to the instance project; what was pushed where."""
    connection = services.label_studio
    return pushed(connection, finder.project, push(connection, finder.project, tasks.drawn))


def particle_project(
    connection: LabelStudio, dataset: str, categories: list[str], context: int
) -> tuple[int, list[str]]:
    """The dataset's instance project (made for ``categories`` if new) and the phases of
    ``categories`` its view offers, which its tasks ask for.

    Raises:
        LabelStudioRefused: the project offers none of them.
    """
    client = connection.client
    project = client.ensure_project(
        instances_title(dataset),
        labeling_config(categories, context, instance_instructions(categories)),
    )
    offered = offered_labels(client.label_config(project))
    asked = [c for c in categories if c in offered]
    if not asked:
        raise LabelStudioRefused(
            f"project {instances_title(dataset)!r} offers {', '.join(offered)}; the instance "
            f"model finds {', '.join(categories)}: add its phases to the project's labelling "
            "view in Label Studio, or push with a model of the project's phases"
        )
    return project, asked


def pushed(connection: LabelStudio, project: int, ids: dict[str, int]) -> dict[str, Any]:
    """What a push sent to a project: its id, the task count and where to annotate."""
    return {
        "project": project,
        "tasks": len(ids),
        "url": f"{connection.url}/projects/{project}/data",
    }


def push(connection: LabelStudio, project: int, tasks: list[TaskSpec]) -> dict[str, int]:
    """Let the project show the media folder, then push the tasks; ``{key: task id}``."""
    connection.media.mkdir(parents=True, exist_ok=True)
    connection.client.allow_local_files(project, str(connection.media))
    result: dict[str, int] = connection.client.push(project, tasks)
    return result


def task_images(
    connection: LabelStudio,
    stack: Stack,
    window: Window,
    slice_: Slice,
    volume: Volume,
    context: int,
) -> dict[str, str]:
    """The labelling view's images of a slice and its ``context`` neighbours each side
    (``{"image": url, "before_1": url, …}``), written once as 8-bit PNGs where the server
    serves them.
    """
    axis = _axis_of(slice_)
    depth = stack.shape["zyx".index(axis)]
    images = {}
    for name, offset in neighbours(context):
        index = min(max(slice_.index + offset, 0), depth - 1)
        relative = Path(volume.sha256[:16]) / axis / f"{index:05d}.png"
        slice_png(stack, axis, index, connection.media / relative, window)
        images[name] = f"/data/local-files/?d={Path(connection.media.name) / relative}"
    return images


def _axis_of(slice_: Slice) -> Axis:
    """A registered slice's axis as the stacks name it (the registry holds z, y or x)."""
    return cast(Axis, slice_.axis)


def slice_png(stack: Stack, axis: Axis, index: int, path: Path, window: Window) -> None:
    """Slice ``index`` along ``axis`` as an 8-bit PNG at ``path``, unless it is there."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_png(path, to_uint8(stack.slice(axis, index), window))


def neighbours(context: int) -> list[tuple[str, int]]:
    """Task data keys of the slice and its context images with their index offsets."""
    before = [(f"before_{k}", -k) for k in range(context, 0, -1)]
    after = [(f"after_{k}", k) for k in range(1, context + 1)]
    return [("image", 0), *before, *after]


def instructions(names: tuple[str, ...]) -> str:
    return (
        f"Phases: {', '.join(f'{i + 1} = {n}' for i, n in enumerate(names))}. The model's "
        "prediction is pre-filled: correct it where it is wrong (neighbouring slices are "
        "shown above), then submit. Unpainted pixels count as the first phase."
    )


def region_instructions(names: tuple[str, ...]) -> str:
    return (
        f"Phases: {', '.join(f'{i + 1} = {n}' for i, n in enumerate(names))}. Label only "
        "inside the orange rectangle: everything outside it is ignored (the whole slice and "
        "its neighbours are shown for context). The model's prediction inside it is "
        "pre-filled: correct it, then submit. Unpainted pixels inside the rectangle count "
        "as the first phase."
    )


def instance_instructions(categories: list[str]) -> str:
    return (
        f"Particles of {', '.join(f'{i + 1} = {n}' for i, n in enumerate(categories))}, one "
        "region each. The instance model's particles are pre-filled: split regions that "
        "hold two touching particles, merge pieces of one, delete false ones and paint "
        "missed ones (press the phase's hotkey, paint one particle, press Escape before the "
        "next), then submit."
    )


def review_instructions(names: tuple[str, ...]) -> str:
    return (
        f"Review. Phases: {', '.join(f'{i + 1} = {n}' for i, n in enumerate(names))}. An "
        "annotator's label is pre-filled: submit it unchanged to approve it, or correct it "
        "first. Unpainted pixels count as the first phase. A label of a region is reviewed "
        "inside its orange rectangle only."
    )


def sync_project(services: Services, dataset: str) -> dict[str, Any]:
    """Every new annotation of the dataset's semantic project and of its region project (if
    it has one) stored, and the open rounds with nothing pending closed; the counts (of
    both; ``regions``: the region project's) and the closed rounds."""
    registry = services.registry
    names = dataset_phases(services, registry.dataset(dataset)).names
    client = services.label_studio.client  # connected once the dataset is known
    project = client.ensure_project(
        project_title(dataset), labeling_config(names, 1, instructions(names))
    )
    policy = services.settings.review_policy
    counts = store_new(registry, client, Intake(dataset, names, project, policy))
    regional, regions = client.find_project(regions_title(dataset)), {}
    if regional is not None:
        regions = {"regions": store_new(registry, client, Intake(dataset, names, regional, policy))}
        counts = {k: n + regions["regions"][k] for k, n in counts.items()}
    # close_round counts each open round's items and closes it when none is pending
    closed = [r for r in registry.open_rounds(dataset) if not registry.close_round(r)["pending"]]
    return {"dataset": dataset, "project": project, **counts, "closed_rounds": closed, **regions}


def sync_particles(services: Services, dataset: str) -> dict[str, Any] | None:
    """Every new annotation of the dataset's instance project stored as an instance label
    (None: the dataset has no instance project)."""
    registry, client = services.registry, services.label_studio.client
    project = client.find_project(instances_title(dataset))
    if project is None:
        return None
    names = dataset_phases(services, registry.dataset(dataset)).names
    policy = services.settings.review_policy
    intake = Intake(dataset, names, project, policy, Kind.INSTANCE)
    return {"project": project, **store_new(registry, client, intake)}


def store_new(registry: Registry, client: LabelStudioClient, intake: Intake) -> dict[str, int]:
    """Handle the project's annotations not handled before; how many of each status."""
    pulled = client.pull(intake.project)
    seen = registry.ls_event_keys(event_key(a) for a in pulled)
    counts = {**dict.fromkeys(_STATUSES, 0), "seen": len(seen)}
    for a in pulled:
        if event_key(a) not in seen:
            counts[handle_annotation(registry, intake, a, EventVia.POLL)] += 1
    return counts


def sync_reviews(services: Services, dataset: str) -> dict[str, Any]:
    """Claimed reviews → tasks of the review project (the slice and its neighbours, the
    annotator's label pre-filled); the reviewers' answers → the registry. A push that
    fails puts its reviews back in the queue.
    """
    registry, connection = services.registry, services.label_studio
    client, policy = connection.client, services.settings.review_policy
    names = dataset_phases(services, registry.dataset(dataset)).names
    claimed = registry.claim_reviews(dataset)
    try:
        project = client.find_project(review_title(dataset))
        if claimed:
            if project is None:
                project = client.ensure_project(
                    review_title(dataset),
                    labeling_config(names, 1, review_instructions(names), region=True),
                )
            drawn = draws_regions(client.label_config(project))  # a view made before may not
            tasks = {r.id: review_task(services, r, names, drawn) for r in claimed}
            ids = push(connection, project, list(tasks.values()))
            registry.set_review_tasks({r: ids[t.key] for r, t in tasks.items()})
    except BaseException:
        registry.release_reviews([r.id for r in claimed])
        raise
    if project is None:
        return {"project": None, "sent": 0, **dict.fromkeys((*_STATUSES, "seen"), 0)}
    counts = store_new(registry, client, Intake(dataset, names, project, policy))
    return {"project": project, "sent": len(claimed), **counts}


def review_task(
    services: Services, review: Review, names: tuple[str, ...], drawn: bool = True
) -> TaskSpec:
    """The review task of a review: the slice as its labelling task showed it, the
    annotator's label pre-filled; a region's label as a region task, its rectangle drawn
    when the review project's view can show one (``drawn``).
    """
    registry, connection = services.registry, services.label_studio
    label = registry.annotation(review.annotation_id)
    document = mask_document(services, label.id, label.mask_rle, label.mask_uri, label.mask_sha256)
    mask = decode_class_mask(document)
    slice_, volume = registry.slice_volumes([review.slice_id])[review.slice_id]
    with open_stack(volume.path) as stack:
        images = task_images(connection, stack, percentile_window(stack), slice_, volume, 1)
    task = TaskSpec(
        key=review_key(review.slice_id, review.id),
        images=images,
        meta={
            "volume": volume.name,
            "axis": slice_.axis,
            "index": slice_.index,
            "round": "review",
            "score": review.model_iou if review.model_iou is not None else "",
            "reasons": review.reasons,
            "annotator": label.author,
        },
        prediction=brush_results(mask, names),
        model_version="annotator",
    )
    tile = labelled_tile(mask)  # a region's label is reviewed as a region task
    if tile is None:
        return task
    region = Region(volume.id, slice_.axis, slice_.index, *tile)
    return region_task(task, region, mask.shape, mask, names, drawn)
