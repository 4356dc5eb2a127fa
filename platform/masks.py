"""Masks stored inline as COCO RLE (the registry's compact form), exact both ways.

Class-index masks: ``{"size": [h, w], "classes": {"1": "<COCO RLE counts>", "2": ...}}``;
class 0 is everything not listed. Instance masks (one mask per particle, which may touch
or overlap): ``{"size": [h, w], "covers": [1], "instances": [{"class": 1, "counts": "<COCO
RLE>"}, ...]}``; ``covers``: the classes whose every particle on the slice is drawn.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

from tomoloop.coco import class_index_lut
from tomoloop.errors import TomoloopError
from tomoloop.phases import PhaseMap
from tomoloop.stacks import Axis, Stack, check_declared, check_label_dtype


class MaskFormatError(TomoloopError):
    """An inline mask is malformed (wrong keys, size, overlapping classes)."""


def encode_class_mask(mask: np.ndarray) -> dict:
    """Inline RLE of an (h, w) integer class-index mask (classes ≥ 1 are encoded)."""
    h, w = mask.shape
    classes = {}
    present = np.flatnonzero(np.bincount(mask.ravel().astype(np.int64)))
    for c in present[present > 0].tolist():
        rle = mask_utils.encode(np.asfortranarray(mask == c, dtype=np.uint8))
        classes[str(c)] = rle["counts"].decode("ascii")
    return {"size": [h, w], "classes": classes}


def decode_class_mask(encoded: dict) -> np.ndarray:
    """The (h, w) class-index mask (uint8, or uint16 above 255 classes) of an inline RLE.

    Raises:
        MaskFormatError: missing keys, a bad size, undecodable counts or overlapping classes.
    """
    try:
        h, w = (int(v) for v in encoded["size"])
        classes = {int(c): counts for c, counts in encoded["classes"].items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise MaskFormatError(
            f"inline mask is malformed ({exc!r}): expected size and classes"
        ) from exc
    top = max(classes, default=0)
    out = np.zeros((h, w), dtype=np.uint8 if top <= 255 else np.uint16)
    for c, counts in classes.items():
        try:
            binary = mask_utils.decode({"size": [h, w], "counts": counts.encode("ascii")})
        except Exception as exc:
            raise MaskFormatError(f"class {c} of an inline mask cannot be decoded: {exc}") from exc
        hit = binary.astype(bool)
        if (out[hit] != 0).any():
            raise MaskFormatError(f"class {c} overlaps another class in an inline mask")
        out[hit] = c
    return out


@dataclass(frozen=True)
class InstanceMasks:
    """The particles of one (H, W) slice: masks (n, H, W) bool; classes (n,) int64 class
    indices (phase-map order, as in class-index masks); covers: the classes whose every
    particle is among them (a class not covered may have particles nobody drew).
    """

    masks: np.ndarray
    classes: np.ndarray
    covers: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.classes)

    def select(self, keep: np.ndarray | list[int]) -> InstanceMasks:
        """The particles ``keep`` (indices or a bool mask); the same cover."""
        return InstanceMasks(self.masks[keep], self.classes[keep], self.covers)


def encode_instances(instances: InstanceMasks) -> dict:
    """Inline RLE of a slice's instance masks, in their order."""
    _, h, w = instances.masks.shape
    rles = mask_utils.encode(np.asfortranarray(instances.masks.transpose(1, 2, 0), np.uint8))
    return {
        "size": [h, w],
        "covers": sorted(int(c) for c in instances.covers),
        "instances": [
            {"class": int(c), "counts": rle["counts"].decode("ascii")}
            for c, rle in zip(instances.classes.tolist(), rles, strict=True)
        ],
    }


def decode_instances(encoded: dict) -> InstanceMasks:
    """The instance masks of an inline RLE.

    Raises:
        MaskFormatError: missing keys, a bad size or class, or undecodable counts.
    """
    try:
        h, w = (int(v) for v in encoded["size"])
        covers = tuple(int(c) for c in encoded["covers"])
        entries = [(int(e["class"]), str(e["counts"])) for e in encoded["instances"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise MaskFormatError(
            f"inline instance mask is malformed ({exc!r}): expected size, covers and "
            "instances with class and counts"
        ) from exc
    masks = np.zeros((len(entries), h, w), bool)
    for k, (c, counts) in enumerate(entries):
        if c < 0:
            raise MaskFormatError(f"instance {k} of an inline mask has class {c}")
        try:
            masks[k] = mask_utils.decode({"size": [h, w], "counts": counts.encode("ascii")})
        except Exception as exc:
            raise MaskFormatError(
                f"instance {k} of an inline mask cannot be decoded: {exc}"
            ) from exc
    return InstanceMasks(masks, np.array([c for c, _ in entries], np.int64), covers)


def stack_class_masks(
    labels: Stack, phases: PhaseMap, axis: Axis = "z"
) -> Iterator[tuple[int, dict]]:
    """``(index, inline mask)`` of every slice of a label stack, class = phase-map position.

    Raises:
        StackValidationError: a slice holds a value the phase map does not declare.
    """
    check_label_dtype(labels)
    lut = class_index_lut(phases)
    for i, image in labels.iter_slices(axis):
        check_declared(image, phases, f"{labels.path.name} {axis}={i}")
        yield i, encode_class_mask(lut[image])
