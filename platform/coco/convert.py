"""Binarized / multiphase label stacks → COCO instance annotations and semantic masks.

Implements the automated label generation of Daemi et al. 2022 (§2.1 and §4; docs/references.md):
every slice of a binarized nano-CT stack becomes a COCO image, every 2D connected
component of the chosen phase one instance. Unlike the script shipped with the paper,
instances are numbered with 32-bit labels (no wrap-around at 255), every slice keeps its
image, images and masks are paired by name, and masks are exact compressed RLE, holes and
cracks included. Polygons (OpenCV contours, holes bridged into the outer ring) are an
option for tools that only read polygons.

The slice-level work is in :mod:`tomoloop.coco.instances`, 3D particle ids in
:mod:`tomoloop.coco.particles`; :func:`convert_stack` streams a stack to disk.
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from itertools import islice, pairwise, repeat
from pathlib import Path

import numpy as np
import orjson

from tomoloop.coco.instances import (
    Connectivity,
    SliceInstances,
    batch_instances,
)
from tomoloop.coco.particles import ParticleLinker, touching_pairs
from tomoloop.errors import OutputError, PhaseMapError
from tomoloop.labels.masks import stack_class_counts
from tomoloop.labels.phases import PhaseMap, check_declared, class_index_lut
from tomoloop.labels.splits import balanced_seed, split_slices
from tomoloop.outputs import temp_dir_beside, writing
from tomoloop.stacks.checks import check_label_dtype, check_same_shape
from tomoloop.stacks.png import write_png
from tomoloop.stacks.stack import Axis, Stack
from tomoloop.stacks.window import Window, percentile_window, to_uint8


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
        seed: seed of the block shuffle of the split; None: the first seed that leaves no
            split short of a phase (:func:`tomoloop.labels.splits.balanced_seed`, after a
            pass over the labels that counts them).
        members: the slice indices of each split, given (a registered volume's split), in
            place of ``split``, ``gap`` and ``seed``.
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
    seed: int | None = None
    members: Mapping[str, Sequence[int]] | None = None
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
    split_seed: int | None = None  # the block shuffle of the split (None: no split)
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


def instance_annotations(found: SliceInstances, image_id: int, first_id: int) -> list[dict]:
    """COCO annotation dicts of one slice's instances, ids counting up from ``first_id``
    (a ``particle_id`` is added to each as the file is written: :func:`_with_particle_ids`).
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


Touching = list[tuple[np.ndarray, np.ndarray]]  # per phase: touching_pairs with the slice before
Converted = tuple[int, dict | None, SliceInstances, Touching | None]


def _convert_batch(job: _Job, indices: list[int], before: Future | None) -> list[Converted]:
    """Read, validate and export a batch of slices; ``(index, image entry, instances,
    touching)`` each.

    Runs in a worker thread: TIFF decoding, PNG encoding, OpenCV and most NumPy work
    release the GIL. Slices outside every split are validated and analysed (for particle
    linking) but not exported: their image entry is None. With particle ids, ``touching``
    holds the pairs of components that touch the slice before (None for the first slice);
    ``before`` is the previous batch, whose last slice it needs.
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
        if gray_slice is not None and job.window is not None:
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
    touching: list[Touching | None] = [None] * len(found)
    if job.options.particle_ids:
        previous = [before.result()[-1][2]] if before is not None else []
        diagonal = job.options.connectivity == 8
        touching = [None] * (not previous) + [
            [touching_pairs(a, b, diagonal) for a, b in zip(p.labels, q.labels, strict=True)]
            for p, q in pairwise([*previous, *found])
        ]
    return list(zip(indices, entries, found, touching, strict=True))


def _convert_slices(
    job: _Job,
    labels: Stack,
    order: int,
    n: int,
    options: CocoOptions,
    collect: Callable[[list[Converted]], None],
) -> None:
    """Convert every slice in batches on worker threads, handing results to ``collect`` in
    slice order (at most ``workers`` batches in flight). Every slice is validated (and
    linked into particles), also those in split gaps. A batch waits for the one before
    only to link its first slice: batches start in order, so that one is running or done.
    """
    plane = math.prod(s for k, s in enumerate(labels.shape) if k != order)
    workers = options.workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future] = deque()
        before: Future | None = None
        try:
            for indices in batches(range(n), max(1, _BATCH_PIXELS // plane)):
                before = pool.submit(_convert_batch, job, indices, before)
                pending.append(before)
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


_NEXT_ITEM = b'},{"id":'  # between two annotations; never inside one (RLE counts are 0-o)


def _with_particle_ids(items: bytes, ids: list[int]) -> bytes:
    """:func:`_json_items` of k annotations with ``"particle_id"`` added last to each."""
    pieces = items[:-1].split(_NEXT_ITEM)
    return (
        _NEXT_ITEM.join(b'%b,"particle_id":%d' % piece for piece in zip(pieces, ids, strict=True))
        + b"}"
    )


def _split(
    labels: Stack, n: int, phases: PhaseMap, options: CocoOptions
) -> tuple[dict[str, list[int]], int | None]:
    """The slice indices of each annotation file (``{"annotations": every slice}`` without
    a split) of ``labels``' ``n`` slices along ``options.axis``, and the block shuffle that
    dealt them (None when none did)."""
    if options.members is not None:
        return {name: list(indices) for name, indices in options.members.items()}, None
    if options.split is None:
        return {"annotations": list(range(n))}, None
    seed = options.seed
    if seed is None:
        counts = stack_class_counts(labels, phases, options.axis)
        seed = balanced_seed(counts, options.split, gap=options.gap)
    return split_slices(n, options.split, gap=options.gap, seed=seed), seed


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
    members, seed = _split(labels, n, phases, options)
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
        # slice; their linker nodes set aside until every slice is linked): memory stays
        # flat however many instances the volume holds
        spools = {name: Path(spool_dir) / f"{name}.jsonl" for name in members}
        nodes: dict[str, list[np.ndarray]] = {name: [] for name in members}
        next_id, removed = 1, 0
        with contextlib.ExitStack() as stack:
            spooled = {n: stack.enter_context(p.open("wb")) for n, p in spools.items()}

            def collect(results: list[Converted]) -> None:
                nonlocal removed, next_id
                for i, image, found, touching in results:
                    linked = linker.add(found.labels, touching) if linker is not None else None
                    if image is not None and found.rles:
                        split = split_of[i]
                        anns = instance_annotations(found, i + 1, next_id)
                        spooled[split].write(_json_items(anns) + b"\n")
                        if linked is not None:
                            nodes[split].append(linked)
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
            "labels": labels.source,  # absolute, with its dataset / layout, or a URL
            "gray": gray.source if gray is not None else None,
            "phases": str(phases),
            "axis": options.axis,
            "connectivity": options.connectivity,
            "min_area": options.min_area,
            "voxel_size_um": labels.voxel_size,
            "images_dir": "images" if gray is not None else None,
        }
        files = {name: f"{name}.json" for name in members}
        for name in members:
            ids, first = None, 0
            if particle_of_node is not None:
                node_ids = np.concatenate(nodes[name]) if nodes[name] else np.zeros(0, np.int64)
                ids = particle_of_node[node_ids]
            with (tmp / files[name]).open("wb") as out, spools[name].open("rb") as lines:
                out.write(
                    b'{"info":%b,"images":%b,"annotations":[' % (_json(info), _json(images[name]))
                )
                for k, line in enumerate(lines):
                    items = line[:-1]
                    if ids is not None:
                        count = items.count(_NEXT_ITEM) + 1
                        items = _with_particle_ids(items, ids[first : first + count].tolist())
                        first += count
                    out.write(b",%b" % items if k else items)
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
        categories=[phases.name(v) for v in values],
        split_seed=seed,
        seconds=0.0,
    )
