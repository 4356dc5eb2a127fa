"""Binarized / multiphase label stacks → COCO instance annotations and semantic masks.

Implements the automated label generation of Daemi et al. 2022 (§2.1 and §4; docs/references.md):
every slice of a binarized nano-CT stack becomes a COCO image, every 2D connected
component of the chosen phase one instance. Unlike the script shipped with the paper,
instances are numbered with 32-bit labels (no wrap-around at 255), every slice keeps its
image, images and masks are paired by name, and masks are exact compressed RLE, holes and
cracks included. Polygons (OpenCV contours, holes bridged into the outer ring) are an
option for tools that only read polygons.

Pure functions work on slices (one, or a batch of one shape); :func:`convert_stack` streams
a stack to disk.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from itertools import islice, pairwise, repeat
from pathlib import Path
from typing import Literal

import cc3d
import cv2
import numpy as np
import orjson

from tomoloop.errors import OutputError, PhaseMapError
from tomoloop.labels.phases import IGNORE, PhaseMap
from tomoloop.labels.splits import split_slices
from tomoloop.outputs import temp_dir_beside, writing
from tomoloop.stacks.png import write_png
from tomoloop.stacks.tiff import (
    Axis,
    Stack,
    Window,
    check_declared,
    check_label_dtype,
    check_same_shape,
    percentile_window,
    to_uint8,
)

Connectivity = Literal[4, 8]


# ---------------------------------------------------------------- one slice


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
    order = np.argsort(values, kind="stable")
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
    k_slices, h, w = len(label_slices), *label_slices[0].shape
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


def class_index_lut(phases: PhaseMap) -> np.ndarray:
    """Lookup table label value → class index (position in the phase map): uint8, or uint16
    from 256 phases on (class 255 would read as :data:`tomoloop.labels.IGNORE` in uint8).
    """
    dtype = np.uint8 if len(phases) <= IGNORE else np.uint16
    lut = np.zeros(max(phases.values) + 1, dtype=dtype)
    lut[list(phases.values)] = np.arange(len(phases), dtype=dtype)
    return lut


class ParticleLinker:
    """3D particle ids from the 2D components of consecutive slices, one slice at a time.

    Two components of one phase in neighbouring slices are one particle when they touch in
    3D (6-connected for 4-connectivity in plane, 26 for 8): cc3d on the two-slice stack
    decides, union-find over component nodes carries it through the volume. The result is
    the particles cc3d finds in the whole volume, without ever holding the volume.
    """

    def __init__(self, connectivity: Connectivity = 8) -> None:
        self._parent: list[int] = []
        self._previous: list[tuple[np.ndarray, int]] | None = None  # per phase: labels, node 0
        self._connectivity_3d = 26 if connectivity == 8 else 6

    def add(self, labels_per_phase: list[np.ndarray]) -> np.ndarray:
        """Register the next slice's components (per phase, labels 1..n); their node ids.

        Node ids are in the order of :class:`SliceInstances` (phase by phase, label order).
        """
        current, nodes = [], []
        for labels in labels_per_phase:
            n, first = int(labels.max(initial=0)), len(self._parent)
            self._parent.extend(range(first, first + n))
            current.append((labels, first))
            nodes.append(np.arange(first, first + n))
        if self._previous is not None:
            for (before, node0), (now, node1) in zip(self._previous, current, strict=True):
                for a, b in self._touching(before, now):
                    self._union(node0 + a - 1, node1 + b - 1)
        self._previous = current
        return np.concatenate(nodes) if nodes else np.zeros(0, dtype=np.int64)

    def particle_ids(self) -> np.ndarray:
        """Particle id (1..) of every node, numbered in order of first appearance."""
        roots = np.array([self._find(i) for i in range(len(self._parent))], dtype=np.int64)
        _, first_seen, inverse = np.unique(roots, return_index=True, return_inverse=True)
        return np.argsort(np.argsort(first_seen))[inverse] + 1

    def _touching(self, before: np.ndarray, now: np.ndarray) -> list[tuple[int, int]]:
        """(label in ``before``, label in ``now``) pairs of components that touch in 3D."""
        pair = np.stack([before > 0, now > 0])  # (2, h, w)
        joint = cc3d.connected_components(pair, connectivity=self._connectivity_3d)
        group_of = []  # per slice: the 3D component of each 2D label (a 2D label lies in one)
        for labels, plane in zip((before, now), joint, strict=True):
            table = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int64)
            table[labels.ravel()] = plane.ravel()
            group_of.append(table[1:])
        first_before: dict[int, int] = {}
        first_now: dict[int, int] = {}
        for a, group in enumerate(group_of[0].tolist(), start=1):
            first_before.setdefault(group, a)
        for b, group in enumerate(group_of[1].tolist(), start=1):
            first_now.setdefault(group, b)
        # every component of a group meets the other slice's first one: the group is joined
        pairs = [(a, first_now[g]) for a, g in enumerate(group_of[0].tolist(), 1) if g in first_now]
        pairs += [
            (first_before[g], b) for b, g in enumerate(group_of[1].tolist(), 1) if g in first_before
        ]
        return pairs

    def _find(self, i: int) -> int:
        parent = self._parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def _union(self, i: int, j: int) -> None:
        ri, rj = self._find(i), self._find(j)
        if ri != rj:
            self._parent[max(ri, rj)] = min(ri, rj)


# ---------------------------------------------------------------- a whole stack


@dataclass(frozen=True)
class CocoOptions:
    """How a label stack becomes COCO.

    Attributes:
        instance_phases: label values whose connected components become instances
            (one category each); empty means every phase except value 0.
        connectivity: 2D pixel connectivity, 4 or 8.
        min_area: components smaller than this many pixels are dropped.
        polygons: also write polygon segmentations (approximate; RLE stays exact).
        particle_ids: store each annotation's 3D ``particle_id`` (:class:`ParticleLinker`,
            26- or 6-connected to match 8 or 4); streams like the rest of the conversion.
        axis: slicing axis, "z" (XY slices), "y" (XZ) or "x" (YZ).
        split: train/val/test fractions, or None for a single ``annotations.json``.
        gap: slices left out between splits.
        seed: seed of the block shuffle of the split.
        semantic_masks: write class-index mask PNGs to ``masks/``.
        workers: threads computing instances (None: one per CPU core). The output does
            not depend on it.
    """

    instance_phases: tuple[int, ...] = ()
    connectivity: Connectivity = 8
    min_area: int = 0
    polygons: bool = False
    particle_ids: bool = False
    axis: Axis = "z"
    split: tuple[float, float, float] | None = None
    gap: int = 2
    seed: int = 0
    semantic_masks: bool = True
    workers: int | None = None


@dataclass
class CocoSummary:
    """What :func:`convert_stack` wrote. Paths are strings so the summary is JSON-ready."""

    out_dir: str
    annotation_files: dict[str, str]
    slices: int
    images_written: int
    masks_written: int
    instances: dict[str, int]
    removed_by_min_area: int
    categories: list[str]
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """Fields plus throughput: ``slices_per_s`` and ``instances_per_s``."""
        rate = 1.0 / self.seconds if self.seconds > 0 else 0.0
        return {
            **asdict(self),
            "slices_per_s": self.slices * rate,
            "instances_per_s": sum(self.instances.values()) * rate,
        }


def slice_name(axis: Axis, index: int) -> str:
    """File stem shared by a slice's image and mask, e.g. ``z00042``."""
    return f"{axis}{index:05d}"


def check_out(out_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out_dir`` unless ``overwrite`` (before any work is done)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"output {out_dir} is a file: choose a new folder for --out")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise OutputError(
            f"output folder {out_dir} exists and is not empty: choose another --out or "
            "pass --overwrite"
        )


def check_new(target: Path) -> None:
    """Refuse an output that exists at all (commands that never overwrite)."""
    if target.exists():
        raise OutputError(f"{target} exists: choose a new --out (nothing is overwritten)")


def prepare_out(out_dir: Path, overwrite: bool) -> Path:
    """A temp folder beside ``out_dir`` to write into; :func:`publish` renames it into
    place. Refuses a non-empty ``out_dir`` unless ``overwrite``.
    """
    check_out(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return temp_dir_beside(out_dir)


def publish(tmp: Path, out_dir: Path) -> None:
    """Move the finished temp folder into place; an old folder is removed only afterwards."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old)


def convert_stack(
    labels: Stack,
    out_dir: str | os.PathLike[str],
    phases: PhaseMap,
    options: CocoOptions = CocoOptions(),
    gray: Stack | None = None,
    window: Window | None = None,
    overwrite: bool = False,
    on_slice: Callable[[int], None] | None = None,
) -> CocoSummary:
    """Convert a label stack (and optionally its grayscale) to a COCO dataset folder.

    Writes ``out_dir/annotations.json`` (or ``train/val/test.json`` with a split),
    ``images/<axis><index>.png`` (8-bit grayscale, only with ``gray``) and
    ``masks/<axis><index>.png`` (class-index masks). Everything is written to a temporary
    folder beside ``out_dir`` and renamed into place only when complete: on any error
    nothing is left behind and an existing ``out_dir`` is untouched.

    Raises:
        StackValidationError: shapes differ, labels are not integers, or a slice holds a
            value the phase map does not declare.
        OutputError: ``out_dir`` exists and is not empty (without ``overwrite``).
    """
    check_label_dtype(labels)
    if gray is not None:
        check_same_shape(gray, labels)
    values = options.instance_phases or tuple(v for v in phases.values if v != 0)
    for v in values:
        phases.value(v)  # raises PhaseMapError for a phase the map does not name
    if len(values) > 255:
        raise PhaseMapError(f"{len(values)} instance phases: at most 255 can be converted at once")
    out = Path(out_dir)
    started = time.perf_counter()
    with writing("--out", out):
        tmp = prepare_out(out, overwrite)
        try:
            summary = _convert_into(tmp, labels, phases, values, options, gray, window, on_slice)
            publish(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    summary.out_dir = str(out)
    summary.annotation_files = {k: str(out / v) for k, v in summary.annotation_files.items()}
    summary.seconds = time.perf_counter() - started
    return summary


_BATCH_PIXELS = 1 << 20  # slices per batch: as many as hold 1 Mi pixels (cache-sized)


def instance_annotations(
    found: SliceInstances, image_id: int, first_id: int, particle_nodes: np.ndarray | None
) -> list[dict]:
    """COCO annotation dicts of one slice's instances, ids counting up from ``first_id``.

    ``particle_nodes`` (ParticleLinker node ids) go into ``particle_id``, to be replaced
    by particle ids once every slice is linked.
    """
    out = []
    categories = (found.category_index + 1).tolist()
    areas, boxes = found.areas.tolist(), found.bboxes.tolist()
    for k, rle in enumerate(found.rles):
        ann = {
            "id": first_id + k,
            "image_id": image_id,
            "category_id": categories[k],
            "segmentation": found.polygons[k] if found.polygons is not None else rle,
            "area": areas[k],
            "bbox": boxes[k],
            "iscrowd": 0,
        }
        if found.polygons is not None:
            ann["rle"] = rle
        if particle_nodes is not None:
            ann["particle_id"] = int(particle_nodes[k])
        out.append(ann)
    return out


def batches(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last may be shorter), read lazily."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


@dataclass(frozen=True)
class _Job:
    """What every batch of a conversion shares (read-only, so workers can share it)."""

    tmp: Path
    labels: Stack
    gray: Stack | None
    window: Window | None
    phases: PhaseMap
    values: tuple[int, ...]
    options: CocoOptions
    split_of: dict[int, str]


def _convert_batch(job: _Job, indices: list[int]) -> list[tuple[int, dict | None, SliceInstances]]:
    """Read, validate and export a batch of slices; ``(index, image entry, instances)`` each.

    Runs in a worker thread: TIFF decoding, PNG encoding, OpenCV and most NumPy work
    release the GIL. Slices outside every split are validated and analysed (for particle
    linking) but not exported: their image entry is None.
    """
    axis, tmp = job.options.axis, job.tmp
    label_slices = [image for _, image in job.labels.iter_slices(axis, indices)]
    grays = job.gray.iter_slices(axis, indices) if job.gray is not None else repeat((0, None))
    lut = class_index_lut(job.phases)
    entries: list[dict | None] = []
    for i, label_slice, (_, gray_slice) in zip(indices, label_slices, grays, strict=False):
        check_declared(label_slice, job.phases, f"{job.labels.path.name} {axis}={i}")
        if i not in job.split_of:
            entries.append(None)
            continue
        name = slice_name(axis, i)
        h, w = label_slice.shape
        image = {
            "id": i + 1,
            "file_name": f"{name}.png",
            "height": h,
            "width": w,
            "axis": axis,
            "index": i,
        }
        if gray_slice is not None:
            write_png(tmp / "images" / f"{name}.png", to_uint8(gray_slice, job.window))
        if job.options.semantic_masks:
            image["mask_file"] = f"masks/{name}.png"
            write_png(tmp / "masks" / f"{name}.png", lut[label_slice])
        entries.append(image)
    found = batch_instances(
        label_slices,
        job.values,
        job.options.connectivity,
        job.options.min_area,
        job.options.polygons,
    )
    return list(zip(indices, entries, found, strict=True))


def _convert_slices(
    job: _Job,
    labels: Stack,
    order: int,
    n: int,
    options: CocoOptions,
    collect: Callable[[list[tuple[int, dict | None, SliceInstances]]], None],
) -> None:
    """Convert every slice in batches on worker threads, handing results to ``collect`` in
    slice order (at most ``workers`` batches in flight). Every slice is validated (and
    linked into particles), also those in split gaps.
    """
    plane = math.prod(s for k, s in enumerate(labels.shape) if k != order)
    workers = options.workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future] = deque()
        try:
            for indices in batches(range(n), max(1, _BATCH_PIXELS // plane)):
                pending.append(pool.submit(_convert_batch, job, indices))
                if len(pending) > workers:
                    collect(pending.popleft().result())
            while pending:
                collect(pending.popleft().result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _json(value: object) -> bytes:
    """Compact ASCII JSON (json.dumps: non-ASCII characters escaped as they always were)."""
    return json.dumps(value, separators=(",", ":")).encode("ascii")


def _json_items(items: list[dict]) -> bytes:
    """Annotations as the items of a JSON array without its brackets, to be joined with
    commas. orjson (~6× json.dumps here) writes the same bytes as :func:`_json` for them:
    ASCII strings (RLE counts), ints and floats.
    """
    return orjson.dumps(items)[1:-1]


def _convert_into(
    tmp: Path,
    labels: Stack,
    phases: PhaseMap,
    values: tuple[int, ...],
    options: CocoOptions,
    gray: Stack | None,
    window: Window | None,
    on_slice: Callable[[int], None] | None,
) -> CocoSummary:
    order = "zyx".index(options.axis)
    n = labels.shape[order]
    if options.split is None:
        members = {"annotations": list(range(n))}
    else:
        members = split_slices(n, options.split, gap=options.gap, seed=options.seed)
    split_of = {i: name for name, idx in members.items() for i in idx}
    if gray is not None:
        (tmp / "images").mkdir()
        window = window or percentile_window(gray)
    if options.semantic_masks:
        (tmp / "masks").mkdir()
    job = _Job(tmp, labels, gray, window, phases, values, options, split_of)
    categories = [
        {"id": k + 1, "name": phases.name(v), "supercategory": "phase", "label_value": v}
        for k, v in enumerate(values)
    ]
    images: dict[str, list[dict]] = {name: [] for name in members}
    instances = dict.fromkeys(members, 0)
    linker = ParticleLinker(options.connectivity) if options.particle_ids else None
    with tempfile.TemporaryDirectory(prefix=".spool-", dir=tmp) as spool_dir:
        # annotations go to a spool file per split as they come (JSON items, one line per
        # slice, or per annotation with its linker node set aside until every slice is
        # linked): memory stays flat however many instances the volume holds
        spools = {name: Path(spool_dir) / f"{name}.jsonl" for name in members}
        nodes: dict[str, list[int]] = {name: [] for name in members}
        next_id, removed = 1, 0
        with contextlib.ExitStack() as stack:
            spooled = {n: stack.enter_context(p.open("wb")) for n, p in spools.items()}

            def collect(results: list[tuple[int, dict | None, SliceInstances]]) -> None:
                nonlocal removed, next_id
                for i, image, found in results:
                    linked = linker.add(found.labels) if linker is not None else None
                    if image is not None and found.rles:
                        split = split_of[i]
                        anns = instance_annotations(found, i + 1, next_id, linked)
                        if linker is None:
                            spooled[split].write(_json_items(anns) + b"\n")
                        else:
                            nodes[split] += [a.pop("particle_id") for a in anns]
                            spooled[split].writelines(_json_items([a]) + b"\n" for a in anns)
                        next_id += len(anns)
                        instances[split] += len(anns)
                    if image is not None:
                        images[split_of[i]].append(image)
                        removed += found.removed
                    if on_slice is not None:
                        on_slice(i)

            _convert_slices(job, labels, order, n, options, collect)
        particle_of_node = linker.particle_ids() if linker is not None else None
        info = {
            "description": f"tomoloop COCO export of {labels.path.name}",
            "labels": str(labels.path),
            "gray": str(gray.path) if gray is not None else None,
            "phases": str(phases),
            "axis": options.axis,
            "connectivity": options.connectivity,
            "min_area": options.min_area,
            "voxel_size_um": labels.voxel_size,
            "images_dir": "images" if gray is not None else None,
        }
        files = {name: f"{name}.json" for name in members}
        for name in members:
            ids = None
            if particle_of_node is not None:
                ids = particle_of_node[np.asarray(nodes[name], dtype=np.int64)].tolist()
            with (tmp / files[name]).open("wb") as out, spools[name].open("rb") as lines:
                out.write(
                    b'{"info":%b,"images":%b,"annotations":[' % (_json(info), _json(images[name]))
                )
                for k, line in enumerate(lines):
                    item = line[:-1]
                    if ids is not None:  # the particle id goes last, where the node was
                        item = b'%b,"particle_id":%d}' % (item[:-1], ids[k])
                    out.write(b",%b" % item if k else item)
                out.write(b'],"categories":%b,"licenses":[]}' % _json(categories))
    exported = len(split_of)
    return CocoSummary(
        out_dir=str(tmp),
        annotation_files=files,
        slices=exported,
        images_written=exported if gray is not None else 0,
        masks_written=exported if options.semantic_masks else 0,
        instances=instances,
        removed_by_min_area=removed,
        categories=[c["name"] for c in categories],
        seconds=0.0,
    )
