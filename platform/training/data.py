"""Training data for the semantic networks: labelled slices, tier weights, augmentation
and patch sampling.

A :class:`LabelledSlice` is one normalised grey slice (H, W) float32 in [0, 1] with its class-index
labels (H, W) uint8 (:data:`tomoloop.labels.IGNORE` where unlabelled) and a weight from its label
tier. Patches are cut from them at random (optionally centred on a pixel of a class drawn uniformly,
so rare phases are seen), augmented as Quenum et al. 2023 (§4; docs/references.md) describe, and
batched as tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import cv2
import numpy as np
import torch

from tomoloop.errors import TomoloopError
from tomoloop.inference.predict import normalise
from tomoloop.labels.masks import decode_class_mask, pixel_tiers
from tomoloop.labels.phases import IGNORE
from tomoloop.labels.tiers import Tier
from tomoloop.networks.matphase import remove_rows_and_resize, smooth_labels_knn
from tomoloop.stacks.opener import open_stack
from tomoloop.stacks.stack import axis_named
from tomoloop.stacks.window import percentile_window

TIER_NAMES = tuple(t.label for t in Tier)  # tier index → name
# Expert > annotator > auto (the issue); model predictions used as labels count least.
DEFAULT_TIER_WEIGHTS = {"auto": 1.0, "model": 0.5, "annotator": 2.0, "expert": 4.0}


class DatasetError(TomoloopError):
    """Training data that cannot be used (empty split, class out of range, bad patch)."""


@dataclass(frozen=True)
class LabelledSlice:
    """image (H, W) float32 in [0, 1]; labels (H, W) uint8 class indices, :data:`IGNORE`
    where unlabelled; weight ≥ 0, one for the slice or an (H, W) float32 map (a label merged
    from several tiers weighs each pixel by its tier);
    instances: the particles a person drew on the slice, inline (:mod:`tomoloop.labels.masks`
    form, decoded only by instance training; None where nobody drew).
    """

    image: np.ndarray
    labels: np.ndarray
    weight: float | np.ndarray = 1.0
    split: str = "train"
    annotation_id: int | None = None
    instances: dict | None = None


@dataclass(frozen=True)
class Augmentation:
    """Quenum et al. 2023, §4: rotations, flips, crop/shift (the random patch origin), zoom 0.8–1
    and ±5 % brightness and contrast. ``angle`` is the largest free rotation in degrees on
    top of the right-angle rotations.
    """

    rotate90: bool = True
    flip: bool = True
    angle: float = 15.0
    zoom: tuple[float, float] = (0.8, 1.0)
    brightness: float = 0.05
    contrast: float = 0.05


NO_AUGMENTATION = Augmentation(False, False, 0.0, (1.0, 1.0), 0.0, 0.0)


@dataclass(frozen=True)
class SliceRef:
    """Where a labelled slice lives: a grey stack, an axis and index, its inline class mask
    (:mod:`tomoloop.labels.masks` form), its tier (0 auto … 3 expert) and split, and the inline
    instance masks a person drew on it (None where nobody did).
    """

    path: str
    axis: str
    index: int
    mask: dict
    tier: int
    split: str
    annotation_id: int | None = None
    instances: dict | None = None


def load_slices(
    refs: Sequence[SliceRef], weights: dict[str, float] | None = None
) -> dict[str, list[LabelledSlice]]:
    """Read every referenced slice, normalised by its volume's percentile window (the same
    window prediction uses), with decoded labels and tier weights; grouped by split.
    Each stack is opened once.
    """
    out: dict[str, list[LabelledSlice]] = {"train": [], "val": [], "test": []}
    by_path: dict[str, list[SliceRef]] = {}
    for ref in refs:
        by_path.setdefault(ref.path, []).append(ref)
    for path, group in by_path.items():
        with open_stack(path) as stack:
            window = percentile_window(stack)
            for ref in group:
                image = normalise(stack.slice(axis_named(ref.axis), ref.index), window)
                labels = decode_class_mask(ref.mask)
                if labels.shape != image.shape:
                    raise DatasetError(
                        f"annotation {ref.annotation_id}: mask {labels.shape} does not fit "
                        f"{ref.axis} slice {ref.index} {image.shape} of {path}"
                    )
                weight = label_weight(ref.mask, ref.tier, weights)
                out.setdefault(ref.split, []).append(
                    LabelledSlice(
                        image, labels, weight, ref.split, ref.annotation_id, ref.instances
                    )
                )
    return out


def prepare_training_slices(
    slices: Sequence[LabelledSlice],
    row_removal: int = 0,
    exclusive: Sequence[tuple[int, int]] = (),
) -> list[LabelledSlice]:
    """Tabassum et al. n.d.'s preparation (App. §II, Pre-processing) of training slices, in the
    paper's order: each slice joined by ``row_removal`` versions with 1 … k top rows removed
    and stretched back, then the labels of every version (the resized ground truth) smoothed
    by the domain rule (classes of an ``exclusive`` pair cannot touch; kNN relabelling).
    """
    versions = []
    for s in slices:
        versions.append(s)
        if row_removal:
            versions.extend(
                replace(s, image=image, labels=stretched)
                for image, stretched in remove_rows_and_resize(s.image, s.labels, row_removal)
            )
    if not exclusive:
        return versions
    return [replace(v, labels=smooth_labels_knn(v.labels, list(exclusive))) for v in versions]


def parse_tier_weights(text: str) -> dict[str, float]:
    """``"auto=1,annotator=2,expert=4"`` → weights per tier name (missing tiers default)."""
    weights = dict(DEFAULT_TIER_WEIGHTS)
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = item.partition("=")
        if name not in weights or not value:
            raise DatasetError(
                f"tier weight {item!r}: write NAME=WEIGHT with NAME one of {', '.join(weights)}"
            )
        try:
            weights[name] = float(value)
        except ValueError:
            raise DatasetError(f"tier weight {item!r}: {value!r} is not a number") from None
        if weights[name] < 0:
            raise DatasetError(f"tier weight {item!r} is negative")
    return weights


def tier_weight(tier: int, weights: dict[str, float] | None = None) -> float:
    """The training weight of a label of registry tier ``tier`` (0 auto … 3 expert)."""
    return (weights or DEFAULT_TIER_WEIGHTS)[TIER_NAMES[tier]]


def label_weight(
    mask: dict, tier: int, weights: dict[str, float] | None = None
) -> float | np.ndarray:
    """The training weight of a label of tier ``tier`` with inline ``mask``: its tier's
    weight, or, for a label merged over lower tiers (``"tiers"`` in the document), an
    (H, W) float32 map weighing each pixel by the tier it came from.
    """
    tiers = pixel_tiers(mask, tier)
    if tiers is None:
        return tier_weight(tier, weights)
    lut = np.array([tier_weight(t, weights) for t in range(len(TIER_NAMES))], np.float32)
    return lut[tiers]


def check_slices(slices: Sequence[LabelledSlice], n_classes: int, what: str) -> None:
    """Refuse an empty set, a set without a labelled pixel, NaN images, image/label shape
    mismatches, classes ≥ n_classes and more classes than :data:`IGNORE` leaves room for.
    """
    if not slices:
        raise DatasetError(f"the {what} split is empty: freeze a dataset version with slices in it")
    if n_classes > IGNORE:
        raise DatasetError(
            f"{n_classes} classes: a semantic model has at most {IGNORE} "
            f"({IGNORE} marks unlabelled pixels)"
        )
    for s in slices:
        where = f"{what} slice (annotation {s.annotation_id})"
        if s.image.shape != s.labels.shape:
            raise DatasetError(f"{where}: image {s.image.shape} and labels {s.labels.shape} differ")
        if not np.isfinite(s.image).all():
            raise DatasetError(f"{where}: the image holds NaN or infinite values")
        classes = s.labels[s.labels != IGNORE]
        if classes.size and int(classes.max()) >= n_classes:
            raise DatasetError(
                f"{where}: class {int(classes.max())} but the model has {n_classes} classes"
            )
    if not labelled_slices(slices):
        raise DatasetError(
            f"the {what} split has no labelled pixel: every slice in it is unlabelled; "
            "label part of one of its slices"
        )


def labelled_slices(slices: Sequence[LabelledSlice]) -> list[LabelledSlice]:
    """The slices with at least one labelled pixel (a label that is not :data:`IGNORE`):
    the only ones that can teach or judge a network.
    """
    return [s for s in slices if (s.labels != IGNORE).any()]


def _pad_to(array: np.ndarray, side: int) -> np.ndarray:
    """Reflect-pad (H, W) to at least (side, side) at the bottom/right."""
    ph, pw = max(0, side - array.shape[0]), max(0, side - array.shape[1])
    if ph == 0 and pw == 0:
        return array
    mode: Literal["reflect", "symmetric"] = (
        "reflect" if min(array.shape) > 1 and max(ph, pw) < min(array.shape) else "symmetric"
    )
    return np.pad(array, ((0, ph), (0, pw)), mode=mode)


def _crop_origin(
    centres: np.ndarray | None, shape: tuple[int, int], side: int, rng: np.random.Generator
) -> tuple[int, int]:
    """Top-left of a (side, side) crop of an (H, W) ``shape``: anywhere, or centred near a
    random True pixel of ``centres`` (H, W) bool if given.
    """
    h, w = shape
    if centres is not None:
        ys, xs = np.nonzero(centres)
        if ys.size:
            k = int(rng.integers(ys.size))
            return (
                int(np.clip(ys[k] - side // 2, 0, h - side)),
                int(np.clip(xs[k] - side // 2, 0, w - side)),
            )
    return int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))


def _patch_centres(
    label: np.ndarray, rng: np.random.Generator, n_classes: int, class_balanced: bool
) -> np.ndarray | None:
    """(H, W) bool: the pixels a patch of ``label`` may be centred on — those of a class
    drawn uniformly from its classes (``class_balanced``), else its labelled pixels — or
    None where every pixel may (a fully labelled slice, not class-balanced).

    Raises:
        DatasetError: the slice has no labelled pixel.
    """
    if class_balanced:
        present = np.flatnonzero(np.bincount(label.ravel(), minlength=n_classes)[:IGNORE])
        if present.size:
            return label == int(rng.choice(present))
    else:
        labelled = label != IGNORE
        if labelled.all():
            return None
        if labelled.any():
            return labelled
    raise DatasetError(
        "a patch was asked of a slice without a labelled pixel: leave such slices out "
        "(tomoloop.training.data.labelled_slices)"
    )


def _rotation(side: int, degrees: float) -> np.ndarray:
    """2×3 affine matrix rotating a (side, side) patch about its centre."""
    centre = side / 2 - 0.5
    return cv2.getRotationMatrix2D((centre, centre), degrees, 1.0)


def _warp(array: np.ndarray, matrix: np.ndarray, interpolation: int) -> np.ndarray:
    """Apply an affine matrix to a 2D array, borders reflected; shape and dtype kept."""
    h, w = array.shape
    return cv2.warpAffine(
        array, matrix, (w, h), flags=interpolation, borderMode=cv2.BORDER_REFLECT_101
    )


def augment(
    image: np.ndarray,
    labels: np.ndarray,
    weight: np.ndarray,
    rng: np.random.Generator,
    aug: Augmentation,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One random augmentation of a square patch: (P, P) image, labels, weight → same shapes.

    Geometry moves image, labels and weights together (labels nearest-neighbour); the
    grey-value changes touch the image only and keep it in [0, 1].
    """
    if aug.rotate90:
        k = int(rng.integers(4))
        image, labels, weight = (np.rot90(a, k) for a in (image, labels, weight))
    if aug.flip and rng.random() < 0.5:
        image, labels, weight = (a[:, ::-1] for a in (image, labels, weight))
    image, labels, weight = (np.ascontiguousarray(a) for a in (image, labels, weight))
    if aug.angle:
        matrix = _rotation(image.shape[0], float(rng.uniform(-aug.angle, aug.angle)))
        image = _warp(image, matrix, cv2.INTER_LINEAR)
        labels = _warp(labels, matrix, cv2.INTER_NEAREST)
        weight = _warp(weight, matrix, cv2.INTER_NEAREST)
    lo, hi = aug.zoom
    if hi > lo or lo != 1.0:
        side = image.shape[0]
        crop = max(16, round(side * float(rng.uniform(lo, hi))))
        y, x = int(rng.integers(side - crop + 1)), int(rng.integers(side - crop + 1))
        window = (slice(y, y + crop), slice(x, x + crop))
        image = cv2.resize(image[window], (side, side), interpolation=cv2.INTER_LINEAR)
        labels = cv2.resize(labels[window], (side, side), interpolation=cv2.INTER_NEAREST)
        weight = cv2.resize(weight[window], (side, side), interpolation=cv2.INTER_NEAREST)
    if aug.contrast or aug.brightness:
        gain = 1.0 + float(rng.uniform(-aug.contrast, aug.contrast))
        offset = float(rng.uniform(-aug.brightness, aug.brightness))
        image = np.clip((image - 0.5) * gain + 0.5 + offset, 0.0, 1.0).astype(np.float32)
    return image, labels, weight


def _weight_map(s: LabelledSlice, patch: int) -> np.ndarray:
    """The slice's per-pixel weights (H', W') float32, padded as its labels are to at least
    (patch, patch)."""
    if isinstance(s.weight, np.ndarray):
        return _pad_to(s.weight.astype(np.float32, copy=False), patch)
    shape = tuple(max(n, patch) for n in s.labels.shape)
    return np.full(shape, s.weight, dtype=np.float32)


def sample_patches(
    slices: Sequence[LabelledSlice],
    count: int,
    patch: int,
    rng: np.random.Generator,
    n_classes: int,
    class_balanced: bool = False,
    aug: Augmentation = NO_AUGMENTATION,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` random patches: images (N, 1, P, P) float32, labels (N, P, P) int64 and
    per-pixel weights (N, P, P) float32 (the slice's tier weight, or its per-pixel map).

    With ``class_balanced`` each patch is centred near a pixel of a class drawn uniformly
    from the classes of its slice, so a rare phase is seen as often as a common one;
    otherwise a patch of a partly labelled slice is centred near a labelled pixel. Labels
    keep :data:`IGNORE` at unlabelled pixels (padding reflects them like the image).

    Raises:
        DatasetError: a patch side not divisible by 16, or a drawn slice without a
            labelled pixel.
    """
    if patch % 16:
        raise DatasetError(f"patch side {patch} must be divisible by 16")
    images = np.empty((count, 1, patch, patch), dtype=np.float32)
    labels = np.empty((count, patch, patch), dtype=np.int64)
    weights = np.empty((count, patch, patch), dtype=np.float32)
    for n in range(count):
        s = slices[int(rng.integers(len(slices)))]
        image, label = _pad_to(s.image, patch), _pad_to(s.labels, patch)
        centres = _patch_centres(label, rng, n_classes, class_balanced)
        y, x = _crop_origin(centres, label.shape, patch, rng)
        window = (slice(y, y + patch), slice(x, x + patch))
        weight = _weight_map(s, patch)
        images[n, 0], labels[n], weights[n] = augment(
            image[window], label[window], weight[window], rng, aug
        )
    return torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(weights)
