"""One slice (or a batch of slices of one shape) → COCO instances: exact RLE, areas, boxes.

Every 2D connected component of a converted phase becomes one instance (Daemi et al. 2022,
§2.1; docs/references.md), its mask as COCO compressed RLE built for the whole batch in one
vectorised pass, optionally with OpenCV polygons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import cv2
import numpy as np

Connectivity = Literal[4, 8]


@dataclass(frozen=True)
class Runs:
    """Uncompressed COCO RLE, area and box of every labelled component of a batch, flat.

    Component k+1 owns ``counts[offsets[k]:offsets[k + 1]]``: alternating background /
    foreground run lengths in column-major order, starting with background and without a
    trailing zero-length run — exactly what ``pycocotools.mask.encode`` produces.
    """

    height: int
    width: int
    counts: np.ndarray  # (m,) int64
    offsets: np.ndarray  # (n + 1,) int64
    areas: np.ndarray  # (n,) pixels
    bboxes: np.ndarray  # (n, 4) x, y, w, h in pixels

    def select(self, keep: np.ndarray) -> Runs:
        """Only the components where the (n,) bool ``keep`` is True, in order."""
        lengths = np.diff(self.offsets)
        counts = self.counts[np.repeat(keep, lengths)]
        offsets = np.concatenate(([0], np.cumsum(lengths[keep])))
        return Runs(self.height, self.width, counts, offsets, self.areas[keep], self.bboxes[keep])


def label_runs(labels: np.ndarray, classes_t: np.ndarray, n: int) -> Runs:
    """RLE, area and bounding box of components 1..n, all in one vectorised pass.

    Args:
        labels: (k, h, w) int component ids ≥ 1, unique across the k slices; read only
            where ``classes_t`` > 0.
        classes_t: (k, w, h) uint8 phase index of each pixel (0 = not converted), each
            slice transposed, so that its rows are the columns COCO's RLE walks. Within one
            column a run of one class is one component (vertical neighbours are connected
            under 4- and 8-connectivity), so runs are found on these bytes and ``labels``
            is read only at run starts.
        n: the largest id; every id 1..n must occur.
    """
    _, h, w = labels.shape
    plane = h * w
    flat = classes_t.ravel()  # column-major within each slice
    changed = flat[1:] != flat[:-1]
    changed[h - 1 :: h] = True  # split at every column end (and so every slice end)
    change = np.flatnonzero(changed) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [flat.size]))
    inside = flat[starts] > 0
    starts, ends = starts[inside], ends[inside]
    slice_index = starts // plane
    starts, ends = starts - slice_index * plane, ends - slice_index * plane  # within a slice
    values = labels.reshape(-1, plane)[slice_index, starts % h * w + starts // h]
    keys = values.astype(np.uint16) if n < 1 << 16 else values  # 16 bits: radix sort
    order = np.argsort(keys, kind="stable")
    starts, ends, values = starts[order], ends[order], values[order]
    bounds = np.searchsorted(values, np.arange(1, n + 2))  # runs of component k: [b_k, b_k+1)
    first = bounds[:-1]
    # each run lies in one column here: boxes and areas from run ends
    column, row0, row1 = starts // h, starts % h, (ends - 1) % h
    x0, x1 = column[first], column[bounds[1:] - 1]
    y0, y1 = np.minimum.reduceat(row0, first), np.maximum.reduceat(row1, first)
    areas = np.add.reduceat(ends - starts, first)
    bboxes = np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], axis=1)
    # COCO counts: join runs that continue over a column end, then gaps and lengths
    opens = np.ones(len(values), dtype=bool)
    opens[1:] = (values[1:] != values[:-1]) | (starts[1:] != ends[:-1])
    closes = np.ones(len(values), dtype=bool)
    closes[:-1] = opens[1:]
    runs_per = np.add.reduceat(opens, first)
    starts, ends = starts[opens], ends[closes]
    bounds = np.concatenate(([0], np.cumsum(runs_per)))
    prev_end = np.concatenate(([0], ends[:-1]))
    prev_end[bounds[:-1]] = 0  # every component starts counting from pixel 0
    pairs = np.empty(2 * len(starts), dtype=np.int64)
    pairs[0::2] = starts - prev_end
    pairs[1::2] = ends - starts
    trailing = plane - ends[bounds[1:] - 1]
    with_trailing = np.insert(pairs, 2 * bounds[1:], trailing)
    keep = np.ones(len(with_trailing), dtype=bool)
    keep[2 * bounds[1:] + np.arange(n)] = trailing > 0
    lengths = 2 * np.diff(bounds) + (trailing > 0)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    return Runs(h, w, with_trailing[keep], offsets, areas, bboxes)


def compress(runs: Runs) -> list[dict]:
    """COCO compressed RLE (``{"size": [h, w], "counts": str}``) of every component.

    The string form of pycocotools' ``rleToString``, vectorised over all counts: each
    count (from the third on, as the difference to the count two before) is written in
    5-bit groups, low first, bit 0x20 meaning "more follows", each group plus 48 as ASCII.
    """
    n = len(runs.offsets) - 1
    if n == 0:
        return []
    counts = runs.counts
    position = np.arange(len(counts)) - np.repeat(runs.offsets[:-1], np.diff(runs.offsets))
    x = counts.copy()
    x[2:] -= np.where(position[2:] > 2, counts[:-2], 0)
    per_count = np.zeros(len(x), dtype=np.int64)  # characters each count takes
    rounds = []  # per round: (indices of counts still being written, their characters)
    index = np.arange(len(x))
    while index.size:
        c = x & 0x1F
        x = x >> 5
        more = np.where(c & 0x10, x != -1, x != 0)
        rounds.append((index, ((c | (more << 5)) + 48).astype(np.uint8)))
        per_count[index] += 1
        index, x = index[more], x[more]
    first_char = np.concatenate(([0], np.cumsum(per_count)))
    chars = np.empty(first_char[-1], dtype=np.uint8)
    for r, (index, group) in enumerate(rounds):
        chars[first_char[index] + r] = group
    text = chars.tobytes().decode("ascii")
    char_offsets = first_char[runs.offsets].tolist()
    size = [runs.height, runs.width]
    return [{"size": size, "counts": text[a:b]} for a, b in pairwise(char_offsets)]


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons ([x0, y0, x1, y1, ...], pixel centres) of a binary (h, w) mask.

    Each outer contour becomes one polygon; its holes are spliced in through a zero-width
    bridge at their closest points, so a rasteriser fills the ring, not the hole. Contours
    of fewer than 3 points (1–2 pixel objects) become the pixel square around them.
    """
    contours, hierarchy = cv2.findContours(
        np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE
    )
    if hierarchy is None:
        return []
    polygons = []
    links = hierarchy[0]
    for k, contour in enumerate(contours):
        if links[k][3] != -1:
            continue  # a hole: spliced into its parent below
        ring = contour[:, 0, :].astype(np.float64)
        child = links[k][2]
        while child != -1:
            ring = _bridge(ring, contours[child][:, 0, :].astype(np.float64))
            child = links[child][0]
        if len(ring) < 3:
            x0, y0 = ring.min(axis=0) - 0.5
            x1, y1 = ring.max(axis=0) + 0.5
            ring = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        polygons.append(ring.ravel().tolist())
    return polygons


def _bridge(outer: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Splice ``hole`` (m, 2) into ``outer`` (k, 2) at their closest pair of points."""
    d = ((outer[:, None, :] - hole[None, :, :]) ** 2).sum(axis=2)
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    hole_loop = np.concatenate((hole[j:], hole[: j + 1]))
    return np.concatenate((outer[: i + 1], hole_loop, outer[i:]))


@dataclass(frozen=True)
class SliceInstances:
    """The instances of one slice, before ids are assigned. Arrays have length n."""

    category_index: np.ndarray  # (n,) index into the converted phase values
    rles: list[dict]
    areas: np.ndarray
    bboxes: np.ndarray  # (n, 4) x, y, w, h
    polygons: list[list[list[float]]] | None
    removed: int  # components dropped by the area filter
    labels: list[np.ndarray]  # per phase: int32 component labels of the slice


def slice_instances(
    label_slice: np.ndarray,
    values: tuple[int, ...],
    connectivity: Connectivity = 8,
    min_area: int = 0,
    polygons: bool = False,
) -> SliceInstances:
    """Instances of every phase in ``values`` on one (h, w) label slice."""
    return batch_instances([label_slice], values, connectivity, min_area, polygons)[0]


def batch_instances(
    label_slices: Sequence[np.ndarray],
    values: tuple[int, ...],
    connectivity: Connectivity = 8,
    min_area: int = 0,
    polygons: bool = False,
) -> list[SliceInstances]:
    """Instances of every phase in ``values`` on each of k (h, w) label slices of one shape.

    Components are labelled slice by slice; their RLEs are built for the whole batch at
    once, which amortises NumPy's per-call overhead over many small slices.
    """
    k_slices = len(label_slices)
    h, w = label_slices[0].shape
    combined = np.empty((k_slices, h, w), dtype=np.int32)
    classes_t = np.empty((k_slices, w, h), dtype=np.uint8)
    labels_of: list[list[np.ndarray]] = []  # per slice, per phase: component labels 1..n
    category: list[int] = []  # phase index of every component, in id order
    slice_of: list[int] = []  # slice of every component
    offset = 0
    for j, label_slice in enumerate(label_slices):
        labels_of.append([])
        classes = np.zeros((h, w), dtype=np.uint8)
        for k, value in enumerate(values):
            mask = label_slice == value
            n, labels = cv2.connectedComponents(
                mask.view(np.uint8), connectivity=connectivity, ltype=cv2.CV_32S
            )
            labels_of[j].append(labels)
            if n == 1:
                continue
            if k == 0:  # background gets junk ids, but class 0: never read
                np.add(labels, offset, out=combined[j])
                classes = mask.view(np.uint8)
            else:
                np.copyto(combined[j], labels + offset, where=mask)
                np.copyto(classes, k + 1, where=mask)
            offset += n - 1
            category += [k] * (n - 1)
            slice_of += [j] * (n - 1)
        cv2.transpose(classes, dst=classes_t[j])  # much faster than NumPy's strided copy
    runs = label_runs(combined, classes_t, offset)
    category_index, slice_index = np.array(category, np.int64), np.array(slice_of, np.int64)
    keep = runs.areas >= max(min_area, 1)
    removed = np.bincount(slice_index[~keep], minlength=len(label_slices))
    if not keep.all():
        runs = runs.select(keep)
        category_index, slice_index = category_index[keep], slice_index[keep]
        labels_of = [_drop_small(per_phase, min_area) for per_phase in labels_of]
    rles = compress(runs)
    bounds = np.searchsorted(slice_index, np.arange(len(label_slices) + 1)).tolist()
    return [
        SliceInstances(
            category_index=category_index[a:b],
            rles=rles[a:b],
            areas=runs.areas[a:b],
            bboxes=runs.bboxes[a:b].astype(np.float64),
            polygons=[
                mask_polygons(labels == i)
                for labels in labels_of[j]
                for i in range(1, int(labels.max(initial=0)) + 1)
            ]
            if polygons
            else None,
            removed=int(removed[j]),
            labels=labels_of[j],
        )
        for j, (a, b) in enumerate(pairwise(bounds))
    ]


def _drop_small(labels_per_phase: list[np.ndarray], min_area: int) -> list[np.ndarray]:
    """Component labels with components under ``min_area`` pixels removed, renumbered 1..m."""
    out = []
    for labels in labels_per_phase:
        areas = np.bincount(labels.ravel())
        keep = areas >= min_area
        keep[0] = False
        relabel = np.zeros(len(areas), dtype=np.int32)
        relabel[keep] = np.arange(1, int(np.count_nonzero(keep)) + 1, dtype=np.int32)
        out.append(relabel[labels] if not keep[1:].all() else labels)
    return out
