"""Label Studio flows: push a round's slices with the model's prediction pre-filled, and
pull annotations back into the registry as tier ``annotator`` — and reviewed ones as
tier ``expert``.

push: the round's slices (and their z ± k neighbours) as 8-bit PNGs where the server can
serve them → one semantic project per dataset → tasks with predictions → task ids (and
the prediction shown) on the round items; given a Mask R-CNN, the same slices also go to
the dataset's instance project with its detections, one region per particle. sync: every
annotation of the project not handled before (keyed by annotation id and update time) →
a registry annotation with its exact mask, or a skip, or a rejection with its reason —
never silently dropped; labels due for review (``tomoloop.active.review``) → tasks in the
dataset's review project with the annotator's label pre-filled; the reviewers' answers →
tier ``expert``; the instance project's annotations → instance labels, which Mask R-CNN
training prefers to connected components of the class mask.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger

from tomoloop.active.review import ReviewPolicy
from tomoloop.adapters.labelstudio import (
    LabelStudioClient,
    LabelStudioRefused,
    TaskSpec,
    brush_results,
    instance_results,
    labeling_config,
)
from tomoloop.adapters.labelstudio_registry import (
    Intake,
    event_key,
    handle_annotation,
    instances_title,
    project_title,
    review_key,
    review_title,
    slice_of,
    task_key,
)
from tomoloop.adapters.labelstudio_server import LocalLabelStudio, label_studio_credentials
from tomoloop.config import Settings
from tomoloop.db.entities import Review
from tomoloop.db.models import Kind
from tomoloop.db.registry import Registry
from tomoloop.flows.resources import Services, dataset_phases, load_registered_model
from tomoloop.inference.predict import normalise, predict_slice
from tomoloop.labels.masks import decode_class_mask, encode_class_mask
from tomoloop.particles.instances import category_classes, detected_particles, grey_uint8
from tomoloop.stacks.png import write_png
from tomoloop.stacks.tiff import open_stack, percentile_window, to_uint8
from tomoloop.training.trainer import resolve_device


@dataclass(frozen=True)
class _Connection:
    client: LabelStudioClient
    url: str
    media: Path


def connect(settings: Settings) -> _Connection:
    url, token = label_studio_credentials(settings)
    media = settings.label_studio_files or LocalLabelStudio(settings.home).files_root / "media"
    return _Connection(LabelStudioClient(url, token), url, Path(media))


def _slice_png(stack, axis: str, index: int, path: Path, window) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_png(path, to_uint8(stack.slice(axis, index), window))


@flow(name="push-round")
def push_round(
    round_id: int, context: int = 1, instance_model: int | None = None, device: str = "auto"
) -> dict:
    """Send a round's slices to the dataset's semantic project with the round's model's
    prediction; with ``instance_model`` (a registered Mask R-CNN) also to its instance
    project with that model's detections, one region per particle.
    """
    log = get_run_logger()
    settings = Settings()
    services = Services.from_settings(settings)
    try:
        registry = services.registry
        round_ = registry.al_round(round_id)
        dataset = registry.dataset(round_.dataset)
        names = dataset_phases(services, dataset).names
        torch_device = resolve_device(device)
        model = None
        if round_.model_version_id is not None:
            model, spec, _ = load_registered_model(
                services, round_.model_version_id, str(torch_device)
            )
        finder = None
        connection = connect(settings)
        if instance_model is not None:
            # imported here: detectron2 loads only for a push that needs it
            from tomoloop.adapters import detectron2
            from tomoloop.flows.instances import load_registered_maskrcnn

            finder, _ = load_registered_maskrcnn(services, instance_model, torch_device)
            category_classes(finder.categories, names)  # refused before anything is sent
            particle_project, asked = _particle_project(
                connection, dataset.name, finder.categories, context
            )
        items = registry.round_items(round_id)
        located = registry.slice_volumes(i.slice_id for i in items)
        tasks, drawn, shown = [], [], {}
        for item in items:
            slice_, volume = located[item.slice_id]
            with open_stack(volume.path) as stack:
                window = percentile_window(stack)
                images = _task_images(connection, stack, window, slice_, volume, context)
                image = normalise(stack.slice(slice_.axis, slice_.index), window)
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
                model_version=str(round_.model_version_id or ""),
                score=item.score,
            )
            if model is not None:
                probs = predict_slice(model, image, spec.tile, spec.tile // 4, 8, torch_device)
                prediction = probs.argmax(axis=0).astype(np.uint8)
                shown[slice_.id] = encode_class_mask(prediction)
                task = replace(task, prediction=brush_results(prediction, names))
            tasks.append(task)
            if finder is not None:
                found = detectron2.predict(finder, [grey_uint8(image)])[0]
                particles = detected_particles(found, finder.categories, names)
                shown_particles = [k for k, c in enumerate(particles.classes) if names[c] in asked]
                drawn.append(
                    replace(
                        task,
                        meta={**task.meta, "particle_phases": asked},
                        prediction=instance_results(particles.select(shown_particles), names),
                        model_version=str(instance_model),
                    )
                )
        project = connection.client.ensure_project(
            project_title(dataset.name),
            labeling_config(names, context, _instructions(names)),
        )
        ids = _push(connection, project, tasks)
        registry.set_round_tasks(round_id, {slice_of(k): v for k, v in ids.items()}, shown)
        result = {"round": round_id, **_pushed(connection, project, ids)}
        if finder is not None:
            result["instances"] = _pushed(
                connection, particle_project, _push(connection, particle_project, drawn)
            )
        log.info("round %s pushed: %s", round_id, result)
        return result
    finally:
        services.close()


def _particle_project(
    connection: _Connection, dataset: str, categories: list[str], context: int
) -> tuple[int, list[str]]:
    """The dataset's instance project (made for ``categories`` if new) and the phases of
    ``categories`` its view offers, which its tasks ask for.

    Raises:
        LabelStudioRefused: the project offers none of them.
    """
    client = connection.client
    project = client.ensure_project(
        instances_title(dataset),
        labeling_config(categories, context, _instance_instructions(categories)),
    )
    offered = client.offered_labels(project)
    asked = [c for c in categories if c in offered]
    if not asked:
        raise LabelStudioRefused(
            f"project {instances_title(dataset)!r} offers {', '.join(offered)}; the instance "
            f"model finds {', '.join(categories)}: add its phases to the project's labelling "
            "view in Label Studio, or push with a model of the project's phases"
        )
    return project, asked


def _pushed(connection: _Connection, project: int, ids: dict[str, int]) -> dict:
    """What a push sent to a project: its id, the task count and where to annotate."""
    return {
        "project": project,
        "tasks": len(ids),
        "url": f"{connection.url}/projects/{project}/data",
    }


def _push(connection: _Connection, project: int, tasks: list[TaskSpec]) -> dict[str, int]:
    """Let the project show the media folder, then push the tasks; ``{key: task id}``."""
    connection.media.mkdir(parents=True, exist_ok=True)
    connection.client.allow_local_files(project, str(connection.media))
    return connection.client.push(project, tasks)


def _task_images(connection: _Connection, stack, window, slice_, volume, context: int) -> dict:
    """The labelling view's images of a slice and its ``context`` neighbours each side
    (``{"image": url, "before_1": url, …}``), written once as 8-bit PNGs where the server
    serves them.
    """
    depth = stack.shape["zyx".index(slice_.axis)]
    images = {}
    for name, offset in _neighbours(context):
        index = min(max(slice_.index + offset, 0), depth - 1)
        relative = Path(volume.sha256[:16]) / slice_.axis / f"{index:05d}.png"
        _slice_png(stack, slice_.axis, index, connection.media / relative, window)
        images[name] = f"/data/local-files/?d={_served(connection, relative)}"
    return images


def _neighbours(context: int) -> list[tuple[str, int]]:
    """Task data keys of the slice and its context images with their index offsets."""
    before = [(f"before_{k}", -k) for k in range(context, 0, -1)]
    after = [(f"after_{k}", k) for k in range(1, context + 1)]
    return [("image", 0), *before, *after]


def _served(connection: _Connection, relative: Path) -> str:
    """The path Label Studio serves a media file by (relative to its document root)."""
    return str(Path(connection.media.name) / relative)


def _instructions(names: tuple[str, ...]) -> str:
    return (
        f"Phases: {', '.join(f'{i + 1} = {n}' for i, n in enumerate(names))}. The model's "
        "prediction is pre-filled: correct it where it is wrong (neighbouring slices are "
        "shown above), then submit. Unpainted pixels count as the first phase."
    )


def _instance_instructions(categories: list[str]) -> str:
    return (
        f"Particles of {', '.join(f'{i + 1} = {n}' for i, n in enumerate(categories))}, one "
        "region each. The instance model's particles are pre-filled: split regions that "
        "hold two touching particles, merge pieces of one, delete false ones and paint "
        "missed ones (press the phase's hotkey, paint one particle, press Escape before the "
        "next), then submit."
    )


def _review_instructions(names: tuple[str, ...]) -> str:
    return (
        f"Review. Phases: {', '.join(f'{i + 1} = {n}' for i, n in enumerate(names))}. An "
        "annotator's label is pre-filled: submit it unchanged to approve it, or correct it "
        "first. Unpainted pixels count as the first phase."
    )


@flow(name="sync-annotations")
def sync_annotations(dataset: str) -> dict:
    """Pull every new annotation of a dataset's project into the registry (polling), send
    the labels due for review to the review project, and pull the reviewers' answers.
    """
    log = get_run_logger()
    settings = Settings()
    services = Services.from_settings(settings)
    try:
        registry = services.registry
        names = dataset_phases(services, registry.dataset(dataset)).names
        connection = connect(settings)
        client = connection.client
        project = client.ensure_project(
            project_title(dataset), labeling_config(names, 1, _instructions(names))
        )
        policy = settings.review_policy
        counts = _store_new(registry, client, Intake(dataset, names, project, policy))
        # close_round counts each open round's items and closes it when none is pending
        closed = [
            r for r in registry.open_rounds(dataset) if not registry.close_round(r)["pending"]
        ]
        log.info("project %s: %s; rounds closed: %s", project, counts, closed or "none")
        result = {"dataset": dataset, "project": project, **counts, "closed_rounds": closed}
        if registry.has_reviews(dataset):
            result["review"] = _sync_reviews(services, connection, dataset, names, policy)
            log.info("review project: %s", result["review"])
        particle_project = client.find_project(instances_title(dataset))
        if particle_project is not None:
            intake = Intake(dataset, names, particle_project, policy, Kind.INSTANCE)
            result["instances"] = {
                "project": particle_project,
                **_store_new(registry, client, intake),
            }
            log.info("instance project: %s", result["instances"])
        return result
    finally:
        services.close()


_STATUSES = ("stored", "skipped", "rejected")  # what handle_annotation makes of a new event


def _store_new(registry: Registry, client: LabelStudioClient, intake: Intake) -> dict[str, int]:
    """Handle the project's annotations not handled before; how many of each status."""
    pulled = client.pull(intake.project)
    seen = registry.ls_event_keys(event_key(a) for a in pulled)
    counts = {**dict.fromkeys(_STATUSES, 0), "seen": len(seen)}
    for a in pulled:
        if event_key(a) not in seen:
            counts[handle_annotation(registry, intake, a, "poll")] += 1
    return counts


def _sync_reviews(
    services: Services,
    connection: _Connection,
    dataset: str,
    names: tuple[str, ...],
    policy: ReviewPolicy,
) -> dict:
    """Claimed reviews → tasks of the review project (the slice and its neighbours, the
    annotator's label pre-filled); the reviewers' answers → the registry. A push that
    fails puts its reviews back in the queue.
    """
    registry, client = services.registry, connection.client
    claimed = registry.claim_reviews(dataset)
    try:
        project = client.find_project(review_title(dataset))
        if claimed:
            if project is None:
                project = client.ensure_project(
                    review_title(dataset), labeling_config(names, 1, _review_instructions(names))
                )
            tasks = {r.id: _review_task(registry, connection, r, names) for r in claimed}
            ids = _push(connection, project, list(tasks.values()))
            registry.set_review_tasks({r: ids[t.key] for r, t in tasks.items()})
    except BaseException:
        registry.release_reviews([r.id for r in claimed])
        raise
    if project is None:
        return {"project": None, "sent": 0, **dict.fromkeys((*_STATUSES, "seen"), 0)}
    counts = _store_new(registry, client, Intake(dataset, names, project, policy))
    return {"project": project, "sent": len(claimed), **counts}


def _review_task(
    registry: Registry, connection: _Connection, review: Review, names: tuple[str, ...]
) -> TaskSpec:
    """The review task of a review: the slice as its labelling task showed it, the
    annotator's label pre-filled.
    """
    label = registry.annotation(review.annotation_id)
    slice_, volume = registry.slice_volumes([review.slice_id])[review.slice_id]
    with open_stack(volume.path) as stack:
        images = _task_images(connection, stack, percentile_window(stack), slice_, volume, 1)
    return TaskSpec(
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
        prediction=brush_results(decode_class_mask(label.mask_rle), names),
        model_version="annotator",
    )
