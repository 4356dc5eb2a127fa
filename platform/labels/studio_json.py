"""Labels as Label Studio holds them: the labelling view of a project (XML), brush regions
(Label Studio's RLE of an RGBA image, via the SDK's converter) from class and instance
masks and back, the rectangle a region task draws, the task a push sends and the annotation
a pull returns. Pure data: the client in :mod:`tomoloop.adapters.labelstudio` sends and
receives them.

A semantic label is one brush region per class present; an instance label one region per
particle; pixels a sparse label leaves unpainted are :data:`tomoloop.labels.IGNORE`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

import numpy as np
from label_studio_sdk.converter import brush

from tomoloop.errors import TomoloopError
from tomoloop.labels.masks import InstanceMasks
from tomoloop.labels.phases import IGNORE

FROM_NAME, TO_NAME = "phase", "image"
# The region a region task asks to label: a read-only rectangle on the slice.
REGION_NAME, REGION_LABEL, REGION_COLOUR = "region", "label inside", "#D55E00"
# Colour-blind-safe (Okabe–Ito) colours, one per phase in phase-map order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")


class AnnotationRejected(TomoloopError):
    """An annotation that cannot become a mask (unknown label, undecodable RLE)."""


def labeling_config(
    class_names: Sequence[str], context: int = 1, instructions: str = "", region: bool = False
) -> str:
    """The labelling view of a project: the slice, its neighbours z − k … z + k as context
    images, a brush label per class (the phases of a semantic project, the particle
    phases of an instance project; hotkeys 1, 2, …) and what to do as instructions. Task
    data keys: ``image``, ``before_1`` … ``after_k``. With ``region``, the view also draws
    the region to label (:func:`region_rectangle`, a read-only rectangle) on the slice.
    """
    labels = "\n".join(
        f'    <Label value={quoteattr(name)} background="{PALETTE[i % len(PALETTE)]}" '
        f'hotkey="{i + 1}"/>'
        for i, name in enumerate(class_names)
    )
    neighbours = "\n".join(
        f'    <Image name="{side}_{k}" value="${side}_{k}" zoom="true"/>'
        for side, ks in (("before", range(context, 0, -1)), ("after", range(1, context + 1)))
        for k in ks
    )
    help_text = quoteattr(instructions or "Paint every phase; correct the pre-filled prediction.")
    rectangle = (
        f'  <RectangleLabels name="{REGION_NAME}" toName="{TO_NAME}" strokeWidth="3" '
        f'opacity="0.15" canRotate="false">\n'
        f'    <Label value="{REGION_LABEL}" background="{REGION_COLOUR}"/>\n'
        "  </RectangleLabels>\n"
        if region
        else ""
    )
    return f"""<View>
  <Header value="Slice $axis = $index of $volume (round $round, score $score)"/>
  <Text name="instructions" value={help_text}/>
  <View style="display: flex; gap: 8px">
{neighbours}
  </View>
  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">
{labels}
  </BrushLabels>
{rectangle}  <Image name="{TO_NAME}" value="$image" zoom="true" zoomControl="true"/>
</View>"""


def offered_labels(label_config: str) -> list[str]:
    """The brush labels a labelling view (XML) offers, in its order."""
    return [
        label.get("value", "")
        for brushes in ElementTree.fromstring(label_config).iter("BrushLabels")
        if brushes.get("name") == FROM_NAME
        for label in brushes.iter("Label")
    ]


def draws_regions(label_config: str) -> bool:
    """Whether a labelling view (XML) can show a region task's rectangle (its
    ``RectangleLabels`` control, :func:`labeling_config` with ``region``)."""
    return any(
        control.get("name") == REGION_NAME
        for control in ElementTree.fromstring(label_config).iter("RectangleLabels")
    )


def _region(region_id: str, binary: np.ndarray, label: str) -> dict:
    """One Label Studio brush region: an (H, W) bool mask with one label."""
    h, w = binary.shape
    return {
        "id": region_id,
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "type": "brushlabels",
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {
            "format": "rle",
            "rle": brush.mask2rle(np.where(binary, 255, 0).astype(np.uint8)),
            "brushlabels": [label],
        },
    }


def brush_results(mask: np.ndarray, class_names: Sequence[str]) -> list[dict]:
    """Label Studio brush regions (one per class present) of an (H, W) class-index mask;
    unlabelled pixels (:data:`IGNORE` in a uint8 mask) stay unpainted."""
    present = np.unique(mask)
    if mask.dtype == np.uint8:
        present = present[present != IGNORE]
    return [_region(f"class-{int(c)}", mask == c, class_names[int(c)]) for c in present]


def instance_results(instances: InstanceMasks, class_names: Sequence[str]) -> list[dict]:
    """Label Studio brush regions, one per particle, of a slice's instance masks (labels:
    the class names of their classes)."""
    return [
        _region(f"particle-{k}", mask, class_names[int(c)])
        for k, (mask, c) in enumerate(zip(instances.masks, instances.classes, strict=True))
    ]


def region_rectangle(window: tuple[slice, slice], shape: tuple[int, int]) -> dict:
    """The Label Studio result that draws a region on an (H, W) slice: a read-only
    rectangle (percent of the image, as Label Studio stores rectangles) of the window's
    (rows, columns) part inside the slice."""
    h, w = shape
    rows, columns = window
    y0, y1 = min(rows.start, h), min(rows.stop, h)
    x0, x1 = min(columns.start, w), min(columns.stop, w)
    return {
        "id": "region",
        "from_name": REGION_NAME,
        "to_name": TO_NAME,
        "type": "rectanglelabels",
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "readonly": True,
        "value": {
            "x": 100.0 * x0 / w,
            "y": 100.0 * y0 / h,
            "width": 100.0 * (x1 - x0) / w,
            "height": 100.0 * (y1 - y0) / h,
            "rotation": 0,
            "rectanglelabels": [REGION_LABEL],
        },
    }


def rectangle_window(result: dict, shape: tuple[int, int]) -> tuple[slice, slice]:
    """The (rows, columns) pixel window of a rectangle result on an (H, W) slice (the
    inverse of :func:`region_rectangle`: percent → the nearest pixel edges)."""
    h, w = shape
    value = result["value"]
    y0, x0 = round(value["y"] * h / 100), round(value["x"] * w / 100)
    y1 = round((value["y"] + value["height"]) * h / 100)
    x1 = round((value["x"] + value["width"]) * w / 100)
    return slice(y0, y1), slice(x0, x1)


def decode_brush_rle(rle: Sequence[int], expected: int | None = None) -> np.ndarray:
    """The flat uint8 values of a Label Studio brush RLE (RGBA, so 4·H·W of them).

    The format (thi.ng rle-pack, as Label Studio's editor writes it): 32 bits value count,
    5 bits word size − 1, four 4-bit run-length sizes − 1; then records of a repeat flag
    (1 bit), a run-length size index (2 bits), the run length − 1, and one word repeated
    (flag 1) or that many literal words (flag 0). Same output as the SDK's ``decode_rle``,
    which reads the stream one bit at a time (~40 ms for a 128² mask; 1000² slices take
    seconds); here the stream becomes one bit string and each record is read whole.

    ``expected``: the value count the caller needs (4·H·W); a header that claims another
    is refused before anything is allocated.

    Raises:
        ValueError, TypeError, OverflowError: the list is not bytes, the header's count is
            not ``expected``, or the stream ends early or holds words wider than 8 bits.
    """
    data = bytes(rle)
    bits = format(int.from_bytes(data, "big"), f"0{8 * len(data)}b") if data else ""
    if len(bits) < 53:
        raise ValueError(f"{len(data)} bytes are shorter than the 53-bit header")
    num, word = int(bits[:32], 2), int(bits[32:37], 2) + 1
    if expected is not None and num != expected:
        raise ValueError(f"the header says {num} values, not {expected}")
    sizes = [int(bits[37 + 4 * k : 41 + 4 * k], 2) + 1 for k in range(4)]
    out = np.zeros(num, dtype=np.uint8)
    i, pos = 0, 53
    while i < num:
        size = sizes[int(bits[pos + 1 : pos + 3], 2)]
        n = int(bits[pos + 3 : pos + 3 + size], 2) + 1
        repeat, pos = bits[pos] == "1", pos + 3 + size
        if repeat:
            out[i : i + n] = int(bits[pos : pos + word], 2)
            pos += word
        else:
            words = bits[pos : pos + n * word]
            out[i : i + n] = [int(words[k : k + word], 2) for k in range(0, n * word, word)]
            pos += n * word
        if pos > len(bits):
            raise ValueError(f"the stream ends inside a record at value {i} of {num}")
        i += n
    return out


def _regions(
    results: Sequence[dict], shape: tuple[int, int], class_names: Sequence[str]
) -> list[tuple[int, np.ndarray]]:
    """(class index, (H, W) bool mask) of each brush region, in result order.

    Raises:
        AnnotationRejected: a label that is not a phase, or an RLE that does not decode to
            this slice's size.
    """
    h, w = shape
    regions = []
    for result in results:
        if result.get("type") != "brushlabels":
            continue
        value = result.get("value", {})
        names = value.get("brushlabels") or []
        if len(names) != 1 or names[0] not in class_names:
            raise AnnotationRejected(
                f"brush label {names} is not one of the phases {', '.join(class_names)}"
            )
        try:
            alpha = decode_brush_rle(value["rle"], 4 * h * w).reshape(h, w, 4)[:, :, 3]
        except (KeyError, ValueError, IndexError, TypeError, OverflowError) as exc:
            raise AnnotationRejected(
                f"the {names[0]} region's RLE does not decode to a {h}×{w} mask ({exc})"
            ) from exc
        regions.append((class_names.index(names[0]), alpha > 127))
    return regions


def mask_from_results(
    results: Sequence[dict], shape: tuple[int, int], class_names: Sequence[str]
) -> np.ndarray:
    """The (H, W) uint8 class-index mask of brush regions; unpainted pixels are class 0 and
    a later region wins where regions overlap.

    Raises:
        AnnotationRejected: as :func:`_regions`.
    """
    mask = np.zeros(shape, dtype=np.uint8)
    for c, binary in _regions(results, shape, class_names):
        mask[binary] = c
    return mask


def instances_from_results(
    results: Sequence[dict],
    shape: tuple[int, int],
    class_names: Sequence[str],
    particle_phases: Sequence[str],
) -> InstanceMasks:
    """The particles of an instance annotation of a task that asks for every particle of
    ``particle_phases`` (they are what it covers): one per brush region that covers a
    pixel (an emptied region is no particle), in result order; they may touch or overlap.
    Regions of other phases are kept, but cover nothing: nobody was asked for all of them.

    Raises:
        AnnotationRejected: as :func:`_regions`; the task names no particle phase, or one
            that is not a phase.
    """
    unknown = [p for p in particle_phases if p not in class_names]
    if not particle_phases or unknown:
        raise AnnotationRejected(
            f"the task asks for particles of {list(particle_phases)}, which are not phases of "
            f"{', '.join(class_names)}: push instance tasks with `tomoloop push --instance-model`"
        )
    covers = tuple(sorted(list(class_names).index(p) for p in particle_phases))
    regions = [(c, binary) for c, binary in _regions(results, shape, class_names) if binary.any()]
    masks = np.zeros((len(regions), *shape), bool)
    for k, (_, binary) in enumerate(regions):
        masks[k] = binary
    return InstanceMasks(masks, np.array([c for c, _ in regions], np.int64), covers)


@dataclass(frozen=True)
class TaskSpec:
    """One slice to label. ``key`` identifies it across pushes (volume, axis, index,
    round); ``images`` maps the labelling view's data keys (``image``, ``before_1``, …)
    to URLs; ``prediction`` is the model's label as Label Studio regions
    (:func:`brush_results`, :func:`instance_results`), pre-filled for the annotator.
    """

    key: str
    images: dict[str, str]
    meta: dict[str, Any]
    prediction: list[dict] | None = None
    model_version: str = ""
    score: float | None = None


@dataclass(frozen=True)
class PulledAnnotation:
    """An annotation as Label Studio holds it (the mask is decoded by the caller)."""

    task_id: int
    task_key: str
    annotation_id: int
    result: list[dict]
    was_cancelled: bool
    lead_time_s: float | None
    author: str
    updated_at: str
    particle_phases: tuple[str, ...] = ()
    region: Any = None

    @classmethod
    def from_label_studio(cls, task_id: int, task_data: dict, annotation: dict) -> PulledAnnotation:
        """From an annotation and its task's data as Label Studio serialises them (task
        listings and webhook bodies alike); an instance task's data name the phases whose
        particles it asks for (``particle_phases``), a region task's data the region it
        asks to label (``region``: ``{"y0", "x0", "size"}``, pixels of the slice; as the
        task holds it, checked by the intake).

        Raises:
            KeyError, TypeError, ValueError: the task data lack the key or the annotation
                its id.
        """
        return cls(
            region=task_data.get("region"),
            task_id=int(task_id),
            task_key=str(task_data["key"]),
            particle_phases=tuple(str(p) for p in task_data.get("particle_phases") or ()),
            annotation_id=int(annotation["id"]),
            result=list(annotation.get("result") or []),
            was_cancelled=bool(annotation.get("was_cancelled")),
            lead_time_s=annotation.get("lead_time"),
            author=str(annotation.get("completed_by") or ""),
            updated_at=str(annotation.get("updated_at") or ""),
        )


def queue_score(uncertainty: float | None) -> float | None:
    """The prediction score Label Studio's uncertainty sampling sorts by: it serves the
    lowest score first (it reads scores as confidence), so more uncertain → lower score.
    """
    return None if uncertainty is None else 1.0 / (1.0 + max(uncertainty, 0.0))
