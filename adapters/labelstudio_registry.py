"""Label Studio annotations into the registry: the one place that turns an annotation
(polled or delivered by webhook) into a registry annotation, a skip or a rejection, and
decides whether it goes to review.

Each annotation event is keyed by its Label Studio id and update time and handled once; a
stored annotation has its exact mask and source ``labelstudio:<id>@<updated>`` (an update
is a new annotation; nothing is deleted). In a dataset's labelling project it is tier
``annotator`` and is routed by :func:`tomoloop.active.route` (a queued review, and the
per-class Dice against other annotators of the task); in its region project the same,
but the label is sparse: the classes painted inside the task's region,
:data:`tomoloop.labels.IGNORE` outside (whatever was painted there is dropped); in its
review project it is tier ``expert`` and settles the review it answers (approved when
unchanged, else corrected); in its instance project it is an instance label (one mask per
particle) of tier ``annotator``, which Mask R-CNN training uses for its slice (instance
labels are not routed to review).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tomoloop.active.regions import Region
from tomoloop.active.review import ReviewPolicy, class_dice, route
from tomoloop.active.selection import SelectionError
from tomoloop.db.entities import NewAgreement, NewEvent, Review
from tomoloop.db.models import Kind, Tier
from tomoloop.db.registry import NewAnnotation, Registry, RegistryError
from tomoloop.db.states import EventStatus, EventVia, ItemState, ReviewState
from tomoloop.labels.masks import (
    InstanceMasks,
    decode_class_mask,
    encode_class_mask,
    encode_instances,
)
from tomoloop.labels.studio_json import (
    AnnotationRejected,
    PulledAnnotation,
    instances_from_results,
    mask_from_results,
)

PROJECT_SUFFIX = " · semantic"
REVIEW_SUFFIX = " · review"
INSTANCES_SUFFIX = " · instances"
REGIONS_SUFFIX = " · regions"


def project_title(dataset: str) -> str:
    """The Label Studio project of a dataset's semantic labels."""
    return f"{dataset}{PROJECT_SUFFIX}"


def instances_title(dataset: str) -> str:
    """The Label Studio project of a dataset's instance labels (one region per particle)."""
    return f"{dataset}{INSTANCES_SUFFIX}"


def regions_title(dataset: str) -> str:
    """The Label Studio project where a person labels regions of slices (sparse labels)."""
    return f"{dataset}{REGIONS_SUFFIX}"


def review_title(dataset: str) -> str:
    """The Label Studio project where a second person reviews the dataset's labels."""
    return f"{dataset}{REVIEW_SUFFIX}"


def project_of(title: str) -> tuple[str, Kind] | None:
    """The dataset whose labelling, review or instance project this is, and the kind of
    label the project makes (None for projects tomoloop did not make)."""
    for suffix, kind in (
        (PROJECT_SUFFIX, Kind.SEMANTIC),
        (REVIEW_SUFFIX, Kind.SEMANTIC),
        (REGIONS_SUFFIX, Kind.SEMANTIC),
        (INSTANCES_SUFFIX, Kind.INSTANCE),
    ):
        if title.endswith(suffix):
            return title.removesuffix(suffix), kind
    return None


def task_key(slice_id: int, round_id: int) -> str:
    return f"slice-{slice_id}:round-{round_id}"


def review_key(slice_id: int, review_id: int) -> str:
    return f"slice-{slice_id}:review-{review_id}"


def slice_of(key: str) -> int:
    """The registry slice id a task key names."""
    try:
        return int(key.split(":")[0].removeprefix("slice-"))
    except ValueError:
        raise AnnotationRejected(f"task key {key!r} names no tomoloop slice") from None


def _second_part(key: str, prefix: str) -> int | None:
    """The number after ``:<prefix>`` in a task key (None when the key has another)."""
    _, _, rest = key.partition(":")
    if not rest.startswith(prefix):
        return None
    try:
        return int(rest.removeprefix(prefix))
    except ValueError:
        raise AnnotationRejected(f"task key {key!r} names no tomoloop {prefix[:-1]}") from None


def review_of(key: str) -> int | None:
    """The review id a review task's key names (None for a labelling task's key)."""
    return _second_part(key, "review-")


def round_of(key: str) -> int | None:
    """The round id a labelling task's key names (None for a review task's key)."""
    return _second_part(key, "round-")


def event_key(a: PulledAnnotation) -> str:
    return f"{a.annotation_id}@{a.updated_at}"


@dataclass(frozen=True)
class Intake:
    """Where annotations arrive: the dataset, its phase names (class order), the Label
    Studio project they come from, when a label goes to review, and what kind of label
    the project makes.
    """

    dataset: str
    names: tuple[str, ...]
    project: int
    policy: ReviewPolicy = field(default_factory=ReviewPolicy)
    kind: Kind = Kind.SEMANTIC


def handle_annotation(registry: Registry, intake: Intake, a: PulledAnnotation, via: str) -> str:
    """Store one pulled or webhook-delivered annotation; its status (stored / skipped /
    rejected / seen). One transaction: the registry annotation, its review routing or the
    review it settles, and the event — or none of them. Everything that can reject an
    annotation is checked before anything is written. Of two handlers racing on one event
    (a poll and a webhook, two syncs), the one whose event row loses the unique key reports
    ``seen`` (its writes were no-ops: same natural keys).
    """
    key = event_key(a)
    if registry.ls_event_keys([key]):
        return "seen"
    annotation_id, reason = None, ""
    with registry.atomic():
        try:
            slice_id, review_id = slice_of(a.task_key), review_of(a.task_key)
            if review_id is not None and intake.kind is Kind.INSTANCE:
                raise AnnotationRejected(
                    f"task key {a.task_key!r} names a review, but instance labels are not "
                    "reviewed: instance projects hold round tasks only"
                )
            review = (
                None
                if review_id is None
                else _review_of_slice(registry, review_id, slice_id, a.task_key)
            )
            mask = None if a.was_cancelled else _decode(registry, intake, slice_id, a)
        except (AnnotationRejected, RegistryError) as exc:
            status, reason = EventStatus.REJECTED, str(exc)[:1000]
        else:
            status = EventStatus.SKIPPED if mask is None else EventStatus.STORED
            if mask is None:
                _skip(registry, intake, review, a)
            elif isinstance(mask, InstanceMasks):
                drawn = encode_instances(mask)  # instance labels are not reviewed
                annotation_id = _add_label(
                    registry, slice_id, Tier.ANNOTATOR, Kind.INSTANCE, drawn, a, key
                )
            else:
                annotation_id = _store(registry, intake, slice_id, review, mask, a, key)
        event = NewEvent(
            key, EventVia(via), "ANNOTATION", intake.project, a.task_id, a.annotation_id,
            status, reason, annotation_id,
        )  # fmt: skip
        if not registry.record_ls_event(event):
            return "seen"
    return status


def _skip(registry: Registry, intake: Intake, review: Review | None, a: PulledAnnotation) -> None:
    """Record a skip of a review or of a round's semantic task (a skipped instance task
    leaves its round to the semantic one)."""
    if review is not None:
        registry.resolve_review(review.id, ReviewState.SKIPPED)
    elif intake.kind is Kind.SEMANTIC:
        registry.resolve_task(a.task_id, ItemState.SKIPPED)


def _review_of_slice(registry: Registry, review_id: int, slice_id: int, key: str) -> Review:
    """The review a review task's key names, which must be of the slice the key names."""
    review = registry.review(review_id)
    if review.slice_id != slice_id:
        raise AnnotationRejected(
            f"review task key {key!r} names slice {slice_id}, but review {review_id} is of "
            f"slice {review.slice_id}"
        )
    return review


def _decode(
    registry: Registry, intake: Intake, slice_id: int, a: PulledAnnotation
) -> np.ndarray | InstanceMasks:
    """The annotation's (H, W) class mask (of a region task: sparse, :data:`IGNORE`
    outside the region), or its particles in an instance project."""
    slice_, volume = registry.slice_volumes([slice_id])[slice_id]
    shape = (volume.shape_z, volume.shape_y, volume.shape_x)
    plane = tuple(n for axis, n in zip("zyx", shape, strict=True) if axis != slice_.axis)
    if intake.kind is Kind.INSTANCE:
        return instances_from_results(a.result, plane, intake.names, a.particle_phases)
    mask = mask_from_results(a.result, plane, intake.names)
    if a.region is None:
        return mask
    return _region_of(a.region, volume.id, slice_.axis, slice_.index, mask.shape).keep(mask)


def _region_of(data: Any, volume: int, axis: str, index: int, shape: tuple[int, int]) -> Region:
    """The region a task's data name (``{"y0", "x0", "size"}``) on an (H, W) slice.

    Raises:
        AnnotationRejected: the data are no such region, or it lies outside the slice.
    """
    try:
        region = Region(volume, axis, index, int(data["y0"]), int(data["x0"]), int(data["size"]))
    except (KeyError, TypeError, ValueError, SelectionError) as exc:
        raise AnnotationRejected(
            f"the task's region {data!r} is no region of the slice ({exc}): region tasks name "
            '{"y0", "x0", "size"} in pixels; push them with tomoloop'
        ) from None
    if region.pixels(shape) == 0:
        raise AnnotationRejected(f"the task's region {data!r} lies outside the {shape} slice")
    return region


def _add_label(
    registry: Registry,
    slice_id: int,
    tier: Tier,
    kind: Kind,
    mask_rle: dict,
    a: PulledAnnotation,
    key: str,
) -> int:
    """Add the registry label of a Label Studio annotation event (its :func:`event_key`);
    its id."""
    source = f"labelstudio:{key}"
    registry.add_annotations(
        [
            NewAnnotation(
                slice_id,
                tier,
                source,
                mask_rle=mask_rle,
                ls_task_id=a.task_id,
                ls_annotation_id=a.annotation_id,
                author=a.author,
                lead_time_s=a.lead_time_s,
                kind=kind,
            )
        ]
    )
    return registry.annotation_id(slice_id, tier, source)


def _store(
    registry: Registry,
    intake: Intake,
    slice_id: int,
    review: Review | None,
    mask: np.ndarray,
    a: PulledAnnotation,
    key: str,
) -> int:
    """Store the label (tier expert for a review, else annotator) and route or settle it;
    the registry annotation's id.
    """
    tier = Tier.ANNOTATOR if review is None else Tier.EXPERT
    stored = _add_label(registry, slice_id, tier, Kind.SEMANTIC, encode_class_mask(mask), a, key)
    if review is None:
        registry.resolve_task(a.task_id, ItemState.ANNOTATED, a.lead_time_s)
        _route(registry, intake, slice_id, stored, mask, a)
    else:
        reviewed = decode_class_mask(registry.annotation(review.annotation_id).mask_rle)
        dice = class_dice(reviewed, mask, len(intake.names))
        _agree(registry, intake, slice_id, "review", stored, [(review.annotation_id, dice)])
        state = ReviewState.APPROVED if np.array_equal(reviewed, mask) else ReviewState.CORRECTED
        registry.resolve_review(review.id, state, stored)
    return stored


def _route(
    registry: Registry,
    intake: Intake,
    slice_id: int,
    stored: int,
    mask: np.ndarray,
    a: PulledAnnotation,
) -> None:
    """Record agreement with the task's other annotators and queue a review if due (an
    update supersedes the open review of the label it updates).
    """
    round_id = round_of(a.task_key)
    item = None if round_id is None else registry.round_item(round_id, slice_id)
    shown = item.prediction_rle if item is not None else None
    others = [
        o
        for o in registry.task_labels(a.task_id, slice_id)
        if o.ls_annotation_id != a.annotation_id and o.mask_rle is not None
    ]
    routing = route(
        mask,
        len(intake.names),
        f"labelstudio:{a.annotation_id}",
        intake.policy,
        None if shown is None else decode_class_mask(shown),
        [decode_class_mask(o.mask_rle) for o in others],
    )
    pairs = [(o.id, d) for o, d in zip(others, routing.agreements, strict=True)]
    _agree(registry, intake, slice_id, "annotators", stored, pairs)
    registry.supersede_reviews(stored)
    if routing.reasons:
        registry.add_review(stored, intake.dataset, routing.reasons, routing.model_iou)


def _agree(
    registry: Registry,
    intake: Intake,
    slice_id: int,
    kind: str,
    stored: int,
    pairs: list[tuple[int, np.ndarray]],
) -> None:
    """Record the per-class Dice of the label ``stored`` against each earlier label
    (``pairs``: earlier annotation id, (n_classes,) Dice with NaN for absent classes).
    """
    registry.add_agreements(
        [
            NewAgreement(
                slice_id=slice_id,
                dataset=intake.dataset,
                annotation_a_id=earlier,
                annotation_b_id=stored,
                kind=kind,
                class_name=intake.names[c],
                dice=float(d),
            )
            for earlier, dice in pairs
            for c, d in enumerate(dice)
            if np.isfinite(d)
        ]
    )
