"""Masks stored inline as COCO RLE (the registry's compact form), exact both ways.

Class-index masks: ``{"size": [h, w], "classes": {"1": "<COCO RLE counts>", "2": ...},
"labelled": "<COCO RLE counts>", "tiers": {"0": "<COCO RLE counts>"}}``; ``labelled`` is the
region somebody labelled (absent: every pixel is labelled, the dense form); class 0 is every
labelled pixel not listed, and pixels outside the labelled region are unlabelled
(:data:`tomoloop.labels.IGNORE` in memory); ``tiers`` (only in a label merged over lower
tiers) lists the pixels each other tier labelled (the rest are the label's own tier), so
training weighs each pixel by the tier it came from. Instance masks (one mask per particle,
which may touch or overlap): ``{"size": [h, w], "covers": [1], "instances": [{"class": 1,
"counts": "<COCO RLE>"}, ...]}``; ``covers``: the classes whose every particle on the slice
is drawn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

from tomoloop.errors import TomoloopError
from tomoloop.labels.phases import IGNORE, PhaseMap, check_declared, class_index_lut
from tomoloop.stacks.checks import check_label_dtype
from tomoloop.stacks.stack import AXES, Axis, Stack


class MaskFormatError(TomoloopError):
    """An inline mask is malformed (wrong keys, size, overlapping classes)."""


def _rle_counts(binary: np.ndarray) -> str:
    """COCO RLE counts string of an (h, w) bool array."""
    return mask_utils.encode(np.asfortranarray(binary, dtype=np.uint8))["counts"].decode("ascii")


def _decode_binary(h: int, w: int, counts: object, what: str) -> np.ndarray:
    """(h, w) bool of RLE ``counts``; MaskFormatError naming ``what`` when undecodable."""
    try:
        if not isinstance(counts, str):
            raise TypeError(f"counts are {type(counts).__name__}, not a string")
        binary = mask_utils.decode({"size": [h, w], "counts": counts.encode("ascii")})
    except Exception as exc:
        raise MaskFormatError(f"{what} of an inline mask cannot be decoded: {exc}") from exc
    return binary.astype(bool)


def encode_class_mask(mask: np.ndarray) -> dict:
    """Inline RLE of an (h, w) integer class-index mask (classes ≥ 1 are encoded).

    In a uint8 mask the value :data:`IGNORE` marks unlabelled pixels: their complement is
    stored as ``"labelled"``. A mask without unlabelled pixels (and every wider mask, for
    more than 255 classes) is dense: no ``"labelled"`` key, the document of before sparse
    labels existed.
    """
    h, w = mask.shape
    counts = np.bincount(mask.ravel().astype(np.int64))
    sparse = mask.dtype == np.uint8 and counts.size > IGNORE and counts[IGNORE] > 0
    present = np.flatnonzero(counts)
    present = present[(present > 0) & ((present != IGNORE) | (not sparse))]
    encoded: dict = {
        "size": [h, w],
        "classes": {str(c): _rle_counts(mask == c) for c in present.tolist()},
    }
    if sparse:
        encoded["labelled"] = _rle_counts(mask != IGNORE)
    return encoded


def decode_class_mask(encoded: dict) -> np.ndarray:
    """The (h, w) class-index mask of an inline RLE: uint8, unlabelled pixels
    :data:`IGNORE` (only where the document has a ``"labelled"`` region); a dense document
    with classes ≥ 255 decodes to uint16.

    Raises:
        MaskFormatError: missing keys, a bad size, undecodable counts, overlapping classes,
            a class outside the labelled region or a class ≥ 255 in a partly labelled mask.
    """
    try:
        h, w = (int(v) for v in encoded["size"])
        classes = {int(c): counts for c, counts in encoded["classes"].items()}
        labelled = encoded.get("labelled")
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise MaskFormatError(
            f"inline mask is malformed ({exc!r}): expected size and classes"
        ) from exc
    top = max(classes, default=0)
    if labelled is None:
        out: np.ndarray = np.zeros((h, w), dtype=np.uint8 if top < IGNORE else np.uint16)
    elif top >= IGNORE:
        raise MaskFormatError(
            f"a partly labelled inline mask holds class {top}: its classes must lie in "
            f"0..{IGNORE - 1} ({IGNORE} marks unlabelled pixels)"
        )
    else:
        region = _decode_binary(h, w, labelled, "the labelled region")
        out = np.where(region, 0, IGNORE).astype(np.uint8)
    for c, counts in classes.items():
        hit = _decode_binary(h, w, counts, f"class {c}")
        taken = out[hit]
        if labelled is not None and (taken == IGNORE).any():
            raise MaskFormatError(
                f"class {c} of an inline mask lies outside its labelled region: paint "
                "classes only where the label is labelled"
            )
        if (taken != 0).any():
            raise MaskFormatError(f"class {c} overlaps another class in an inline mask")
        out[hit] = c
    return out


def unlabelled_mask(h: int, w: int) -> dict:
    """The inline document of an (h, w) slice nobody labelled yet: a sparse label whose
    labelled region is empty (0 labelled pixels; every pixel :data:`IGNORE` decoded). It
    holds a slice of a volume added without labels in its dataset's split."""
    return encode_class_mask(np.full((h, w), IGNORE, np.uint8))


def labelled_pixels(encoded: dict) -> int:
    """Pixels a class-index mask document labels: the area of its ``"labelled"`` region,
    or h × w for a dense one (no ``"labelled"`` key).

    Raises:
        MaskFormatError: no size, or an undecodable labelled region.
    """
    try:
        h, w = (int(v) for v in encoded["size"])
        labelled = encoded.get("labelled")
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise MaskFormatError(f"inline mask is malformed ({exc!r}): expected a size") from exc
    if labelled is None:
        return h * w
    try:
        return int(mask_utils.area({"size": [h, w], "counts": labelled.encode("ascii")}))
    except Exception as exc:
        raise MaskFormatError(
            f"the labelled region of an inline mask cannot be decoded: {exc}"
        ) from exc


def merge_with_tiers(labels: Sequence[tuple[int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One slice's labels merged: ``(tier, (h, w) uint8 class-index mask)`` pairs, oldest
    first → ((h, w) uint8 mask, (h, w) int8 tier each pixel's class came from, -1 where
    unlabelled). Where several are labelled, the highest tier wins, and within a tier the
    newest; lower tiers fill what higher ones left unlabelled. Pixels no label covers stay
    :data:`IGNORE`.

    Raises:
        MaskFormatError: the masks differ in shape or are not uint8.
        ValueError: no labels given.
    """
    if not labels:
        raise ValueError("merge_by_tier needs at least one label")
    shape = labels[0][1].shape
    for tier, mask in labels:
        if mask.shape != shape or mask.dtype != np.uint8:
            raise MaskFormatError(
                f"a tier-{tier} label is {mask.dtype} {mask.shape}, the first {shape} uint8: "
                "the labels of one slice must share its shape"
            )
    order = sorted(range(len(labels)), key=lambda k: (labels[k][0], k), reverse=True)
    out = np.full(shape, IGNORE, np.uint8)
    tiers = np.full(shape, -1, np.int8)
    for k in order:
        tier, mask = labels[k]
        fill = (out == IGNORE) & (mask != IGNORE)
        out[fill] = mask[fill]
        tiers[fill] = tier
    return out, tiers


def merge_by_tier(labels: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    """The merged (h, w) uint8 mask of :func:`merge_with_tiers`."""
    return merge_with_tiers(labels)[0]


def encode_tiers(tiers: np.ndarray, own: int) -> dict[str, str]:
    """The ``"tiers"`` entry of a merged label of tier ``own``: for every other tier in the
    (h, w) tier map (-1 unlabelled), the COCO RLE counts of the pixels it labelled; empty
    when every labelled pixel is the label's own.
    """
    present = np.unique(tiers)
    return {str(t): _rle_counts(tiers == t) for t in present.tolist() if t not in (-1, own)}


def pixel_tiers(encoded: dict, own: int) -> np.ndarray | None:
    """The (h, w) int8 tier of each pixel of a label of tier ``own`` whose document carries
    ``"tiers"`` (pixels a merge took from other tiers); None when it carries none, i.e.
    every pixel is the label's own tier.

    Raises:
        MaskFormatError: a bad size, a tier that is not a number, undecodable counts.
    """
    listed = encoded.get("tiers")
    if not listed:
        return None
    try:
        h, w = (int(v) for v in encoded["size"])
        others = {int(t): counts for t, counts in listed.items()}
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise MaskFormatError(f"the tiers of an inline mask are malformed ({exc!r})") from exc
    out = np.full((h, w), own, np.int8)
    for tier, counts in others.items():
        out[_decode_binary(h, w, counts, f"tier {tier}")] = tier
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


def class_counts(classes: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes,) int64: pixels of each class in a class-index array (values < n_classes)."""
    return np.bincount(classes.ravel(), minlength=n_classes)


def stack_class_counts(labels: Stack, phases: PhaseMap, axis: Axis = "z") -> np.ndarray:
    """(n_slices, len(phases)) int64: pixels of each class (phase-map position) in each
    slice of a label stack along ``axis``, read slice by slice.

    Raises:
        StackValidationError: a slice holds a value the phase map does not declare.
    """
    check_label_dtype(labels)
    lut = class_index_lut(phases)
    counts = np.zeros((labels.shape[AXES.index(axis)], len(phases)), np.int64)
    for i, image in labels.iter_slices(axis):
        check_declared(image, phases, f"{labels.path.name} {axis}={i}")
        counts[i] = class_counts(lut[image], len(phases))
    return counts
