"""Binarized / multiphase label stacks → COCO instance annotations and semantic masks.

Implements the automated label generation of Daemi et al. (seed 004, §2.1 and Methods):
every slice of a binarized nano-CT stack becomes a COCO image, every 2D connected
component of the chosen phase one instance. Unlike the script shipped with the paper,
instances are numbered with 32-bit labels (no wrap-around at 255), every slice keeps its
image, images and masks are paired by name, and masks are exact compressed RLE, holes and
cracks included. Polygons (OpenCV contours, holes bridged into the outer ring) are an
option for tools that only read polygons.

Pure functions work on one 2D slice; :func:`convert_stack` streams a stack to disk.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import repeat
from pathlib import Path
from typing import Literal

import cc3d
import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tomoloop.errors import OutputError
from tomoloop.phases import PhaseMap
from tomoloop.pngs import write_png
from tomoloop.splits import split_slices
from tomoloop.stacks import (
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


def components(
    mask: np.ndarray, connectivity: Connectivity = 8, min_area: int = 0
) -> tuple[np.ndarray, np.ndarray, int]:
    """Label the 2D connected components of a binary mask.

    Args:
        mask: (h, w) bool or 0/1 array.
        connectivity: 4 or 8 (pixel neighbourhood).
        min_area: components with fewer pixels are dropped.

    Returns:
        ``(labels, stats, removed)``: int32 (h, w) labels, 0 background and 1..n in raster
        order of their first pixel; (n, 5) int32 ``[x, y, w, h, area]`` per kept
        component (bounding box in pixels); the number dropped by ``min_area``.
    """
    n_all, labels, stats, _ = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(mask, dtype=np.uint8), connectivity=connectivity, ltype=cv2.CV_32S
    )
    keep = stats[:, cv2.CC_STAT_AREA] >= max(min_area, 1)
    keep[0] = False
    kept = int(keep.sum())
    if kept == n_all - 1:
        return labels, stats[1:], 0
    relabel = np.zeros(n_all, dtype=np.int32)
    relabel[keep] = np.arange(1, kept + 1, dtype=np.int32)
    return relabel[labels], stats[keep], n_all - 1 - kept


@dataclass(frozen=True)
class Runs:
    """Column-major runs of every labelled component of a slice, grouped by component.

    ``counts[k]`` is the uncompressed COCO RLE of component k+1 (alternating background /
    foreground run lengths, column-major, starting with background, summing to h*w; no
    trailing zero-length run — exactly what ``pycocotools.mask.encode`` produces).
    """

    height: int
    width: int
    counts: list[list[int]]
    first_pixel: np.ndarray  # (n,) column-major index of each component's first pixel


def label_runs(labels: np.ndarray, n: int) -> Runs:
    """Uncompressed COCO RLE of components 1..n of an int label image, all in one pass."""
    h, w = labels.shape
    flat = labels.ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [flat.size]))
    values = flat[starts]
    fg = values > 0
    starts, ends, values = starts[fg], ends[fg], values[fg]
    order = np.argsort(values, kind="stable")
    starts, ends, values = starts[order], ends[order], values[order]
    bounds = np.searchsorted(values, np.arange(1, n + 2))
    prev_end = np.concatenate(([0], ends[:-1]))
    prev_end[bounds[:-1][bounds[:-1] < len(starts)]] = 0
    pairs = np.empty(2 * len(starts), dtype=np.int64)
    pairs[0::2] = starts - prev_end
    pairs[1::2] = ends - starts
    flat_pairs = pairs.tolist()
    total = h * w
    counts = []
    for b, e in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        trailing = total - int(ends[e - 1])
        counts.append(flat_pairs[2 * b : 2 * e] + ([trailing] if trailing else []))
    return Runs(h, w, counts, starts[bounds[:-1]])


def compress(runs: Runs) -> list[dict]:
    """COCO compressed RLE (``{"size": [h, w], "counts": str}``) of every component."""
    if not runs.counts:
        return []
    encoded = mask_utils.frPyObjects(
        [{"size": [runs.height, runs.width], "counts": c} for c in runs.counts],
        runs.height,
        runs.width,
    )
    return [{"size": e["size"], "counts": e["counts"].decode("ascii")} for e in encoded]


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
    first_pixel: np.ndarray  # (n,) column-major index of each instance's first pixel


def slice_instances(
    label_slice: np.ndarray,
    values: tuple[int, ...],
    connectivity: Connectivity = 8,
    min_area: int = 0,
    polygons: bool = False,
) -> SliceInstances:
    """Instances of every phase in ``values`` on one (h, w) label slice."""
    cats, rles, stats, polys, firsts, all_labels = [], [], [], [], [], []
    removed = 0
    for k, value in enumerate(values):
        labels, found, dropped = components(label_slice == value, connectivity, min_area)
        removed += dropped
        all_labels.append(labels)
        if len(found) == 0:
            continue
        runs = label_runs(labels, len(found))
        cats.append(np.full(len(found), k))
        rles += compress(runs)
        stats.append(found)
        firsts.append(runs.first_pixel)
        if polygons:
            polys += [mask_polygons(labels == j) for j in range(1, len(found) + 1)]
    table = np.concatenate(stats) if stats else np.zeros((0, 5), dtype=np.int64)
    return SliceInstances(
        category_index=np.concatenate(cats) if cats else np.zeros(0, dtype=np.int64),
        rles=rles,
        areas=table[:, 4].astype(np.int64),
        bboxes=table[:, :4].astype(np.float64),
        polygons=polys if polygons else None,
        removed=removed,
        labels=all_labels,
        first_pixel=np.concatenate(firsts) if firsts else np.zeros(0, dtype=np.int64),
    )


def class_index_lut(phases: PhaseMap) -> np.ndarray:
    """Lookup table label value → class index (position in the phase map), uint8/uint16."""
    dtype = np.uint8 if len(phases) <= 256 else np.uint16
    lut = np.zeros(max(phases.values) + 1, dtype=dtype)
    lut[list(phases.values)] = np.arange(len(phases), dtype=dtype)
    return lut


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
        particle_ids: label 3D particles with cc3d (26- or 6-connected to match 8 or 4) and
            store each annotation's ``particle_id``; reads the label volume into memory.
        axis: slicing axis, "z" (XY slices), "y" (XZ) or "x" (YZ).
        split: train/val/test fractions, or None for a single ``annotations.json``.
        gap: slices left out between splits.
        seed: seed of the block shuffle of the split.
        semantic_masks: write class-index mask PNGs to ``masks/``.
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


def _prepare_out(out_dir: Path, overwrite: bool) -> Path:
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise OutputError(
            f"output folder {out_dir} exists and is not empty: choose another --out or "
            "pass --overwrite"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))


def _publish(tmp: Path, out_dir: Path) -> None:
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
    out = Path(out_dir)
    started = time.perf_counter()
    tmp = _prepare_out(out, overwrite)
    try:
        summary = _convert_into(tmp, labels, phases, values, options, gray, window, on_slice)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary.out_dir = str(out)
    summary.annotation_files = {k: str(out / v) for k, v in summary.annotation_files.items()}
    summary.seconds = time.perf_counter() - started
    return summary


def _particle_volume(labels: Stack, values: tuple[int, ...], connectivity: int) -> np.ndarray:
    volume = labels.read()
    volume = np.where(np.isin(volume, values), volume, 0)
    return cc3d.connected_components(volume, connectivity=26 if connectivity == 8 else 6)


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
    axis = options.axis
    order = "zyx".index(axis)
    n = labels.shape[order]
    if options.split is None:
        members = {"annotations": list(range(n))}
    else:
        members = split_slices(n, options.split, gap=options.gap, seed=options.seed)
    split_of = {i: name for name, idx in members.items() for i in idx}
    wanted = sorted(split_of)
    particles = (
        _particle_volume(labels, values, options.connectivity) if options.particle_ids else None
    )
    if gray is not None:
        (tmp / "images").mkdir()
        window = window or percentile_window(gray)
    gray_slices = gray.iter_slices(axis, wanted) if gray is not None else repeat((None, None))
    if options.semantic_masks:
        (tmp / "masks").mkdir()
        lut = class_index_lut(phases)
    categories = [
        {"id": k + 1, "name": phases.name(v), "supercategory": "phase", "label_value": v}
        for k, v in enumerate(values)
    ]
    images: dict[str, list[dict]] = {name: [] for name in members}
    annotations: dict[str, list[dict]] = {name: [] for name in members}
    next_id, removed, images_written, masks_written = 1, 0, 0, 0
    for (i, label_slice), (_, gray_slice) in zip(
        labels.iter_slices(axis, wanted), gray_slices, strict=False
    ):
        check_declared(label_slice, phases, f"{labels.path.name} {axis}={i}")
        name = slice_name(axis, i)
        h, w = label_slice.shape
        split = split_of[i]
        image = {
            "id": i + 1,
            "file_name": f"{name}.png",
            "height": h,
            "width": w,
            "axis": axis,
            "index": i,
        }
        if gray_slice is not None:
            write_png(tmp / "images" / f"{name}.png", to_uint8(gray_slice, window))
            images_written += 1
        if options.semantic_masks:
            image["mask_file"] = f"masks/{name}.png"
            write_png(tmp / "masks" / f"{name}.png", lut[label_slice])
            masks_written += 1
        images[split].append(image)
        found = slice_instances(
            label_slice, values, options.connectivity, options.min_area, options.polygons
        )
        removed += found.removed
        pids = (
            np.take(particles, i, axis=order).ravel(order="F")[found.first_pixel]
            if particles is not None
            else None
        )
        for k in range(len(found.rles)):
            ann = {
                "id": next_id,
                "image_id": i + 1,
                "category_id": int(found.category_index[k]) + 1,
                "segmentation": found.polygons[k] if found.polygons is not None else found.rles[k],
                "area": int(found.areas[k]),
                "bbox": found.bboxes[k].tolist(),
                "iscrowd": 0,
            }
            if found.polygons is not None:
                ann["rle"] = found.rles[k]
            if pids is not None:
                ann["particle_id"] = int(pids[k])
            annotations[split].append(ann)
            next_id += 1
        if on_slice is not None:
            on_slice(i)
    info = {
        "description": f"tomoloop COCO export of {labels.path.name}",
        "labels": str(labels.path),
        "gray": str(gray.path) if gray is not None else None,
        "phases": str(phases),
        "axis": axis,
        "connectivity": options.connectivity,
        "min_area": options.min_area,
        "voxel_size_um": labels.voxel_size,
        "images_dir": "images" if gray is not None else None,
    }
    files = {}
    for name in members:
        files[name] = f"{name}.json"
        doc = {
            "info": info,
            "images": images[name],
            "annotations": annotations[name],
            "categories": categories,
            "licenses": [],
        }
        with open(tmp / files[name], "w") as fh:
            json.dump(doc, fh, separators=(",", ":"))
    return CocoSummary(
        out_dir=str(tmp),
        annotation_files=files,
        slices=len(wanted),
        images_written=images_written,
        masks_written=masks_written,
        instances={name: len(a) for name, a in annotations.items()},
        removed_by_min_area=removed,
        categories=[c["name"] for c in categories],
        seconds=0.0,
    )
