"""Instance data for Mask R-CNN: COCO documents from labelled slices, checks of COCO
documents, detections and their COCO results.

Class-index label slices become COCO instances exactly as :mod:`tomoloop.coco` converts
label stacks (seed 004 §2.1: every 2D connected component of an instance phase is one
instance). Detections are what an instance model returns for one slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

from tomoloop.coco import Connectivity, slice_instances
from tomoloop.errors import TomoloopError


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


def coco_from_slices(
    labels: Sequence[np.ndarray],
    file_names: Sequence[str],
    class_names: Sequence[str],
    instance_classes: Sequence[int],
    connectivity: Connectivity = 8,
    min_area: int = 0,
) -> dict:
    """A COCO instance document of k class-index label slices.

    ``labels[i]`` (H, W) holds class indices into ``class_names``; every connected
    component of a class in ``instance_classes`` is one instance of category
    ``instance_classes.index(c) + 1``. Image ``i`` has id ``i + 1`` and ``file_names[i]``.
    Segmentations are exact compressed RLE.
    """
    if len(labels) != len(file_names):
        raise ValueError("one file name per label slice")
    values = tuple(int(c) for c in instance_classes)
    images, annotations = [], []
    for i, (label, name) in enumerate(zip(labels, file_names, strict=True)):
        h, w = label.shape
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        found = slice_instances(label, values, connectivity, min_area)
        for k, rle in enumerate(found.rles):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(found.category_index[k]) + 1,
                    "segmentation": rle,
                    "area": int(found.areas[k]),
                    "bbox": found.bboxes[k].tolist(),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k + 1, "name": class_names[c]} for k, c in enumerate(values)]
    return {"images": images, "annotations": annotations, "categories": categories}


def check_coco(document: dict, what: str) -> None:
    """Raise :class:`CocoDocumentError` unless ``document`` can train an instance model:
    categories declared, at least one annotation, every annotation naming a declared
    category and an existing image.
    """
    categories = {c.get("id") for c in document.get("categories", [])}
    images = {i.get("id") for i in document.get("images", [])}
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
