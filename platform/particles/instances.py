"""Instance data for Mask R-CNN: COCO documents from labelled slices, checks of COCO
documents, detections and their COCO results.

Class-index label slices become COCO instances exactly as :mod:`tomoloop.coco.convert` converts
label stacks (Daemi et al. 2022, §2.1; docs/references.md: every 2D connected component of an
instance phase is one instance). Detections are what an instance model returns for one slice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from tomoloop.coco.instances import Connectivity, slice_instances
from tomoloop.errors import TomoloopError
from tomoloop.labels.masks import InstanceMasks, decode_instances
from tomoloop.labels.phases import IGNORE, PhaseMap
from tomoloop.stacks.png import write_png
from tomoloop.stacks.window import Window, to_uint8
from tomoloop.training.data import LabelledSlice


class CocoDocumentError(TomoloopError):
    """A COCO document that cannot train or score an instance model."""


@dataclass(frozen=True)
class Detections:
    """Instances found on one (H, W) slice; n detections.

    masks (n, H, W) bool; scores (n,) float in [0, 1]; classes (n,) int, index into the
    model's instance categories (0-based); boxes (n, 4) float x0, y0, x1, y1 in pixels.
    """

    masks: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> Detections:
        return cls(
            np.zeros((0, *shape), bool),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            np.zeros((0, 4), np.float32),
        )

    def select(self, keep: np.ndarray) -> Detections:
        return Detections(self.masks[keep], self.scores[keep], self.classes[keep], self.boxes[keep])


def category_classes(categories: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
    """(k,) int64 class index (phase order) of each of an instance model's k categories.

    Raises:
        CocoDocumentError: the model finds a category that is not a phase.
    """
    missing = [c for c in categories if c not in class_names]
    if missing:
        raise CocoDocumentError(
            f"the instance model finds {missing[0]!r}, which is not a phase of "
            f"{', '.join(class_names)}"
        )
    return np.array([list(class_names).index(c) for c in categories], np.int64)


def detected_particles(
    detections: Detections, categories: Sequence[str], class_names: Sequence[str]
) -> InstanceMasks:
    """A slice's detections as instance masks of phase classes (``categories``: the
    model's instance categories; ``class_names``: the phases, in class order), best
    score first, covering the model's categories.

    Raises:
        CocoDocumentError: as :func:`category_classes`.
    """
    lut = category_classes(categories, class_names)
    order = np.argsort(-detections.scores, kind="stable")
    covers = tuple(sorted(int(c) for c in lut))
    return InstanceMasks(detections.masks[order], lut[detections.classes[order]], covers)


def grey_uint8(image: np.ndarray) -> np.ndarray:
    """A normalised [0, 1] grey image as uint8, as instance models see slices."""
    return to_uint8(image, Window(0.0, 1.0))


def particle_mask(
    detections: Detections, shape: tuple[int, int], classes: Sequence[int] | None = None
) -> np.ndarray:
    """(H, W) bool union of the detected masks of ``classes`` (all when None)."""
    keep = (
        np.ones(len(detections), bool) if classes is None else np.isin(detections.classes, classes)
    )
    if not keep.any():
        return np.zeros(shape, bool)
    return np.asarray(detections.masks[keep].any(axis=0))


def particle_category(categories: Sequence[str], phase: str | None) -> int:
    """Index of the instance category that makes particles: ``phase``, or the only one."""
    if phase is None:
        if len(categories) == 1:
            return 0
        raise CocoDocumentError(
            f"the model finds {', '.join(categories)}: name the particle phase with --phase"
        )
    if phase not in categories:
        raise CocoDocumentError(f"--phase {phase}: the model finds {', '.join(categories)}")
    return list(categories).index(phase)


def coco_from_slices(
    labels: Sequence[np.ndarray],
    file_names: Sequence[str],
    class_names: Sequence[str],
    instance_classes: Sequence[int],
    connectivity: Connectivity = 8,
    min_area: int = 0,
    drawn: Sequence[InstanceMasks | None] = (),
) -> dict:
    """A COCO instance document of k class-index label slices.

    ``labels[i]`` (H, W) holds class indices into ``class_names``; every connected
    component of a class in ``instance_classes`` is one instance of category
    ``instance_classes.index(c) + 1`` — except for the classes ``drawn[i]`` covers, the
    particles a person drew on slice ``i``: of those, the drawn particles are the
    instances (touching particles stay apart). Image ``i`` has id ``i + 1`` and ``file_names[i]``.
    Segmentations are exact compressed RLE.

    Unlabelled pixels (:data:`IGNORE`) hold no instance: components are found among
    labelled pixels, and drawn particles are clipped to the labelled region. The
    unlabelled region of an image is written as one ``iscrowd: 1`` annotation per
    category (COCO's "ignore this region": COCOeval neither rewards nor penalises a
    detection of that category there; Detectron2 leaves crowd annotations out of training).
    """
    if len(labels) != len(file_names) or len(drawn) not in (0, len(labels)):
        raise ValueError("one file name (and drawn instances, if any) per label slice")
    values = tuple(int(c) for c in instance_classes)
    images: list[dict] = []
    annotations: list[dict] = []
    for i, (label, name) in enumerate(zip(labels, file_names, strict=True)):
        h, w = label.shape
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        particles = drawn[i] if drawn else None
        if particles is not None and particles.masks.shape[1:] != label.shape:
            raise CocoDocumentError(
                f"{name}: the drawn particles are {particles.masks.shape[1:]}, the label "
                f"slice {label.shape}"
            )
        unlabelled = label == IGNORE
        if unlabelled.any():
            particles = None if particles is None else _clipped(particles, ~unlabelled)
        found = _instances(label, particles, values, connectivity, min_area)
        crowd = _ignore_regions(unlabelled, len(values)) if unlabelled.any() else []
        for category, rle, area, bbox, iscrowd in [(*f, 0) for f in found] + [
            (*c, 1) for c in crowd
        ]:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": category + 1,
                    "segmentation": rle,
                    "area": area,
                    "bbox": bbox,
                    "iscrowd": iscrowd,
                }
            )
    categories = [{"id": k + 1, "name": class_names[c]} for k, c in enumerate(values)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _clipped(particles: InstanceMasks, labelled: np.ndarray) -> InstanceMasks:
    """Drawn particles cut to the (H, W) bool ``labelled`` region (empty ones are kept
    empty; :func:`_instances` drops them by area).
    """
    return InstanceMasks(particles.masks & labelled, particles.classes, particles.covers)


def _ignore_regions(unlabelled: np.ndarray, n_categories: int) -> list[tuple]:
    """(category index, COCO RLE, area, XYWH box) of an (H, W) bool unlabelled region, one
    per category (COCOeval matches crowd regions within a category).
    """
    rle = mask_utils.encode(np.asfortranarray(unlabelled, np.uint8))
    counts = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    area, bbox = int(unlabelled.sum()), mask_utils.toBbox(rle).tolist()
    return [(k, counts, area, bbox) for k in range(n_categories)]


def _instances(
    label: np.ndarray,
    particles: InstanceMasks | None,
    values: tuple[int, ...],
    connectivity: Connectivity,
    min_area: int,
) -> list[tuple[int, dict, int, list[float]]]:
    """(category index into ``values``, COCO RLE, area in pixels, XYWH box) of each
    instance of one slice: of the classes the drawing covers, the drawn particles with at
    least ``min_area`` (and one) pixels; of the others, the connected components of the
    label slice.
    """
    covered = () if particles is None else tuple(v for v in values if v in particles.covers)
    rest = tuple(v for v in values if v not in covered)
    out = []
    if rest:
        found = slice_instances(label, rest, connectivity, min_area)
        out += [
            (
                values.index(rest[int(found.category_index[k])]),
                rle,
                int(found.areas[k]),
                found.bboxes[k].tolist(),
            )
            for k, rle in enumerate(found.rles)
        ]
    if particles is None:
        return out
    for mask, c in zip(particles.masks, particles.classes.tolist(), strict=True):
        if c not in covered:
            continue
        area = int(mask.sum())
        if area >= max(min_area, 1):
            rle = mask_utils.encode(np.asfortranarray(mask, np.uint8))
            counts = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            out.append((values.index(c), counts, area, mask_utils.toBbox(rle).tolist()))
    return out


def instance_classes(phases: PhaseMap, names: Sequence[str] = ()) -> tuple[int, ...]:
    """Class indices of the phases whose particles are instances; by default every phase
    but the first (the first is the background, e.g. pore).
    """
    if not names:
        if len(phases) < 2:
            raise CocoDocumentError(f"phases {phases}: instances need a phase besides the first")
        return tuple(range(1, len(phases)))
    unknown = [n for n in names if n not in phases.names]
    if unknown:
        raise CocoDocumentError(
            f"instance phase {unknown[0]!r} is not a phase of {phases}: name one of "
            f"{', '.join(phases.names)}"
        )
    return tuple(phases.names.index(n) for n in names)


def write_coco_folder(
    slices: Mapping[str, Sequence[LabelledSlice]],
    class_names: Sequence[str],
    classes: Sequence[int],
    out_dir: Path,
) -> dict[str, Path]:
    """Write labelled slices as a COCO folder: ``images/<split>_<k>.png`` (8-bit grey from
    the [0, 1] images), ``masks/<split>_<k>.png`` (the class-index labels, :data:`IGNORE`
    = 255 where unlabelled; each image's ``mask_file``) and one ``<split>.json`` per
    non-empty split; the JSON paths by split.
    """
    for folder in ("images", "masks"):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    files = {}
    for split, members in slices.items():
        if not members:
            continue
        names = [f"{split}_{k:05d}.png" for k in range(len(members))]
        for name, member in zip(names, members, strict=True):
            write_png(out_dir / "images" / name, grey_uint8(member.image))
            write_png(out_dir / "masks" / name, member.labels)
        document = coco_from_slices(
            [m.labels for m in members],
            names,
            class_names,
            classes,
            drawn=[None if m.instances is None else decode_instances(m.instances) for m in members],
        )
        for image in document["images"]:
            image["mask_file"] = f"masks/{image['file_name']}"
        files[split] = out_dir / f"{split}.json"
        files[split].write_text(json.dumps(document))
    return files


def check_coco(document: dict, what: str) -> None:
    """Raise :class:`CocoDocumentError` unless ``document`` can train an instance model:
    categories declared, every image with an id, file name and size, at least one
    annotation, every annotation naming a declared category and an existing image.
    """
    if not isinstance(document, dict):
        raise CocoDocumentError(f"{what} is not a COCO document: expected a JSON object")
    for key in ("images", "annotations", "categories"):
        entries = document.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise CocoDocumentError(f"{what}: '{key}' must be a list of JSON objects")
    categories = {c.get("id") for c in document.get("categories", [])}
    for image in document.get("images", []):
        missing = [k for k in ("id", "file_name", "height", "width") if k not in image]
        if missing or not isinstance(image["file_name"], str):
            raise CocoDocumentError(
                f"{what}: image {image.get('id')!r} lacks {missing or 'a string file_name'}; "
                "every image needs id, file_name, height and width"
            )
    images = {i["id"] for i in document.get("images", [])}
    annotations = document.get("annotations", [])
    if not categories:
        raise CocoDocumentError(f"{what} declares no categories: list them under 'categories'")
    if not annotations:
        raise CocoDocumentError(
            f"{what} has no annotations: an instance model needs at least one labelled "
            "instance (check the instance phases and that the label slices are not empty)"
        )
    for ann in annotations:
        if ann.get("category_id") not in categories:
            raise CocoDocumentError(
                f"{what}: annotation {ann.get('id')} has category_id "
                f"{ann.get('category_id')!r}, which is not among the declared categories "
                f"{sorted(categories)}"
            )
        if ann.get("image_id") not in images:
            raise CocoDocumentError(
                f"{what}: annotation {ann.get('id')} refers to image {ann.get('image_id')!r}, "
                "which is not among its images"
            )


def detection_results(detections: Detections, image_id: int) -> list[dict]:
    """COCO result dicts (RLE segmentation, XYWH box, score, 1-based category) of one
    slice's detections, for pycocotools' ``loadRes``.
    """
    if not len(detections):
        return []
    rles = mask_utils.encode(np.asfortranarray(detections.masks.transpose(1, 2, 0), np.uint8))
    results = []
    for k, rle in enumerate(rles):
        x0, y0, x1, y1 = detections.boxes[k].tolist()
        results.append(
            {
                "image_id": image_id,
                "category_id": int(detections.classes[k]) + 1,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(detections.scores[k]),
            }
        )
    return results


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU of n (n, H, W) and m (m, H, W) bool masks."""
    flat_a = a.reshape(len(a), -1).astype(np.float32)
    flat_b = b.reshape(len(b), -1).astype(np.float32)
    inter = flat_a @ flat_b.T
    union = flat_a.sum(1)[:, None] + flat_b.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match(a: Detections, b: Detections, min_iou: float = 0.5) -> tuple[np.ndarray, int]:
    """Instances of two predictions of one slice paired one-to-one by mask IoU (Hungarian,
    pairs below ``min_iou`` left unmatched): ``(IoUs of the matched pairs, unmatched count
    on both sides)``.
    """
    if not len(a) or not len(b):
        return np.zeros(0), len(a) + len(b)
    iou = mask_iou(a.masks, b.masks)
    rows, cols = linear_sum_assignment(-iou)
    matched = iou[rows, cols]
    matched = matched[matched >= min_iou]
    return matched, len(a) + len(b) - 2 * len(matched)


@dataclass(frozen=True)
class InstanceUncertainty:
    """One slice's instance uncertainty, each part in [0, 1]: ``confidence`` (mean 1 − score
    of the detections), ``disagreement`` (flip TTA: unmatched instances count 1, matched
    ones 1 − IoU, averaged over instances), ``score`` (their mean; higher = more worth a
    person's time).
    """

    confidence: float
    disagreement: float
    score: float


def instance_uncertainty(
    detections: Detections, augmented: Sequence[Detections], min_iou: float = 0.5
) -> InstanceUncertainty:
    """Uncertainty of a slice's detections from their scores and from their disagreement
    with the predictions of augmented copies (flipped, predicted, flipped back).
    """
    confidence = float(np.mean(1.0 - detections.scores)) if len(detections) else 0.0
    parts = []
    for other in augmented:
        ious, unmatched = match(detections, other, min_iou)
        instances = len(ious) + unmatched
        parts.append((unmatched + float((1.0 - ious).sum())) / instances if instances else 0.0)
    disagreement = float(np.mean(parts)) if parts else 0.0
    return InstanceUncertainty(confidence, disagreement, (confidence + disagreement) / 2.0)


def particle_disagreement(semantic: np.ndarray, instances: np.ndarray) -> float:
    """1 − Dice of two (H, W) bool particle masks of one slice (a semantic model's particle
    phases and an instance model's detections); 0 when both are empty.
    """
    total = int(semantic.sum()) + int(instances.sum())
    if total == 0:
        return 0.0
    return 1.0 - 2.0 * int((semantic & instances).sum()) / total
