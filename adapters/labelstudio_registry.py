"""Label Studio annotations into the registry: the one place that turns an annotation
(polled or delivered by webhook) into a registry annotation, a skip or a rejection.

Each annotation event is keyed by its Label Studio id and update time and handled once; a
stored annotation is tier ``annotator`` with its exact mask, source
``labelstudio:<id>@<updated>`` (an update is a new annotation; nothing is deleted).
"""

from __future__ import annotations

from tomoloop.adapters.labelstudio import AnnotationRejected, PulledAnnotation, mask_from_results
from tomoloop.db.models import LabelStudioEvent, Tier
from tomoloop.db.registry import NewAnnotation, Registry, RegistryError
from tomoloop.masks import encode_class_mask

PROJECT_SUFFIX = " · semantic"


def project_title(dataset: str) -> str:
    """The Label Studio project of a dataset's semantic labels."""
    return f"{dataset}{PROJECT_SUFFIX}"


def dataset_of(title: str) -> str | None:
    """The dataset whose project this is (None for projects tomoloop did not make)."""
    return title.removesuffix(PROJECT_SUFFIX) if title.endswith(PROJECT_SUFFIX) else None


def task_key(slice_id: int, round_id: int) -> str:
    return f"slice-{slice_id}:round-{round_id}"


def slice_of(key: str) -> int:
    """The registry slice id a task key names."""
    try:
        return int(key.split(":")[0].removeprefix("slice-"))
    except ValueError:
        raise AnnotationRejected(f"task key {key!r} names no tomoloop slice") from None


def event_key(a: PulledAnnotation) -> str:
    return f"{a.annotation_id}@{a.updated_at}"


def handle_annotation(
    registry: Registry, names: tuple[str, ...], project: int, a: PulledAnnotation, via: str
) -> str:
    """Store one pulled or webhook-delivered annotation; its status (stored / skipped /
    rejected / seen). One transaction: the registry annotation and the event, or neither.
    Of two handlers racing on one event (a poll and a webhook, two syncs), the one whose
    event row loses the unique key reports ``seen`` (its annotation insert was a no-op:
    same natural key).
    """
    event = LabelStudioEvent(
        key=event_key(a),
        via=via,
        action="ANNOTATION",
        ls_project_id=project,
        ls_task_id=a.task_id,
        ls_annotation_id=a.annotation_id,
    )
    if registry.ls_event_keys([event.key]):
        return "seen"
    with registry.atomic():
        if a.was_cancelled:
            event.status = "skipped"
            registry.resolve_task(a.task_id, "skipped")
        else:
            try:
                slice_id = slice_of(a.task_key)
                slice_, volume = registry.slice_volumes([slice_id])[slice_id]
                shape = tuple(
                    n for axis, n in zip("zyx", _shape(volume), strict=True) if axis != slice_.axis
                )
                mask = mask_from_results(a.result, shape, names)
            except (AnnotationRejected, RegistryError) as exc:
                event.status, event.reason = "rejected", str(exc)[:1000]
            else:
                source = f"labelstudio:{event.key}"
                registry.add_annotations(
                    [
                        NewAnnotation(
                            slice_id,
                            Tier.ANNOTATOR,
                            source,
                            mask_rle=encode_class_mask(mask),
                            ls_task_id=a.task_id,
                            ls_annotation_id=a.annotation_id,
                            author=a.author,
                            lead_time_s=a.lead_time_s,
                        )
                    ]
                )
                event.status = "stored"
                event.annotation_id = registry.annotation_id(slice_id, Tier.ANNOTATOR, source)
                registry.resolve_task(a.task_id, "annotated", a.lead_time_s)
        if not registry.record_ls_event(event):
            return "seen"
    return event.status


def _shape(volume) -> tuple[int, int, int]:
    return volume.shape_z, volume.shape_y, volume.shape_x
