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

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tomoloop.services import (
    Services,
    particle_finder,
    push_particle_tasks,
    push_round_tasks,
    push_target,
    round_tasks,
    sync_particles,
    sync_project,
    sync_reviews,
)
from tomoloop.training.trainer import resolve_device

# Retried as a task: a push that failed half-way (Label Studio restarted after the client's
# own retries gave up) imports only the tasks still missing, so running it again is safe.
push_tasks = task(
    push_round_tasks, name="push-tasks", retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE
)


@flow(name="push-round")
def push_round(
    round_id: int, context: int = 1, instance_model: int | None = None, device: str = "auto"
) -> dict:
    """Send a round's slices to the dataset's semantic project with the round's model's
    prediction; with ``instance_model`` (a registered Mask R-CNN) also to its instance
    project with that model's detections, one region per particle.
    """
    torch_device = resolve_device(device)
    with Services.from_settings() as services:
        target = push_target(services, round_id, torch_device)
        finder = None
        if instance_model is not None:  # refused before anything is sent
            finder = particle_finder(services, instance_model, target, context)
        tasks = round_tasks(services, target, finder, context)
        result = push_tasks(services, target, tasks, context)
        if finder is not None:
            result["instances"] = push_particle_tasks(services, finder, tasks)
    get_run_logger().info("round %s pushed: %s", round_id, result)
    return result


@flow(name="sync-annotations")
def sync_annotations(dataset: str) -> dict:
    """Pull every new annotation of a dataset's project into the registry (polling), send
    the labels due for review to the review project, and pull the reviewers' answers.
    """
    log = get_run_logger()
    with Services.from_settings() as services:
        result = sync_project(services, dataset)
        log.info(
            "project %s: %s; rounds closed: %s",
            result["project"],
            {k: result[k] for k in ("stored", "skipped", "rejected", "seen")},
            result["closed_rounds"] or "none",
        )
        if services.registry.has_reviews(dataset):
            result["review"] = sync_reviews(services, dataset)
            log.info("review project: %s", result["review"])
        particles = sync_particles(services, dataset)
        if particles is not None:
            result["instances"] = particles
            log.info("instance project: %s", result["instances"])
    return result
